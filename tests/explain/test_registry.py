"""The method registry: stable names, flags that match the config, options read from config keys."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from covidxray.config import ConfigError, load_config
from covidxray.explain import registry

NAMES = ("activation", "gradient", "smoothgrad", "integrated_gradients", "gradcam", "gradcam++", "scorecam",
         "occlusion")


def test_names_and_order_are_stable():
    # the shipped names keep their order; a method added in a family module only adds a name
    assert [n for n in registry.NAMES if n in NAMES] == list(NAMES)
    assert len(set(registry.NAMES)) == len(registry.NAMES)


def test_flags_match_the_default_config():
    cfg = load_config([])
    assert registry.expensive() == list(cfg.explain.expensive)
    assert [m for m in NAMES if registry.METHODS[m].needs_layer] == ["activation", "gradcam", "gradcam++", "scorecam"]
    assert all(registry.METHODS[m].summary for m in NAMES)


def test_method_options_come_from_the_config_keys():
    cfg = load_config([], ["explain.ig_steps=7", "explain.smoothgrad_samples=3", "seed=5"])
    opts = registry.method_options(cfg, layer="mixed7")
    assert opts["integrated_gradients"] == {"layer": "mixed7", "steps": 7}
    assert opts["smoothgrad"] == {"layer": "mixed7", "n_samples": 3, "seed": 5}
    assert opts["gradcam"] == {"layer": "mixed7"}


def test_unknown_method_names_in_the_config_are_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'explain.methods': unknown method 'gradcm' \(did you mean 'gradcam'\?\)"):
        load_config([], ["explain.methods=[gradcam, gradcm]"])
    with pytest.raises(ConfigError, match="robustness.cam_method"):
        load_config([], ["robustness.cam_method=gradcamm"])


def test_cli_help_lists_every_method():
    from covidxray.cli import app

    for command in ("explain", "interpret"):
        out = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert all(name in out for name in NAMES), command
