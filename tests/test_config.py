"""Config: unknown keys and wrong types are errors naming the key; overlays and --set apply in order."""

from __future__ import annotations

import pytest

from covidxray import paths
from covidxray.config import ConfigError, load_config, parse_override


def test_default_loads_with_attribute_access():
    cfg = load_config()
    assert cfg.model.backbone == "inceptionv3"
    assert cfg.classes == ["COVID-19", "Normal", "Viral Pneumonia"]
    assert isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("name", sorted(p.stem for p in paths.CONFIGS.glob("*.yaml")))
def test_every_shipped_config_validates(name):
    cfg = load_config([name])
    assert cfg.model.image_size >= 75


def test_unknown_key_is_an_error_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.batchsize' \(did you mean 'train.batch_size'\?\)"):
        load_config(overrides=["train.batchsize=4"])


def test_unknown_key_in_overlay_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model:\n  imagesize: 128\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'model.imagesize'"):
        load_config([f])


@pytest.mark.parametrize(
    "override, message",
    [("train.batch_size=abc", "'train.batch_size' must be int"),
     ("train.class_weights=3", "'train.class_weights' must be bool"),
     ("classes=COVID-19", "'classes' must be list"),
     ("model=5", "'model' is a section")],
)
def test_wrong_types_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_overlays_then_overrides_apply_in_order(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("train:\n  batch_size: 4\n  lr: 1\n")
    cfg = load_config(["smoke", f], ["train.batch_size=2"])
    assert cfg.train.batch_size == 2  # --set wins over both files
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int accepted for float, coerced
    assert cfg.model.image_size == 75  # from smoke


def test_parse_override_yaml_values():
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    assert parse_override("x=none") == {"x": "none"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("novalue")


def test_dump_roundtrip(tmp_path):
    cfg = load_config(["smoke"], ["seed=3"])
    cfg.dump(tmp_path / "c.yaml")
    again = load_config([tmp_path / "c.yaml"])
    assert again.to_dict() == cfg.to_dict()


# --- issue 11 -------------------------------------------------------------------------------------


def test_scientific_notation_in_set_and_in_files(tmp_path):
    """YAML 1.1 reads 1e-3 as a string: a float key takes it as the number, in --set and in files."""
    assert load_config(overrides=["train.lr=1e-3"]).train.lr == 1e-3
    assert load_config(overrides=["train.stage2_lr=2E-5"]).train.stage2_lr == 2e-5
    f = tmp_path / "o.yaml"
    f.write_text("train:\n  lr: 3e-4\n  weight_decay: 1e-5\n")
    cfg = load_config([f])
    assert cfg.train.lr == 3e-4 and cfg.train.weight_decay == 1e-5
    assert load_config(overrides=["robustness.tta_degrees=[-5e0, 5e0]"]).robustness.tta_degrees == [-5.0, 5.0]
    with pytest.raises(ConfigError, match="'train.batch_size' must be int"):
        load_config(overrides=["train.batch_size=1e3"])  # only float keys take it
    with pytest.raises(ConfigError, match="'train.lr' must be float"):
        load_config(overrides=["train.lr=fast"])


@pytest.mark.parametrize("override, message", [
    ("data.val=2", r"'data.val' must be in \[0.0, 1.0\), got 2.0"),
    ("data.test=-0.1", "'data.test' must be in"),
    ("data.val=.nan", "got nan"),
    ("data.min_size=-5", r"'data.min_size' must be in \[1, inf\], got -5"),
    ("data.workers=0", "'data.workers' must be in"),
    ("classes=[Normal, COVID-19, Normal]", "'classes' names Normal more than once"),
    ("train.lr=0", r"'train.lr' must be in \(0.0, inf\]"),
    ("train.batch_size=0", "'train.batch_size' must be in"),
])
def test_values_are_range_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_val_plus_test_below_one():
    with pytest.raises(ConfigError, match="data.val \\+ data.test must be < 1"):
        load_config(overrides=["data.val=0.5", "data.test=0.5"])
