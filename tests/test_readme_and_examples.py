"""The README's example, the docs' cluster example and the examples/ scripts run as a user would run them."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_horovod


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From `model.fit` to `agent.fit`", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run_python(args, cwd, timeout=300, env=None):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=str(cwd),
                          timeout=timeout, env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.timeout(600)
def test_readme_example_runs_on_one_and_two_processes(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(_readme_example())
    out = _run_python([script], cwd=tmp_path)
    assert "'accuracy'" in out and (tmp_path / "model.keras").exists()
    (tmp_path / "model.keras").unlink()
    proc = run_horovod(script, timeout=300, env={"PWD": str(tmp_path)}, cwd=tmp_path)
    printed = re.findall(r"\{'accuracy': [0-9.]+, 'loss': [0-9.]+\}", proc.stdout)
    assert len(printed) == 2 and printed[0] == printed[1], proc.stdout[-2000:]  # same exact metrics on both ranks
    assert (tmp_path / "model.keras").exists()


@pytest.mark.timeout(600)
def test_train_digits_reaches_95_percent_on_one_and_two_processes():
    out = _run_python([ROOT / "examples" / "train_digits.py"], cwd=ROOT)
    acc = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert acc >= 0.95, out
    assert out.count("epoch ") == 20
    proc = run_horovod(ROOT / "examples" / "train_digits.py", timeout=300)
    accs = re.findall(r"test accuracy: ([0-9.]+)", proc.stdout)
    assert len(accs) == 1, "only rank 0 prints"
    assert float(accs[0]) >= 0.95, proc.stdout[-3000:]
    assert "ranks: 2" in proc.stdout


def _fake_mnist(path, n_train=600, n_test=200, seed=0):
    """A small file in the Keras mnist.npz format: 28x28 uint8 images, labels 0-9."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, size=(10, 28, 28))

    def make(n):
        y = rng.integers(0, 10, size=n).astype("uint8")
        x = np.clip(protos[y] + rng.normal(0, 40, size=(n, 28, 28)), 0, 255).astype("uint8")
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


@pytest.mark.timeout(600)
def test_mnist_mlp_reads_a_local_npz_and_explains_a_missing_one(tmp_path):
    data = tmp_path / "mnist.npz"
    _fake_mnist(data)
    out = _run_python([ROOT / "examples" / "mnist_mlp.py", "--data", data, "--epochs", "3"], cwd=tmp_path)
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) > 0.9  # separable prototypes
    assert "784-64-10" in out
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "mnist_mlp.py"), "--data", str(tmp_path / "nope.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nope.npz" in proc.stderr and "mnist.npz" in proc.stderr and "https://" in proc.stderr


def _cluster_section():
    text = (ROOT / "docs" / "launch.md").read_text()
    section = text.split("## Ray and Spark", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"A script, `train_cluster.py`:\n\n```python\n(.*?)```", section, re.S).group(1)
    commands = re.findall(r"^\.venv/bin/python train_cluster\.py (\w+)", section, re.M)
    return script, commands


def test_docs_cluster_section_runs_each_engine_once():
    assert _cluster_section()[1] == ["ray", "spark"]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("engine", [pytest.param("ray", marks=pytest.mark.ray),
                                    pytest.param("spark", marks=pytest.mark.spark)])
def test_docs_cluster_example_starts_trains_and_stops_the_engine(tmp_path, engine):
    """docs/launch.md's command, as a user runs it: launch starts a local Ray / Spark, trains, stops it."""
    from test_engines import _left_running

    import time

    script, _ = _cluster_section()
    (tmp_path / "train_cluster.py").write_text(script)
    since = time.time()
    out = _run_python(["train_cluster.py", engine], cwd=tmp_path, timeout=1100,
                      env={"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    found = re.search(r"^(\w+) rank 0: (\{.*?\}) rank 1: (\{.*?\})$", out, re.M)
    assert found, out[-3000:]
    assert found.group(1) == engine
    assert found.group(2) == found.group(3)  # the same exact global metrics on both ranks
    assert eval(found.group(2))["accuracy"] > 0.9, found.group(0)  # noqa: S307 (a dict of floats we printed)
    assert _left_running(since) == []
