"""Every key of configs/default.yaml is read by the code (a key read nowhere is a promise not kept).

A key ``section.leaf`` counts as read when the package's source (outside the config loader)
contains ``section.leaf`` as an attribute or subscript chain (``cfg.data.splits``,
``cfg["data"]["splits"]``) or as a dotted string (the explanation registry's
``"explain.ig_steps"``), or reads ``leaf`` from a section alias (``ex["ig_steps"]``,
``rc.cam_layer``, ``aug["rotation"]``) by attribute, subscript or ``.get``. A keyword argument or a
dict literal of that name does not count: ``ece_bins=ECE_BINS`` passes a constant, it reads nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from covidxray import paths

SRC = Path(__file__).resolve().parents[1] / "src" / "covidxray"


def _leaves(d: dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in d.items():
        out += _leaves(v, (*prefix, k)) if isinstance(v, dict) else [(*prefix, k)]
    return out


def _chain(node: ast.AST) -> list[str]:
    """``a.b["c"].d`` -> ["a", "b", "c", "d"] (names and string subscripts only)."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                isinstance(node.slice.value, str):
            parts.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return parts[::-1]


def reads(src: Path = SRC) -> tuple[set[tuple[str, str]], set[str], set[str]]:
    """(consecutive name pairs of access chains, names read by attribute/subscript/get, dotted strings)."""
    pairs, names, dotted = set(), set(), set()
    for path in src.rglob("*.py"):
        if path.name == "config.py" and path.parent == src:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.IfExp):  # ex["a" if c else "b"]
                names |= {v.value for v in (node.slice.body, node.slice.orelse) if isinstance(v, ast.Constant)}
            if isinstance(node, ast.Attribute | ast.Subscript):
                chain = _chain(node)
                pairs |= set(zip(chain, chain[1:], strict=False))
                names |= set(chain[1:])
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
                pairs |= {(p, node.args[0].value) for p in _chain(node.func.value)[-1:]}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                    and " " not in node.value:
                dotted.add(node.value)
    return pairs, names, dotted


def unread_keys(config: Path = paths.DEFAULT_CONFIG, src: Path = SRC) -> list[str]:
    """Dotted keys of ``config`` that the package never reads."""
    pairs, names, dotted = reads(src)
    out = []
    for key in _leaves(yaml.safe_load(config.read_text())):
        full = ".".join(key)
        if len(key) >= 2 and (tuple(key[-2:]) in pairs or any(d == full or d.endswith("." + full) for d in dotted)):
            continue
        if key[-1] in names:
            continue
        out.append(full)
    return out


def test_every_default_key_is_read():
    assert unread_keys() == [], "keys of configs/default.yaml that no code reads"


def test_a_key_read_nowhere_is_caught(tmp_path):
    text = paths.DEFAULT_CONFIG.read_text().replace("evaluate:\n", "evaluate:\n  unread_knob_xyz: 3\n", 1)
    (tmp_path / "default.yaml").write_text(text)
    assert unread_keys(tmp_path / "default.yaml") == ["evaluate.unread_knob_xyz"]
