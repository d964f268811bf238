"""Architecture contracts, checked on the source (every import, also inside functions):

* the package is grouped by concept into areas, in layers; an area imports
  only areas of lower layers (or its own), never upward (``LAYERS`` below,
  the map in docs/architecture.md);
* only the seam (``hvdagent._hvd``) imports ``horovod``, and it imports
  nothing of hvdagent above it;
* ``hvdagent._compat`` (Keras 2 vs 3) is a leaf: it imports nothing from the package;
* ``hvdagent.callbacks`` holds exactly what it exports (and its private base);
* the package's modules import each other without cycles;
* the public API is exactly ``hvdagent.__all__`` (no public implementation module
  shadows a public name; ``hvdagent.launch`` is the function);
* modules stay short enough to read in one sitting (a warning, not a design
  driver: a long module is reported, the test fails only far past it).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules():
    """{module name: path} for hvdagent/ and callbacks/ (installed as hvdagent.callbacks)."""
    out = {}
    for base, package in ((ROOT / "hvdagent", "hvdagent"), (ROOT / "callbacks", "hvdagent.callbacks")):
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [package] + [p for p in rel.parts if p != "__init__"]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """Every module ``name`` imports (absolute names), at any depth of the file."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            submodules = {f"{mod}.{alias.name}" for alias in node.names} & set(MODULES)
            found.update(submodules)  # `from hvdagent import _hvd` imports the module hvdagent._hvd...
            if len(submodules) < len(node.names):
                found.add(mod)  # ...and `from hvdagent import DistributedAgent` the package's namespace
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _internal(targets):
    out = set()
    for t in targets:
        while t and t not in MODULES:
            t = t.rpartition(".")[0]
        if t:
            out.add(t)
    return out


def test_only_the_seam_imports_horovod():
    offenders = {m: sorted(t for t in ts if t == "horovod" or t.startswith("horovod."))
                 for m, ts in GRAPH.items() if not (m == "hvdagent._hvd" or m.startswith("hvdagent._hvd."))}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_compat_is_a_leaf():
    assert _internal(GRAPH["hvdagent._compat"]) == set()


# Top to bottom; an area may import its own modules and any area of a lower layer.
LAYERS = [
    {"hvdagent._launch", "hvdagent._horovod_keras", "hvdagent.elastic", "hvdagent.__main__"},
    {"hvdagent.callbacks"},
    {"hvdagent._agent"},
    {"hvdagent._data", "hvdagent._sync", "hvdagent._watchdog"},
    {"hvdagent._runtime"},
    {"hvdagent._compat", "hvdagent._version"},
    {"hvdagent._hvd", "hvdagent._install"},
]
AREAS = {area: level for level, areas in enumerate(LAYERS) for area in areas}


def _area(module):
    parts = module.split(".")
    for n in (2, 1):
        name = ".".join(parts[:n])
        if name in AREAS or (n == 1 and name == "hvdagent"):
            return name
    raise AssertionError(f"{module} is in no area of LAYERS")


def test_every_module_is_in_an_area():
    assert {_area(m) for m in MODULES} == set(AREAS) | {"hvdagent"}
    folders = {p.name for p in (ROOT / "hvdagent").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert {f"hvdagent.{f}" for f in folders} <= set(AREAS)


def test_no_area_imports_upward():
    upward = {}
    for name, targets in GRAPH.items():
        src = _area(name)
        if src == "hvdagent":
            continue  # the package's __init__ assembles the public API from every area
        for t in _internal(targets):
            dst = _area(t)
            if dst == "hvdagent" or (dst != src and AREAS[dst] <= AREAS[src]):
                upward.setdefault(name, []).append(t)  # nothing imports the facade back, nor sideways/up
    assert upward == {}


def test_the_seam_imports_nothing_above_it():
    for name, targets in GRAPH.items():
        if name.startswith("hvdagent._hvd"):
            assert {_area(t) for t in _internal(targets)} <= {"hvdagent._hvd"}, (name, sorted(_internal(targets)))


def test_callbacks_hold_exactly_what_they_export():
    import hvdagent.callbacks

    public = {n for n in MODULES if n.startswith("hvdagent.callbacks.") and not n.rsplit(".", 1)[1].startswith("_")}
    exported = {getattr(hvdagent.callbacks, n).__module__ for n in hvdagent.callbacks.__all__}
    assert public == exported
    private = {n for n in MODULES if n.startswith("hvdagent.callbacks._")}
    assert private == {"hvdagent.callbacks._either_keras"}  # the base class of the public callbacks


def test_no_import_cycles():
    # A package's __init__ re-exports its children; edges into a package's
    # __init__ from inside it are not cycles of behaviour, so the graph is
    # taken between modules, with each child's import of its own parent package left out.
    edges = {m: {t for t in _internal(ts) if t != m and not m.startswith(t + ".")} for m, ts in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_public_api_is_all_and_nothing_shadows_it():
    import hvdagent

    assert callable(hvdagent.launch) and hvdagent.launch.__module__ == "hvdagent._launch.api"
    public_modules = {m for m in MODULES if m.count(".") == 1 and not m.split(".")[1].startswith("_")}
    assert public_modules <= {"hvdagent.callbacks", "hvdagent.elastic"}, public_modules
    for name in hvdagent.__all__:
        assert hasattr(hvdagent, name), name


READABLE_LINES = 400  # a module past this is reported (split it by concept if it holds two)
HARD_LIMIT = 600


def test_modules_stay_readable():
    import warnings

    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert len(lengths) > 40  # every module of hvdagent/ and callbacks/ was read
    long = {name: n for name, n in lengths.items() if n > READABLE_LINES}
    if long:
        warnings.warn(f"long modules (over {READABLE_LINES} lines): {long}")
    assert {name: n for name, n in lengths.items() if n > HARD_LIMIT} == {}


def test_the_architecture_doc_names_every_area_and_only_files_that_exist():
    import re

    doc = (ROOT / "docs" / "architecture.md").read_text()
    for area in AREAS:
        rel = area.split(".", 1)[1] if area.startswith("hvdagent.") else area
        if rel == "callbacks":
            rel = "callbacks/"
        assert rel.lstrip("_") in doc, f"docs/architecture.md does not name {area}"
    named = set(re.findall(r"`(_[a-z_]+/[a-z_0-9]+\.py)", doc))
    assert len(named) > 10
    missing = sorted(n for n in named if not (ROOT / "hvdagent" / n).exists())
    assert missing == [], f"docs/architecture.md names files that do not exist: {missing}"
