"""The self-contained modeling file of custom-code checkpoints, generated from modalign's source.

`modeling_source()` joins the modules that define a modalign_llava model (connectors, tiling,
MoCa, the LoRA layer, the config, model and processor classes) into one Python file whose only
imports are the standard library, torch, transformers and what transformers itself needs
(huggingface_hub, PIL), so `from_pretrained(folder, trust_remote_code=True)` runs it where
modalign is not installed. The file is rebuilt from the installed source whenever a model is
written: there is one definition of every class.

How modules are joined (`amalgamate`):
- modules go in the order given (each after the modules it imports), their top-level statements
  in source order, with the comment lines right above each one;
- `from modalign... import name` is dropped (the name is a global of the one file); `name as
  alias` becomes `alias = name`; inside a function the import line becomes that assignment or
  `pass`;
- the modules listed as `whole` keep every statement (registrations included); the others only
  the definitions that kept code uses, followed transitively (a name is looked up in the module
  that uses it, then through its modalign imports);
- any other import is hoisted to the top, once;
- two different definitions of one name, an import from a modalign module that is not joined,
  or a joined global that shadows a builtin another module uses, is an error naming both places.
"""

from __future__ import annotations

import ast
import builtins
import functools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ALLOWED_IMPORTS",
    "MODELING_FILE",
    "MODULES",
    "WHOLE",
    "CodegenError",
    "amalgamate",
    "modeling_source",
]

# The file written into a custom-code checkpoint, and the modules it is made of (dependency order).
MODELING_FILE = "modeling_modalign_llava.py"
MODULES: tuple[str, ...] = (
    "modalign.errors",
    "modalign.registry",
    "modalign.settings",
    "modalign.methods.extension_record",
    "modalign.methods.connectors.base",
    "modalign.methods.connectors.linear",
    "modalign.methods.connectors.mlp",
    "modalign.methods.connectors.pool",
    "modalign.methods.connectors.qformer",
    "modalign.methods.connectors.resampler",
    "modalign.methods.connectors.spec",
    "modalign.methods.connectors",
    "modalign.methods.vlsa.tiling",
    "modalign.methods.vlsa.sa_perceiver",
    "modalign.methods.vlsa.tiled",
    "modalign.methods.moca",
    "modalign.methods.lora",
    "modalign.methods.lora_layer",
    "modalign.models.surgery.connector_llava",
    "modalign.models.export.portable",
)
# Modules kept entire: every connector registers itself, and the model modules are the point.
WHOLE = frozenset(MODULES[4:]) - {"modalign.methods.lora"}  # only its names, not peft's injection
# Top-level packages the generated file may import (besides the standard library).
ALLOWED_IMPORTS = frozenset({"torch", "transformers", "huggingface_hub", "PIL"})
ROOT_PACKAGE = "modalign"


class CodegenError(RuntimeError):
    """The sources cannot be joined into one file (a bug in modalign, not a user error)."""


@dataclass
class _Piece:
    """One top-level statement (or one import binding) of a source module."""

    module: str
    order: int
    text: str
    defines: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)  # names, looked up from `module`
    links: set[tuple[str, str]] = field(default_factory=set)  # (module, name) of inner imports
    is_import: bool = False


@dataclass
class _Module:
    name: str
    pieces: list[_Piece] = field(default_factory=list)
    defs: dict[str, list[_Piece]] = field(default_factory=dict)  # a name may be re-bound
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, name)
    builtins_used: set[str] = field(default_factory=set)


def _package_folder() -> Path:
    import modalign

    return Path(modalign.__file__).parent


def _source_path(module: str, root: Path) -> Path:
    """The .py file of a modalign module under the package folder `root` (nothing is imported)."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise CodegenError(f"no source file for {module} (looked for {base}.py and {base}/__init__.py)")


def _is_ours(module: str | None) -> bool:
    return module is not None and (module == ROOT_PACKAGE or module.startswith(ROOT_PACKAGE + "."))


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _target_names(target: ast.expr) -> set[str]:
    """Names an assignment target binds (`x`, `x, y`; not `x[k]` or `x.a`, which use x)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(t) for t in target.elts))
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return set()


