"""The import graph of edgecls, read from the source with ast (nothing is imported): which package may import which,
no reaching into another package's private modules, no import cycle, and package ``__init__`` files that only
re-export."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "edgecls"

# Package __init__ files that still hold code, each with the reason; remove an entry when its package is split.
INIT_WITH_CODE = {
    "edgecls": "__version__ (the one version string setuptools reads)",
    "edgecls.train": "a lazy re-export (module __getattr__): importing one submodule must not import the others",
}

# Imports of another package's private module that remain, each with the reason; remove an entry when it is fixed.
PRIVATE_ALLOWED = {
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (an edgecls submodule when `from X import submodule`)
    module_level: bool  # executed when the importing module is imported (not in a function, not TYPE_CHECKING)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
            elif isinstance(child, ast.Import):
                found.extend(Import(name, a.name, module_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(name, sub if sub in modules else base, module_level))
            else:
                visit(child, module_level)

    visit(tree, True)
    return found


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = _modules()
    return [imp for name, path in modules.items() for imp in _imports(name, path, modules)]


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_bench_does_not_import_export(graph):
    bad = sorted({f"{i.source} -> {i.target}" for i in graph
                  if _under(i.source, "edgecls.bench") and _under(i.target, "edgecls.export")})
    assert not bad, bad


def test_the_runtime_reaches_neither_train_export_nor_torch(graph):
    banned = ("edgecls.train", "edgecls.export", "torch", "torchvision", "timm")
    bad = sorted({f"{i.source} -> {i.target}" for i in graph
                  if _under(i.source, "edgecls.runtime") and any(_under(i.target, b) for b in banned)})
    assert not bad, bad


def test_scale_reaches_only_the_runtime_and_core(graph):
    """edgecls.scale (the Ray job) stands on the runtime and core: never train, export, bench, cli or torch."""
    banned = ("edgecls.train", "edgecls.export", "edgecls.bench", "edgecls.cli", "torch", "torchvision", "timm")
    bad = sorted({f"{i.source} -> {i.target}" for i in graph
                  if _under(i.source, "edgecls.scale") and any(_under(i.target, b) for b in banned)})
    assert not bad, bad


def test_nothing_below_the_cli_imports_scale(graph):
    """Only the CLI starts Ray jobs; the runtime, train, export and bench never import edgecls.scale (or ray)."""
    bad = sorted({f"{i.source} -> {i.target}" for i in graph
                  if not _under(i.source, "edgecls.scale") and not _under(i.source, "edgecls.cli")
                  and (_under(i.target, "edgecls.scale") or _under(i.target, "ray"))})
    assert not bad, bad


CORE = ("edgecls.config", "edgecls.errors", "edgecls._deps", "edgecls._io", "edgecls.preprocess", "edgecls.manifest",
        "edgecls.bundle", "edgecls.metrics", "edgecls.synth", "edgecls.data")


def test_serve_reaches_only_the_runtime_and_core(graph):
    """The server is a front-end like the CLI, on the runtime: never train, export, bench, the CLI, click or torch."""
    allowed = ("edgecls.serve", "edgecls.runtime", *CORE)
    bad = sorted({f"{i.source} -> {i.target}" for i in graph if _under(i.source, "edgecls.serve") and (
        (i.target.startswith("edgecls.") and not any(_under(i.target, a) for a in allowed))
        or any(_under(i.target, b) for b in ("torch", "torchvision", "timm", "click")))})
    assert not bad, bad


def test_core_modules_import_no_package_above_them(graph):
    """The bundle on disk is core: the exporter, the runtime and bench all stand on it."""
    core = ("edgecls.bundle", "edgecls.manifest", "edgecls._io", "edgecls._deps", "edgecls.errors",
            "edgecls.preprocess")
    above = ("edgecls.train", "edgecls.export", "edgecls.runtime", "edgecls.bench", "edgecls.cli", "edgecls.scale",
             "edgecls.serve", "torch")
    bad = sorted({f"{i.source} -> {i.target}" for i in graph
                  if i.source in core and any(_under(i.target, a) for a in above)})
    assert not bad, bad


def test_no_package_imports_another_packages_private_module(graph):
    bad = []
    for i in graph:
        parts = i.target.split(".")
        if parts[0] != "edgecls" or len(parts) < 3:
            continue  # edgecls._io, edgecls._deps ... are the core's shared helpers
        source = i.source.split(".")
        own = source[1] if len(source) > 1 and (ROOT / source[1]).is_dir() else None
        if parts[1] != own and any(p.startswith("_") and not p.startswith("__") for p in parts[2:]) \
                and (i.source, i.target) not in PRIVATE_ALLOWED:
            bad.append(f"{i.source} -> {i.target}")
    assert not bad, sorted(set(bad))
    used = {(i.source, i.target) for i in graph}
    stale = sorted(f"{s} -> {t}" for s, t in PRIVATE_ALLOWED if (s, t) not in used)
    assert not stale, f"these imports are gone; remove them from PRIVATE_ALLOWED: {stale}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_between_modules(graph):
    """Module-level imports only (what runs at import time); a function-level import runs later, when every module
    is loaded. A package importing its own submodules (to re-export them) is not an arrow back."""
    modules = set(_modules())
    edges: dict[str, set[str]] = {}
    for i in graph:
        if i.module_level and i.target in modules and i.target != i.source:
            edges.setdefault(i.source, set()).add(i.target)
    assert _cycles(edges) == []


def test_the_export_context_does_not_import_the_targets(graph):
    """The circle context (was _calibration) <-> targets/onnx is gone at every level: the targets read the context,
    the context knows no target."""
    bad = sorted({i.target for i in graph
                  if i.source == "edgecls.export.context" and _under(i.target, "edgecls.export.targets")})
    assert not bad, bad


def _init_code(path: Path) -> list[str]:
    """Statements of a package __init__ other than its docstring, imports and __all__."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    extra = []
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node) and all(
                isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if targets and all(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            continue
        extra.append(f"line {node.lineno}: {type(node).__name__}")
    return extra


def test_package_init_files_only_re_export():
    found = {}
    for path in sorted(ROOT.rglob("__init__.py")):
        name = _module_name(path)
        code = _init_code(path)
        if code and name not in INIT_WITH_CODE:
            found[name] = code[:3]
    assert not found, found
    stale = sorted(name for name in INIT_WITH_CODE if not _init_code(ROOT.parent / name.replace(".", "/") /
                                                                      "__init__.py"))
    assert not stale, f"these __init__ files only re-export now; remove them from INIT_WITH_CODE: {stale}"


def test_the_bundle_file_names_are_spelled_once():
    """Each name of the bundle layout (and the metadata key prefix) is one constant: edgecls.bundle's, or
    edgecls.manifest's for manifest.json (docstrings, comments and text inside f-strings do not count)."""
    home = {"parity.json": "edgecls.bundle", "reference.npz": "edgecls.bundle", "export.json": "edgecls.bundle",
            "README.md": "edgecls.bundle", "engine.json": "edgecls.bundle", "edgecls.": "edgecls.bundle",
            "manifest.json": "edgecls.manifest"}
    found: dict[str, list[str]] = {}
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in home \
                    and id(node) not in in_fstrings:
                found.setdefault(node.value, []).append(f"{name}:{node.lineno}")
    assert {k: [w.split(":")[0] for w in v] for k, v in found.items()} == {k: [m] for k, m in home.items()}, found
