"""The generated modeling file: joined from modalign's own source, importable where modalign is
not, and the joining refuses what would make it wrong (a name defined twice, an import from a
module left out, a package other than torch / transformers)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modalign.methods.connectors import CONNECTORS
from modalign.models.export.remote_code import (
    ALLOWED_IMPORTS,
    MODELING_FILE,
    MODULES,
    CodegenError,
    amalgamate,
    modeling_source,
)

ISOLATED = Path(__file__).parents[2] / "src" / "modalign" / "testing" / "isolated_load.py"


def _imported_packages(source: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_generated_file_imports_only_the_standard_library_torch_and_transformers():
    source = modeling_source()
    packages = _imported_packages(source)
    assert "modalign" not in packages and "peft" not in packages
    assert packages - set(sys.stdlib_module_names) <= ALLOWED_IMPORTS
    assert {"torch", "transformers"} <= packages
    assert source == modeling_source()  # one text per modalign version
    for module in MODULES:  # the header names every joined module
        assert f"#   {module}\n" in source


def test_generated_file_has_no_undefined_or_redefined_names(tmp_path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    path = tmp_path / MODELING_FILE
    path.write_text(modeling_source())
    done = subprocess.run(
        [ruff, "check", "--isolated", "--no-cache", "--select", "F821,F811,F401,F822", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_file_imports_without_modalign(tmp_path):
    """Executed in a process where importing modalign fails: every class and connector is there."""
    path = tmp_path / MODELING_FILE
    path.write_text(modeling_source())
    script = f"""
import importlib.util, json, sys
sys.argv = ["x"]
spec = importlib.util.spec_from_file_location("isolated_load", {str(ISOLATED)!r})
iso = importlib.util.module_from_spec(spec); spec.loader.exec_module(iso)
iso.block_imports()
spec = importlib.util.spec_from_file_location("modeling_modalign_llava", {str(path)!r})
mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
names = ["ConnectorLlavaConfig", "ModalignLlavaForConditionalGeneration",
         "ConnectorLlavaProcessor", "MoCa", "PlainLoraLinear"]
print(json.dumps({{"connectors": sorted(mod.CONNECTORS), "classes": [hasattr(mod, n) for n in names],
                  "modalign": sorted(m for m in sys.modules if m.startswith("modalign"))}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["connectors"] == sorted(CONNECTORS)
    assert all(seen["classes"]) and seen["modalign"] == []


def test_the_isolation_is_real():
    """The blocking used by every isolated check makes `import modalign` fail."""
    script = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("isolated_load", {str(ISOLATED)!r})
iso = importlib.util.module_from_spec(spec); spec.loader.exec_module(iso)
iso.block_imports()
try:
    import modalign.models
except ImportError as exc:
    print("blocked:", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0 and "blocked: modalign" in done.stdout, done.stderr


# --------------------------------------------------------------------------- the joining


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "modalign"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = '"""doc"""\nfrom __future__ import annotations\n\nimport math\n\n__all__ = ["unit"]\n\n'


def test_joining_keeps_what_is_used_in_order_and_rewrites_imports(tmp_path):
    root = _package(tmp_path, {
        "base.py": BASE + "# the unit\ndef unit() -> float:\n    return math.pi\n\n\n"
                   "def unused() -> int:\n    return 1\n",
        "top.py": '"""doc"""\nfrom modalign.base import unit\nfrom modalign.base import unit as u\n\n'
                  "REG = {}\n\n\ndef use() -> float:\n    from modalign.base import unit as inner\n"
                  "\n    return unit() + u() + inner()\n\n\nREG['x'] = use\n",
    })  # fmt: skip
    source = amalgamate(["modalign.base", "modalign.top"], ["modalign.top"], root=root)
    assert "def unused" not in source and "# the unit\ndef unit" in source
    assert "\nu = unit\n" in source and "\n    inner = unit\n" in source
    assert "__all__" not in source and "from modalign" not in source
    namespace: dict = {}
    exec(compile(source, "joined", "exec"), namespace)
    assert namespace["REG"]["x"]() == pytest.approx(3 * 3.141592653589793)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"a.py": "X = 1\n", "b.py": "X = 2\n"},
            "X is defined both in modalign.a and in modalign.b",
        ),
        ({"a.py": "from modalign.missing import Y\nZ = Y\n"}, "not among the joined modules"),
        ({"a.py": "import numpy\nZ = numpy.pi\n"}, "would import 'numpy'"),
        ({"a.py": "def len(x):\n    return 0\n", "b.py": "N = len([1])\n"}, "builtin"),
        ({"a.py": "import modalign.b\n"}, "not joinable"),
    ],
)
def test_joining_refuses_what_would_be_wrong(tmp_path, files, message):
    root = _package(tmp_path, files)
    modules = [f"modalign.{name.removesuffix('.py')}" for name in files]
    with pytest.raises(CodegenError, match=message):
        amalgamate(modules, modules, root=root)
