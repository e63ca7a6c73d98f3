"""Imports run one way (docs/architecture.md): no module imports one from a higher layer, and
no modules import each other in a cycle, within a layer or a package.

Every module of the package is given a layer; the test reads each file with `ast` (imports
inside functions included) and fails on any import of a module from a higher layer, and on any
cycle of imports (the strongly connected components of the import graph), so a new cycle or
upward reach fails CI. A module missing from LAYERS fails too: place it first.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxrobust"

# Bottom to top (docs/architecture.md "Layers"). A module may import its own layer and below.
LAYER_ORDER = (
    ("base", ("jaxrobust", "jaxrobust.config", "jaxrobust.rng", "jaxrobust.parallel", "jaxrobust.io",
              "jaxrobust.progress", "jaxrobust.hostmem", "jaxrobust.errors", "jaxrobust.provenance")),
    ("data", ("jaxrobust.data",)),  # and every jaxrobust.data.* module
    ("models", ("jaxrobust.models",)),  # and every jaxrobust.models.* module
    ("losses", ("jaxrobust.losses", "jaxrobust.augment", "jaxrobust.checkpoint")),
    ("predict", ("jaxrobust.predict",)),
    ("inference", ("jaxrobust.train", "jaxrobust.evaluate", "jaxrobust.candidates")),
    ("incremental", ("jaxrobust.incremental",)),
    ("attack", ("jaxrobust.attack",)),
    ("scan", ("jaxrobust.scan",)),
    ("certify", ("jaxrobust.bounds", "jaxrobust.certify")),
    ("analysis", ("jaxrobust.latent", "jaxrobust.robustness", "jaxrobust.findings")),
    ("plots", ("jaxrobust.plots",)),
    ("report", ("jaxrobust.report",)),
    ("pipeline", ("jaxrobust.pipeline",)),
    ("study", ("jaxrobust.study",)),
    ("cli", ("jaxrobust.cli",)),
)
LAYER = {module: rank for rank, (_, modules) in enumerate(LAYER_ORDER) for module in modules}
PACKAGES = ("jaxrobust.data", "jaxrobust.models")  # their submodules share the package's layer


def module_name(path: Path, root: Path | None = None) -> str:
    parts = path.relative_to((root or PACKAGE).parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of a module (a submodule of data/ or models/ takes its package's)."""
    for package in PACKAGES:
        if module.startswith(package + "."):
            return LAYER[package]
    return LAYER[module]


def package_modules(root: Path | None = None) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root or PACKAGE).rglob("*.py"))}


def imported_modules(path: Path, modules: dict, root: Path | None = None) -> set[str]:
    """The jaxrobust modules a file imports anywhere (module level or inside functions)."""
    own = module_name(path, root)
    here = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b` names module a.b when b is a module, else a
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "jaxrobust" or n.startswith("jaxrobust."))
    found.discard(own)
    return found


def upward_imports() -> list[tuple[str, str]]:
    modules = package_modules()
    bad = []
    for module, path in modules.items():
        for target in imported_modules(path, modules):
            if target not in modules:  # e.g. `import jaxrobust.data.store as s` resolved above
                continue
            if layer_of(target) > layer_of(module):
                bad.append((module, target))
    return sorted(bad)


def import_cycles(root: Path | None = None) -> list[list[tuple[str, str]]]:
    """Each cycle of the package's imports as its edges (importer, imported): the strongly
    connected components of more than one module (Tarjan 1972), whatever their layers."""
    modules = package_modules(root)
    graph = {m: sorted(t for t in imported_modules(p, modules, root) if t in modules) for m, p in modules.items()}
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or component_root != v:
                component_root = stack.pop()
                on_stack.discard(component_root)
                component.add(component_root)
            if len(component) > 1:
                components.append(sorted((a, b) for a in component for b in graph[a] if b in component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def assert_no_import_cycle(root: Path | None = None) -> None:
    cycles = import_cycles(root)
    assert not cycles, "import cycles (importer -> imported): " + "; ".join(
        ", ".join(f"{a} -> {b}" for a, b in edges) for edges in cycles)


def test_every_module_has_a_layer():
    missing = [m for m in package_modules() if m not in LAYER and not m.startswith(tuple(p + "." for p in PACKAGES))]
    assert not missing, f"add these modules to LAYER_ORDER in tests/test_layers.py: {missing}"


def test_no_module_imports_a_higher_layer():
    bad = list(upward_imports())
    assert not bad, "imports from a higher layer (importer -> imported): " + ", ".join(
        f"{a} -> {b}" for a, b in bad)


def test_no_import_cycle():
    assert_no_import_cycle()


def test_a_cycle_within_one_layer_fails_the_check(tmp_path):
    """The checker itself: two modules of one layer (analysis) that import each other, one of them
    inside a function, pass the upward check and fail the cycle check; without the back edge both pass."""
    pkg = tmp_path / "jaxrobust"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("")
    (pkg / "latent.py").write_text("from jaxrobust import config\nfrom jaxrobust import robustness\n")
    (pkg / "robustness.py").write_text("def f():\n    from . import latent\n    return latent\n")
    assert layer_of("jaxrobust.latent") == layer_of("jaxrobust.robustness")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        assert upward_imports() == []
        with pytest.raises(AssertionError, match=r"jaxrobust\.latent -> jaxrobust\.robustness, "
                                                 r"jaxrobust\.robustness -> jaxrobust\.latent"):
            assert_no_import_cycle(pkg)
        (pkg / "robustness.py").write_text("def f():\n    from . import config\n    return config\n")
        assert_no_import_cycle(pkg)
    finally:
        PACKAGE = saved


def test_the_walk_sees_imports_inside_functions(tmp_path):
    """The checker itself: a nested, relative and from-import are all found."""
    pkg = tmp_path / "jaxrobust"
    (pkg / "data").mkdir(parents=True)
    source = ("def f():\n    from jaxrobust import attack\n    from .. import report\n"
              "    import jaxrobust.cli as c\n")
    (pkg / "data" / "store.py").write_text(source)
    modules = {"jaxrobust.attack": None, "jaxrobust.report": None, "jaxrobust.cli": None,
               "jaxrobust.data.store": None}
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        found = imported_modules(pkg / "data" / "store.py", modules)
    finally:
        PACKAGE = saved
    assert found == {"jaxrobust.attack", "jaxrobust.report", "jaxrobust.cli"}


@pytest.mark.parametrize("module", ["jaxrobust.data.store", "jaxrobust.losses", "jaxrobust.candidates"])
def test_a_fresh_import_loads_no_higher_module(module):
    code = f"import sys, {module}; print('\\n'.join(m for m in sys.modules if m.startswith('jaxrobust')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = [m for m in out.stdout.split() if m in LAYER or m.startswith(PACKAGES)]
    higher = [m for m in loaded if layer_of(m) > layer_of(module)]
    assert not higher, f"importing {module} loaded {higher}"
