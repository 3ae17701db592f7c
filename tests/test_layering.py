"""Layers import downwards only, and no module imports itself back through a cycle.

Every `import` / `from ... import` in src/modalign counts, including those inside functions (a
lazy import is still a dependency). Layers, bottom to top:
  0 base      modalign (package), errors, registry, atomic
  1 math/data metrics, data
  2 pure      methods (nn.Modules: connectors, MoCa, objectives), report (reads metrics results)
  3 models    adapters, loading, checkpoints
  4 runner    models -> accumulators
  5 users     train, diagnostics, testing
  6 evidence  does a measure predict post-fine-tuning scores (validate: runner + diagnostics)
  7 lab       the miniature world
  8 cli
  9 modalign.__main__ (python -m modalign)
A module may import its own package and lower layers, never a higher layer nor a sibling package
of its own layer (the base modules may use each other).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = {
    "modalign": 0,
    "modalign.errors": 0,
    "modalign.registry": 0,
    "modalign.atomic": 0,
    "modalign.metrics": 1,
    "modalign.data": 1,
    "modalign.methods": 2,
    "modalign.report": 2,
    "modalign.models": 3,
    "modalign.runner": 4,
    "modalign.train": 5,
    "modalign.diagnostics": 5,
    "modalign.testing": 5,
    "modalign.evidence": 6,
    "modalign.lab": 7,
    "modalign.cli": 8,
    "modalign.__main__": 9,  # `python -m modalign`: runs the CLI
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "modalign").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _unit(module: str) -> str:
    """The layer unit a module belongs to: its longest prefix listed in LAYERS."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return ".".join(parts[:i])
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """modalign modules imported anywhere in the file (resolved to files where possible)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.add(full if full in mods else target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in mods and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    for name in _modules():
        _unit(name)


def test_layers_import_downwards_only() -> None:
    bad = []
    for name, deps in _graph().items():
        unit = _unit(name)
        for dep in deps:
            dep_unit = _unit(dep)
            if dep_unit == unit or dep_unit == "modalign":
                continue
            same_layer = LAYERS[dep_unit] == LAYERS[unit] and LAYERS[unit] > 0  # base: one unit
            if LAYERS[dep_unit] > LAYERS[unit] or same_layer:
                bad.append(
                    f"{name} (layer {LAYERS[unit]}) imports {dep} (layer {LAYERS[dep_unit]})"
                )
    assert not bad, "\n".join(sorted(bad))


def test_metrics_and_data_import_only_the_base() -> None:
    for name, deps in _graph().items():
        if _unit(name) in ("modalign.metrics", "modalign.data"):
            above = {d for d in deps if LAYERS[_unit(d)] > 0 and _unit(d) != _unit(name)}
            assert not above, f"{name} imports {sorted(above)}"


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join([*stack[stack.index(v) :], v]))
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch) -> None:
    """The rules above can fail: a fake tree with both faults is caught."""
    pkg = tmp_path / "modalign"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics" / "__init__.py").write_text("from modalign.cli import x\n")
    (pkg / "cli" / "__init__.py").write_text("import modalign.metrics\nx = 1\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["SRC"]), "SRC", tmp_path)
    graph = _graph()
    assert graph["modalign.metrics"] == {"modalign.cli"}
    assert graph["modalign.cli"] == {"modalign.metrics"}
