"""Layers import downwards only, no module imports itself back through a cycle, and the lab is
built on the library's public API.

Every `import` / `from ... import` counts, including those inside functions (a lazy import is
still a dependency). Library layers (src/modalign), bottom to top:
  0 base      modalign (package), errors, registry, atomic
  1 math/data metrics, data
  2 outputs   report (reads metrics results), assets (the shipped demo model and eval set)
  3 methods   one home per method: connectors, MoCa, LoRA, objectives, SEA, contrastive, VLSA
  4 models    adapters, surgery (connector swap, extensions, assembly), collators, loading
  5 measure   model -> accumulators -> MIRResult
  6 users     train, testing
  7 evidence  does a measure predict post-fine-tuning scores (validate)
  8 cli
  9 modalign.__main__ (python -m modalign)
The lab (lab/src/modalign_lab) has its own layers: world, towers, probes, pipeline, studies, cli.
A module may import its own package and lower layers, never a higher layer nor a sibling package
of its own layer (the base modules may use each other).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
LAB_SRC = ROOT / "lab" / "src"

LAYERS = {
    "modalign": 0,
    "modalign.errors": 0,
    "modalign.registry": 0,
    "modalign.atomic": 0,
    "modalign.metrics": 1,
    "modalign.data": 1,
    "modalign.report": 2,
    "modalign.assets": 2,
    "modalign.methods": 3,
    "modalign.models": 4,
    "modalign.measure": 5,
    "modalign.train": 6,
    "modalign.testing": 6,
    "modalign.evidence": 7,
    "modalign.cli": 8,
    "modalign.__main__": 9,  # `python -m modalign`: runs the CLI
    "modalign.api": 9,  # `modalign.mir(...)`, `modalign.train_model(...)`: the CLI's runs as calls
    # the lab, on top of the library (which it sees only through its public API)
    "modalign_lab": 10,  # the package and its light command registration
    "modalign_lab.command": 10,
    "modalign_lab.world": 11,
    "modalign_lab.towers": 12,
    "modalign_lab.probes": 13,
    "modalign_lab.pipeline": 14,
    "modalign_lab.studies": 15,
    "modalign_lab.cli": 16,
}


def _modules(src: Path | None = None, package: str = "modalign") -> dict[str, Path]:
    src = SRC if src is None else src
    mods = {}
    for path in (src / package).rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _all_modules() -> dict[str, Path]:
    lab = _modules(LAB_SRC, "modalign_lab") if (LAB_SRC / "modalign_lab").is_dir() else {}
    return {**_modules(), **lab}


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
    mods = _all_modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    for name in _all_modules():
        _unit(name)


def test_layers_import_downwards_only() -> None:
    bad = []
    for name, deps in _graph().items():
        unit = _unit(name)
        for dep in deps:
            dep_unit = _unit(dep)
            if dep_unit == unit or dep_unit in ("modalign", "modalign_lab"):
                continue
            base = LAYERS[unit] in (0, 10)  # the base modules of each package: one unit
            same_layer = LAYERS[dep_unit] == LAYERS[unit] and not base
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


def _public_names(module: str) -> set[str] | None:
    """The `__all__` of a library package (its `__init__.py`) or of a top-level module of the
    library (`modalign.errors`, `modalign.atomic` ...), read statically; None for any other."""
    path = _modules().get(module)
    top_level = module.count(".") == 1
    if path is None or not (path.name == "__init__.py" or top_level):
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def _private_uses(lab_modules: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in lab_modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level:
                target = node.module or ""
                if target.split(".")[0] != "modalign":
                    continue
                public = _public_names(target)
                for alias in node.names:
                    if public is None or alias.name not in public:
                        bad.append(f"{name}: from {target} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "modalign" and _public_names(alias.name) is None:
                        bad.append(f"{name}: import {alias.name}")
    return bad


def test_the_lab_uses_only_the_library_public_api() -> None:
    """The lab imports names that a library package lists in `__all__`, nothing else: where it
    needs more, the library's public API has a gap to fill."""
    lab = {k: v for k, v in _all_modules().items() if k.split(".")[0] == "modalign_lab"}
    assert lab, "lab/src/modalign_lab not found"
    bad = _private_uses(lab)
    assert not bad, "\n".join(sorted(bad))


def test_the_public_api_check_can_fail(tmp_path) -> None:
    """An import of a private module, or of a name a package does not export, is caught."""
    pkg = tmp_path / "modalign_lab"
    pkg.mkdir()
    (pkg / "x.py").write_text(
        "from modalign.metrics.frechet import _psd_factor\n"
        "from modalign.metrics import MIRAccumulator, not_exported\n"
        "import modalign.metrics.frechet\n"
    )
    bad = _private_uses({"modalign_lab.x": pkg / "x.py"})
    assert bad == [
        "modalign_lab.x: from modalign.metrics.frechet import _psd_factor",
        "modalign_lab.x: from modalign.metrics import not_exported",
        "modalign_lab.x: import modalign.metrics.frechet",
    ]


def test_the_package_names_load_from_modules_that_export_them() -> None:
    """`modalign.<name>` loads lazily from its home module (no import at `import modalign`);
    every home is a library module that lists the name in its `__all__`."""
    import modalign

    for name, home in modalign._HOMES.items():
        public = _public_names(home)
        if public is None:  # a module, not a package: read its __all__ the same way
            path = _modules()[home]
            public = next(set(ast.literal_eval(n.value)) for n in ast.parse(path.read_text()).body
                          if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                               for t in n.targets))  # fmt: skip
        assert name in public, f"{home} does not export {name}"
