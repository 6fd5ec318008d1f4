"""Configuration: ``configs/default.yaml`` is the schema, overlays and ``--set`` change values.

A key that the default does not define is an error (with a suggestion), and so is a value of
the wrong type, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from covidxray import paths
from covidxray.errors import CovidxrayError


class ConfigError(CovidxrayError, ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


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

    def dump(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


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
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list | tuple)
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{origin}: '{key}' must be {type(default).__name__} (like the default {default!r}), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


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
        ConfigError: Unknown key or wrong type, naming the key and where it came from.
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
    from covidxray.explain.registry import config_problems  # method names come from the registry

    if problems := config_problems(cfg):
        raise ConfigError(f"config: {problems[0]}")
    return _wrap(cfg)
