"""hvdagent installs into a fresh virtual environment with the pip and setuptools it comes with.

A fresh Python 3.11 venv holds pip 23.2 and setuptools 65.5 and no ``wheel``.
pip is never upgraded here. Each case installs a copy of this source tree
(``--no-deps``: hvdagent's own files are what is checked) and imports
``hvdagent.callbacks`` from a neutral folder, with this environment's
site-packages appended to ``sys.path`` only for numpy/TensorFlow: the module
files must come from the fresh install (non-editable: its site-packages;
editable: the copied tree's ``callbacks/``).

``--no-build-isolation`` builds with the environment's own setuptools, so it
needs ``wheel`` there (setuptools < 70.1 has no ``bdist_wheel`` of its own):
the README says so, and the last case installs ``wheel`` (only) first.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP_TIMEOUT_S = 300

_CHECK = """
import sys
sys.path.append({site!r})  # numpy, TensorFlow, Keras: from the test environment, after the fresh one
import hvdagent, hvdagent.callbacks as cb
from hvdagent.callbacks import BroadcastGlobalVariablesCallback, LearningRateWarmupCallback, MetricAverageCallback
print("HVDAGENT", hvdagent.__file__)
print("CALLBACKS", cb.__file__)
print("VERSION", hvdagent.__version__)
"""


def _copy_tree(dest: Path) -> Path:
    """The tracked files of this checkout (no .venv, no build leftovers)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _run(cmd, cwd, timeout=PIP_TIMEOUT_S):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_REQUIRE", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    proc = subprocess.run([str(c) for c in cmd], cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def version():
    scope = {}
    exec((ROOT / "hvdagent" / "_version.py").read_text(), scope)
    return scope["__version__"]


def _fresh_venv(path: Path) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", path], cwd=path.parent, timeout=180)
    return path / "bin" / "python"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("editable,isolation", [(False, True), (True, True), (True, False), (False, False)],
                         ids=["wheel", "editable", "editable-no-build-isolation", "wheel-no-build-isolation"])
def test_fresh_venv_installs_hvdagent_with_its_callbacks(tmp_path, editable, isolation, version):
    src = _copy_tree(tmp_path / "src")
    py = _fresh_venv(tmp_path / "venv")
    pip_before = _run([py, "-m", "pip", "--version"], cwd=tmp_path).split()[1]
    if not isolation:
        _run([py, "-m", "pip", "install", "-q", "wheel"], cwd=tmp_path)  # what the README says it needs
    cmd = [py, "-m", "pip", "install", "-q", "--no-deps"]
    cmd += [] if isolation else ["--no-build-isolation"]
    cmd += ["-e", src] if editable else [src]
    _run(cmd, cwd=tmp_path)
    assert _run([py, "-m", "pip", "--version"], cwd=tmp_path).split()[1] == pip_before  # pip was not upgraded

    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    site = sysconfig.get_paths()["purelib"]
    out = _run([py, "-c", _CHECK.format(site=site)], cwd=neutral, timeout=300)
    found = dict(line.split(" ", 1) for line in out.splitlines() if line.split(" ", 1)[0] in
                 ("HVDAGENT", "CALLBACKS", "VERSION"))
    fresh_site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           cwd=neutral).strip())
    if editable:
        assert Path(found["HVDAGENT"]) == src / "hvdagent" / "__init__.py", found
        assert Path(found["CALLBACKS"]) == src / "callbacks" / "__init__.py", found
    else:
        assert Path(found["HVDAGENT"]) == fresh_site / "hvdagent" / "__init__.py", found
        assert Path(found["CALLBACKS"]) == fresh_site / "hvdagent" / "callbacks" / "__init__.py", found
        assert (fresh_site / "hvdagent" / "py.typed").exists()
        assert not (fresh_site / "callbacks").exists()  # never a top-level `callbacks` package
        # Every source module is in the wheel (a subpackage missing from pyproject.toml would not be).
        def modules(base, skip=()):
            return sorted(str(p.relative_to(base)) for p in base.rglob("*.py") if p.relative_to(base).parts[0] not in skip)

        assert modules(fresh_site / "hvdagent", skip=("callbacks",)) == modules(src / "hvdagent")
        assert modules(fresh_site / "hvdagent" / "callbacks") == modules(src / "callbacks")
    assert found["VERSION"] == version
    meta = _run([py, "-m", "pip", "show", "hvdagent"], cwd=neutral)
    assert f"Version: {version}" in meta
    # The console script is installed too.
    assert (py.parent / "hvdagent").exists()


def test_setup_py_is_a_shim_over_pyproject(version):
    """`python setup.py --version` (older tools) reads the one source of metadata."""
    out = _run([sys.executable, "setup.py", "--version"], cwd=ROOT, timeout=120)
    assert out.strip().splitlines()[-1] == version
