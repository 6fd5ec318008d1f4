"""Configuration: ``configs/default.yaml`` is the schema, overlays and ``--set`` change values.

A key that the default does not define is an error (with a suggestion), and so is a value of
the wrong type, so a typo never silently falls back to a default. YAML 1.1 reads ``1e-3`` (no
dot) as a string; where the default is a float such a string is read as the number, in files and
in ``--set``. Values are range-checked after merging (:data:`RANGES`, unique classes).
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from covidxray import paths
from covidxray.atomic import write_text
from covidxray.errors import ConfigError

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

#: (low, high, low inclusive, high inclusive) per dotted key; None = unbounded.
RANGES = {
    "data.val": (0.0, 1.0, True, False),
    "data.test": (0.0, 1.0, True, False),
    "data.near_dup_threshold": (0, None, True, True),
    "data.min_size": (1, None, True, True),
    "data.workers": (1, None, True, True),
    "data.clahe_clip": (0.0, None, False, True),
    "data.clahe_tile": (1, 64, True, True),
    "data.lung_margin": (0.0, 0.5, True, True),
    "phantoms.n_per_class": (0, None, True, True),
    "phantoms.size": (64, 1024, True, True),
    "phantoms.difficulty": (0.0, None, False, True),
    "phantoms.confounder_strength": (0.0, 1.0, True, True),
    "model.image_size": (32, None, True, True),
    "train.batch_size": (1, None, True, True),
    "train.epochs": (0, None, True, True),
    "train.lr": (0.0, None, False, True),
    "train.patience": (0, None, True, True),
    "train.label_smoothing": (0.0, 1.0, True, False),
    "train.attribution_prior": (0.0, None, True, True),
    "evaluate.n_boot": (0, None, True, True),
    "evaluate.target_sensitivity": (0.0, 1.0, False, True),
}


#: Allowed values of string keys (the shortcut counter-measures of covidxray.data.inputs).
CHOICES = {
    "data.normalize": ("none", "equalize", "clahe"),
    "data.lung_field": ("none", "crop", "mask"),
}


class Config(dict):
    """A nested dict with attribute access (``cfg.train.batch_size``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(f"config has no key '{name}'") from err

    def to_dict(self) -> dict:
        """Return a plain nested dict (for YAML/JSON)."""
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}

    def dump(self, path: str | Path, dataset: str | Path | None = None) -> None:
        """Write the resolved config as YAML (atomically); ``dataset`` replaces ``data.dataset`` in it."""
        d = self.to_dict()
        if dataset is not None and isinstance(d.get("data"), dict):
            d["data"]["dataset"] = str(dataset)
        write_text(path, yaml.safe_dump(d, sort_keys=False))


def _wrap(d: Mapping) -> Config:
    return Config({k: _wrap(v) if isinstance(v, Mapping) else v for k, v in d.items()})


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _check_type(key: str, default: Any, value: Any, origin: str) -> Any:
    if default is None or value is None and isinstance(default, str):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1: 1e-3 is a string
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list | tuple)
        value = list(value) if ok else value
        if ok and default and all(isinstance(d, float) for d in default):  # [1e-3, 2e-3]: numbers too
            value = [float(v) if isinstance(v, str) and _NUMBER.fullmatch(v.strip()) else v for v in value]
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{origin}: '{key}' must be {type(default).__name__} (like the default {default!r}), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _check_ranges(cfg: Mapping) -> None:
    """Refuse values outside :data:`RANGES`, NaN floats, and repeated classes or none."""
    for key, (lo, hi, lo_in, hi_in) in RANGES.items():
        section, name = key.split(".")
        value = cfg.get(section, {}).get(name)
        if value is None:
            continue
        bad = isinstance(value, float) and math.isnan(value)
        bad = bad or (lo is not None and (value < lo if lo_in else value <= lo))
        bad = bad or (hi is not None and (value > hi if hi_in else value >= hi))
        if bad:
            rng = (f"{'[' if lo_in else '('}{lo if lo is not None else '-inf'}, "
                   f"{hi if hi is not None else 'inf'}{']' if hi_in else ')'}")
            raise ConfigError(f"'{key}' must be in {rng}, got {value!r}")
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = cfg.get(section, {}).get(name)
        if value is not None and value not in choices:
            raise ConfigError(f"'{key}' must be one of {' | '.join(choices)}, got {value!r}")
    data = cfg.get("data", {})
    if data.get("val", 0) + data.get("test", 0) >= 1:
        raise ConfigError(f"data.val + data.test must be < 1 so train is not empty, got "
                          f"{data.get('val')} + {data.get('test')}")
    classes = [str(c) for c in cfg.get("classes", [])]
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ConfigError(f"'classes' names {', '.join(repeated)} more than once: {classes}")
    if not classes:
        raise ConfigError("'classes' is empty")


def _merge(base: dict, update: Mapping, origin: str, prefix: str = "") -> None:
    for key, value in update.items():
        full = f"{prefix}{key}"
        if key not in base:
            hint = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            extra = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{origin}: unknown config key '{full}'{extra}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: '{full}' is a section; give its keys, not {value!r}")
            _merge(base[key], value, origin, f"{full}.")
        else:
            base[key] = _check_type(full, base[key], value, origin)


def parse_override(item: str) -> dict:
    """Turn ``train.batch_size=16`` into ``{"train": {"batch_size": 16}}`` (value parsed as YAML).

    Args:
        item: ``dotted.key=value``.

    Returns:
        A nested dict.
    """
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: dict = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(
    overlays: Iterable[str | Path] = (), overrides: Iterable[str] = (), base: str | Path | None = None
) -> Config:
    """Load the default config, apply overlay files in order, then ``key=value`` overrides.

    Args:
        overlays: Config names (``smoke``) or YAML paths; each may set any subset of keys.
        overrides: ``dotted.key=value`` strings (``--set`` on the CLI).
        base: The schema/default file (``configs/default.yaml`` when None).

    Returns:
        The resolved, validated :class:`Config`.

    Raises:
        ConfigError: Unknown key, wrong type (naming the key and where it came from), or a value out
            of range.
    """
    base_path = Path(base) if base else paths.DEFAULT_CONFIG
    cfg = _read_yaml(base_path)
    for overlay in overlays:
        path = paths.config_file(overlay)
        if path.resolve() == base_path.resolve():
            continue
        _merge(cfg, _read_yaml(path), str(path))
    for item in overrides:
        _merge(cfg, parse_override(item), f"--set {item}")
    _check_ranges(cfg)
    from covidxray.data.acquisition import check as acquisition_problems
    from covidxray.explain.registry import config_problems  # method names come from the registry

    if problems := config_problems(cfg) + acquisition_problems(cfg.get("augment", {})):
        raise ConfigError(f"config: {problems[0]}")
    return _wrap(cfg)
