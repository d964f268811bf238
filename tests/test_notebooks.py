"""Every tutorial in notebooks/ runs top to bottom in a fresh kernel (nbclient).

A cell error fails the test. The kernel is this interpreter's (the one running
pytest): the standard ``python3`` kernelspec when it resolves here, otherwise a
kernelspec installed into a temporary folder. Committed notebooks carry no
outputs.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
NOTEBOOK_BUDGET_S = 180  # the limit per notebook on a 2-core CPU
# 05_clusters starts a local Ray and a local Spark (a JVM) besides its three launches.
BUDGETS_S = {"05_clusters": 600}
# Notebooks that need a cluster engine carry its marker, so `-m "not ray and not spark"` leaves them out.
ENGINE_MARKS = {"05_clusters": [pytest.mark.ray, pytest.mark.spark]}
RUNS = [pytest.param(p, id=p.stem, marks=ENGINE_MARKS.get(p.stem, [])) for p in NOTEBOOKS]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """(kernel name, extra environment) for a kernel that runs this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    python_names = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}
    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = None
    # jupyter_client replaces a bare "python" with the interpreter that starts the kernel: this one.
    if argv0 in python_names or argv0 == sys.executable:
        return "python3", {}
    prefix = tmp_path_factory.mktemp("kernelspec")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "hvdagent-tests"],
                   check=True, capture_output=True, timeout=120)
    jupyter_path = os.pathsep.join(filter(None, [str(prefix / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")]))
    return "hvdagent-tests", {"JUPYTER_PATH": jupyter_path}


def test_there_are_tutorials_in_reading_order():
    names = [p.name for p in NOTEBOOKS]
    assert names[:5] == [
        "01_quick_start.ipynb",
        "02_data_sharding.ipynb",
        "03_checkpoints_fault_tolerance.ipynb",
        "04_scaling_and_sync_tuning.ipynb",
        "05_clusters.ipynb",
    ], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_no_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    dirty = [i for i, c in enumerate(book.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert dirty == [], f"{path.name}: strip the outputs of cells {dirty} before committing"


@pytest.mark.timeout(max([NOTEBOOK_BUDGET_S, *BUDGETS_S.values()]) + 240)
@pytest.mark.parametrize("path", RUNS)
def test_notebook_runs_top_to_bottom(path, kernel, monkeypatch):
    name, extra_env = kernel
    for key, value in extra_env.items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ)
    env.update({
        "MPLBACKEND": "Agg",  # no display; plt.show() is a no-op
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    })
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=CELL_TIMEOUT_S, kernel_name=name, allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell failed\n{err}")
    elapsed = time.perf_counter() - start
    executed = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in executed)
    budget = BUDGETS_S.get(path.stem, NOTEBOOK_BUDGET_S)
    assert elapsed < budget, f"{path.name} took {elapsed:.0f}s; the budget is {budget}s"
    print(f"{path.name}: {elapsed:.1f}s")