def _bound(node: ast.stmt) -> set[str]:
    """Names a top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return set().union(*(_target_names(t) for t in node.targets))
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return _target_names(node.target)
    return set()


def _whole_lines(lines: list[str], node: ast.stmt, where: str) -> tuple[int, int]:
    """0-based [first, last] line indices of `node`, refused if it shares a line with code."""
    first, last = node.lineno - 1, node.end_lineno - 1  # type: ignore[operator]
    indent = len(lines[first]) - len(lines[first].lstrip())
    tail = lines[last][node.end_col_offset :].strip()  # type: ignore[index]
    if node.col_offset != indent or (tail and not tail.startswith("#")):
        raise CodegenError(f"{where}:{node.lineno}: an import shares its line with other code")
    return first, last


def _inner_imports(
    node: ast.stmt, lines: list[str], module: str, where: str
) -> tuple[dict[int, str], set[tuple[str, str]], set[int]]:
    """modalign imports inside a function or class: line replacements, the (module, name)
    pairs they bring in, and the lines they covered."""
    replace: dict[int, str] = {}
    covered: set[int] = set()
    links: set[tuple[str, str]] = set()
    for inner in ast.walk(node):
        if inner is node:
            continue
        if isinstance(inner, ast.Import) and any(_is_ours(a.name) for a in inner.names):
            raise CodegenError(
                f"{where}:{inner.lineno}: `import modalign...`; use `from ... import`"
            )
        if not (isinstance(inner, ast.ImportFrom) and _is_ours(inner.module)):
            continue
        first, last = _whole_lines(lines, inner, where)
        indent = lines[first][: inner.col_offset]
        aliases = [f"{a.asname} = {a.name}" for a in inner.names if a.asname not in (None, a.name)]
        replace[first] = indent + ("; ".join(aliases) if aliases else "pass") + "\n"
        covered.update(range(first, last + 1))
        links |= {(inner.module, a.name) for a in inner.names}  # type: ignore[misc]
    return replace, links, covered


def _comment_start(lines: list[str], first: int) -> int:
    """Index of the first of the comment lines directly above line `first`."""
    while first > 0 and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return first


def _parse(module: str, root: Path) -> _Module:
    path = _source_path(module, root)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    where = f"{module} ({path.name})"
    out = _Module(module)
    tree = ast.parse(text)
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the module docstring
    for order, node in enumerate(body):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Assign) and _bound(node) == {"__all__"}:
            continue
        if isinstance(node, ast.ImportFrom) and _is_ours(node.module):
            for alias in node.names:
                name = alias.asname or alias.name
                if name == alias.name:
                    out.links[name] = (node.module, alias.name)  # type: ignore[assignment]
                else:
                    piece = _Piece(module, order, f"{name} = {alias.name}\n", {name},
                                   links={(node.module, alias.name)})  # type: ignore[arg-type]  # fmt: skip
                    out.pieces.append(piece)
                    out.defs.setdefault(name, []).append(piece)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.Import) and any(_is_ours(a.name) for a in node.names):
                raise CodegenError(f"{where}:{node.lineno}: `import modalign...` is not joinable")
            for alias in node.names:
                if isinstance(node, ast.Import):
                    name = alias.asname or alias.name.split(".")[0]
                    line = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                else:
                    if node.level:
                        raise CodegenError(f"{where}:{node.lineno}: relative import")
                    name = alias.asname or alias.name
                    line = f"from {node.module} import {alias.name}" + (
                        f" as {alias.asname}" if alias.asname else ""
                    )
                piece = _Piece(module, order, line + "\n", {name}, is_import=True)
                out.pieces.append(piece)
                out.defs.setdefault(name, []).append(piece)
            continue
        start = node.decorator_list[0].lineno - 1 if getattr(node, "decorator_list", None) else None
        first = node.lineno - 1 if start is None else start
        last = node.end_lineno - 1  # type: ignore[operator]
        replace, links, covered = _inner_imports(node, lines, module, where)
        chunk = []
        for i in range(_comment_start(lines, first), last + 1):
            if i in replace:
                chunk.append(replace[i])
            elif i not in covered:
                chunk.append(lines[i])
        piece = _Piece(module, order, "".join(chunk), _bound(node), _names_used(node), links)
        out.pieces.append(piece)
        for name in piece.defines:
            out.defs.setdefault(name, []).append(piece)
        out.builtins_used |= piece.uses & set(dir(builtins))
    return out


def _resolve(
    modules: dict[str, _Module], module: str, name: str, seen: frozenset = frozenset()
) -> list[_Piece]:
    """The pieces that bind `name` as seen from `module` (none: a builtin or a local)."""
    if (module, name) in seen:
        raise CodegenError(f"import cycle resolving {name} from {module}")
    mod = modules.get(module)
    if mod is None:
        raise CodegenError(
            f"{name} is imported from {module}, which is not among the joined modules; "
            "add it to MODULES (in dependency order)"
        )
    if name in mod.defs:
        return mod.defs[name]
    if name in mod.links:
        return _resolve(modules, *mod.links[name], seen | {(module, name)})
    return []


def _dependencies(modules: dict[str, _Module], piece: _Piece) -> Iterable[_Piece]:
    for name in piece.uses:
        yield from (p for p in _resolve(modules, piece.module, name) if p is not piece)
    for module, name in piece.links:
        found = _resolve(modules, module, name)
        if not found:
            raise CodegenError(f"{piece.module} imports {name} from {module}, which defines none")
        yield from found


def amalgamate(
    modules: Sequence[str], whole: Iterable[str], header: str = "", root: Path | None = None
) -> str:
    """One module's source made of `modules` (dependency order; see the module docstring), read
    from the package folder `root` (default: the installed modalign's)."""
    root = _package_folder() if root is None else Path(root)
    parsed = {name: _parse(name, root) for name in modules}
    whole = set(whole)
    keep: set[int] = set()
    todo = [p for name in whole for p in parsed[name].pieces if not p.is_import]
    while todo:
        piece = todo.pop()
        if id(piece) in keep:
            continue
        keep.add(id(piece))
        todo.extend(_dependencies(parsed, piece))
    kept = [p for name in modules for p in parsed[name].pieces if id(p) in keep]
    owners: dict[str, _Piece] = {}
    for piece in kept:
        for name in piece.defines:
            other = owners.setdefault(name, piece)
            same_import = other.is_import and other.text == piece.text
            if other.module != piece.module and not same_import:
                raise CodegenError(
                    f"{name} is defined both in {other.module} and in {piece.module}; rename one"
                )
    for name in modules:
        clash = parsed[name].builtins_used & {n for n, p in owners.items() if not p.is_import}
        if clash:
            raise CodegenError(f"{name} uses builtin(s) {sorted(clash)} that joined code redefines")
    imports = list(dict.fromkeys(p.text for p in kept if p.is_import))
    for line in imports:
        top = line.split()[1].split(".")[0]
        if top not in ALLOWED_IMPORTS and top not in sys.stdlib_module_names:
            raise CodegenError(f"the joined code would import {top!r}: {line.strip()}")
    imports.sort(key=lambda line: (line.split()[1].split(".")[0] not in sys.stdlib_module_names,
                                   line.split()[1], line))  # fmt: skip
    parts = [header, "from __future__ import annotations\n\n", *imports]
    for name in modules:
        body = [p.text for p in kept if p.module == name and not p.is_import]
        if body:
            parts.append(f"\n\n# {'-' * 20} {name}\n\n")
            parts.append("\n\n".join(chunk.rstrip("\n") + "\n" for chunk in body))
    source = "".join(parts)
    compile(source, MODELING_FILE, "exec")  # a syntax error here is a bug in the joining
    return source


@functools.cache
def modeling_source() -> str:
    """The text of `modeling_modalign_llava.py` for this modalign version (see the module doc)."""
    from modalign import __version__

    sources = "\n".join(f"#   {m}" for m in MODULES)
    header = (
        f"# {MODELING_FILE}: generated by modalign {__version__} from its own source; do not "
        "edit.\n# A LLaVA whose connector is any modalign connector, with the MoCa or LoRA its "
        "config records,\n# for `from_pretrained(folder, trust_remote_code=True)` without "
        f"modalign installed. Joined from:\n{sources}\n"
    )
    return amalgamate(MODULES, WHOLE, header)
