"""The package's architecture, checked: no import cycles, no private names across modules, small modules.

Edges are every ``import covidxray...`` / ``from covidxray... import`` in a module, at top level and
inside functions alike (a lazy import still ties two modules together).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "covidxray"
MAX_LINES, SOFT_LINES = 400, 300
#: Modules moved whole (their content is edited elsewhere); they keep their size until they are split.
SIZE_EXEMPT: set[str] = set()


def _name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, [imported names])`` of every covidxray import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("covidxray")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("covidxray") and not node.level:
            out.append((node.module, [a.name for a in node.names]))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the covidxray modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for target, names in _imports(path):
            subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
            edges[mod] |= subs or ({target} if target in MODULES else set())
            if subs and len(subs) < len(names) and target in MODULES:
                edges[mod].add(target)
        edges[mod].discard(mod)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by depth-first search (one per back edge)."""
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_import_graph_has_no_cycles():
    assert cycles(graph()) == []


def test_cycle_detection_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_private_names_across_modules():
    bad = [f"{mod}: from {target} import {n}" for mod, path in MODULES.items() for target, names in _imports(path)
           for n in names if n.startswith("_") and target != mod]
    assert bad == []


def test_module_sizes():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    over = {m: n for m, n in sizes.items() if n > MAX_LINES and m not in SIZE_EXEMPT}
    assert over == {}, f"modules over {MAX_LINES} lines"
    soft = {m: n for m, n in sizes.items() if n > SOFT_LINES}
    print(f"modules over {SOFT_LINES} lines: {soft}")


def test_stage_packages_import_light():
    """Importing a stage package (its __init__) or the explanation registry loads no TensorFlow."""
    code = ("import sys, covidxray.data, covidxray.training, covidxray.evaluation, covidxray.explain, "
            "covidxray.robustness, covidxray.explain.registry; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert out.stdout.strip() == "False"
