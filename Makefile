# covidxray: `make demo` runs the pipeline on phantoms, `make test` runs the test suite.
# Both create .venv (Python 3.10+) with the pinned requirements when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := data/phantoms
DEMO_RUN := models/demo
# the cxr-dev run whose plots the README shows (covidxray train --config cxr-dev-128 --out $(CXR_RUN))
CXR_RUN ?= models/cxr-dev-128
# the epoch-recipe run the external validation is measured on (README: External validation)
EXT_RUN ?= models/cxr-dev-128-e40
RESULTS := figures/results
# two pytest workers (pytest-xdist); --dist loadfile keeps each test file on one worker, in order
PYTEST_WORKERS ?= 2
# apt-get as root, else through sudo (the viewer's browser test needs Debian's chromium + chromium-driver)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help venv browser demo test test-fast lint benchmarks results-figures clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP) ## Create/refresh the virtual environment

demo: $(STAMP) ## The whole pipeline on the phantom default: data, training, evaluation, explanations, robustness
	$(BIN)/covidxray phantoms $(DEMO_DATA) --n-per-class 300 --seed 42
	$(BIN)/covidxray index $(DEMO_DATA) -o $(DEMO_DATA)/index.csv
	$(BIN)/covidxray split $(DEMO_DATA)/index.csv -o $(DEMO_DATA)/splits.csv --seed 42
	rm -rf $(DEMO_RUN)
	$(BIN)/covidxray train --config demo --data $(DEMO_DATA)/splits.csv --out $(DEMO_RUN)
	$(BIN)/covidxray evaluate $(DEMO_RUN)
	$(BIN)/covidxray interpret $(DEMO_RUN)
	$(BIN)/covidxray robustness $(DEMO_RUN)

browser: ## Install headless Chromium + chromedriver (Debian packages) when missing: the viewer's browser test
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; } || \
	echo "warning: could not install chromium + chromium-driver; tests/viewer/test_browser.py will fail"

# the suite's run folders peak at about 4 GB in TMPDIR (benchmarks/suite_disk.py): say so before a full disk does
DISK_CHECK := import shutil, tempfile; t = tempfile.gettempdir(); f = shutil.disk_usage(t).free / 1e9; \
	f < 5 and print(f"warning: {f:.1f} GB free in {t}; the test suite needs about 4 GB there (set TMPDIR)")

test: $(STAMP) browser ## Run the whole test suite (unit, data, model, notebooks)
	@$(BIN)/python -c '$(DISK_CHECK)'
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test-fast: $(STAMP) browser ## Skip the slow tests
	@$(BIN)/python -c '$(DISK_CHECK)'
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

lint: $(STAMP) ## ruff
	$(BIN)/ruff check src tests benchmarks

benchmarks: $(STAMP) ## Run the benchmark scripts (JSON in benchmarks/results/)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

results-figures: ## Copy the README's plots from the run folders (after the README's commands) to figures/results
	mkdir -p $(RESULTS)
	cp $(CXR_RUN)/eval/test/confusion_normalized.png $(RESULTS)/cxr-dev_confusion.png
	cp $(CXR_RUN)/eval/test/reliability.png $(RESULTS)/cxr-dev_reliability.png
	cp $(CXR_RUN)/robustness/robustness_accuracy.png $(RESULTS)/cxr-dev_robustness_accuracy.png
	cp $(CXR_RUN)/shortcut/probe.png $(RESULTS)/cxr-dev_outside_lung_probe.png
	cp models/shortcut/shortcut_summary.png $(RESULTS)/phantom_shortcut_summary.png
	cp $(DEMO_RUN)/interpret/test/localisation.png $(RESULTS)/demo_localisation.png
	cp $(DEMO_RUN)/interpret/test/randomization.png $(RESULTS)/demo_randomization.png
	cp $(EXT_RUN)/eval/cxr-external/external_groups.png $(RESULTS)/cxr-dev_external_groups.png

clean: ## Remove generated data, runs, figures and caches (not .venv)
	rm -rf data/phantoms data/cache models/* $(filter-out figures/README.md $(RESULTS),$(wildcard figures/*)) benchmarks/results .pytest_cache
