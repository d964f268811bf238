"""Architecture contracts, checked on the source (every import, also inside functions):

* only the seam (``hvdagent._hvd``) imports ``horovod``;
* ``hvdagent._compat`` (Keras 2 vs 3) is a leaf: it imports nothing from the package;
* the callbacks never import the agent (data flows down: the agent uses callbacks);
* the package's modules import each other without cycles;
* the public API is exactly ``hvdagent.__all__`` (no public implementation module
  shadows a public name; ``hvdagent.launch`` is the function);
* no module is longer than 350 lines (one concern per module).
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


def test_callbacks_do_not_import_the_agent():
    for name, targets in GRAPH.items():
        if name.startswith("hvdagent.callbacks"):
            assert not _internal(targets) & {"hvdagent", "hvdagent._agent"}, (name, sorted(_internal(targets)))


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

    assert callable(hvdagent.launch) and hvdagent.launch.__module__ == "hvdagent._launch"
    public_modules = {m for m in MODULES if m.count(".") == 1 and not m.split(".")[1].startswith("_")}
    assert public_modules <= {"hvdagent.callbacks", "hvdagent.elastic"}, public_modules
    for name in hvdagent.__all__:
        assert hasattr(hvdagent, name), name


MAX_LINES = 350


def test_no_module_is_longer_than_the_limit():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert len(lengths) > 40  # every module of hvdagent/ and callbacks/ was read
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert too_long == {}, f"split these modules (at most {MAX_LINES} lines each): {too_long}"
