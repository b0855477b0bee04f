"""The package's structure: no import circle between modules (lazy imports included), and compress/ below
modifications/: tensor math on plain arguments, reading no spec, patient or undo log."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "doctor").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def imports(path: Path) -> set[str]:
    """Every doctor module `path` imports, at module level or inside functions (`from pkg import submodule`
    counts as the submodule)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {f"{node.module}.{a.name}" for a in node.names}
            out |= (names & MODULES.keys()) or {node.module}
            if not names <= MODULES.keys():
                out.add(node.module)
    return {m for m in out if m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    graph = {name: imports(path) - {name} for name, path in MODULES.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


ABOVE_COMPRESS = ("doctor.modifications", "doctor.spec", "doctor.patient", "doctor.examination.checkup", "doctor.examination.runner",
                  "doctor.report", "doctor.cli", "doctor.predict", "doctor.diagnose")
NOT_YET_BELOW: set[str] = set()  # compress modules still reading specs (none; kept so a regression is named)


def test_compress_imports_nothing_above_it():
    upward = {
        name: sorted(m for m in imports(path) if m.startswith(ABOVE_COMPRESS))
        for name, path in MODULES.items() if name.startswith("doctor.compress.") and name not in NOT_YET_BELOW
    }
    assert {name: found for name, found in upward.items() if found} == {}
    assert all(imports(MODULES[name]) & {m for m in MODULES if m.startswith(ABOVE_COMPRESS)} for name in NOT_YET_BELOW)
