"""A user's install, end to end, on the oldest and the newest supported TensorFlow.

Each case runs, in a fresh virtual environment, the commands of the README::

    python -m venv env
    env/bin/pip install "<this project>[tf,examples]"      # with TensorFlow pinned
    env/bin/hvdagent install-horovod
    env/bin/horovodrun -np 2 env/bin/python examples/train_digits.py

``install-horovod`` takes Horovod from the machine's wheel cache when a wheel
was built for the same versions (the TensorFlow 2.21 case shares the one
``ci/setup.sh`` builds); otherwise it compiles one (5 to 10 minutes on 2 cores),
once per machine. The pins of each case are in ``ci/matrix/``.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

MATRIX = ROOT / "ci" / "matrix"
CASES = sorted(p.stem for p in MATRIX.glob("tf*.txt"))


def _copy_tree(dest: Path) -> Path:
    """The tracked files of this checkout: what `pip install <project>` gets."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _run(cmd, cwd, timeout):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "PIP_REQUIRE"))}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONUNBUFFERED": "1"})
    proc = subprocess.run([str(c) for c in cmd], cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def test_the_matrix_holds_the_oldest_and_newest_supported_tensorflow():
    sys.path.insert(0, str(ROOT))
    from hvdagent._install import recipe

    assert CASES == ["tf%d.%d" % recipe.TF_OLDEST, "tf%d.%d" % recipe.TF_NEWEST]
    newest = (MATRIX / f"{CASES[-1]}.txt").read_text()
    pinned = re.search(r"^tensorflow==(\S+)", (ROOT / "ci" / "constraints.txt").read_text(), re.M).group(1)
    assert f"tensorflow=={pinned}" in newest  # the newest case shares ci/setup.sh's cached build


@pytest.mark.matrix
@pytest.mark.timeout(3000)
@pytest.mark.parametrize("case", CASES)
def test_fresh_venv_installs_builds_horovod_and_trains_on_two_ranks(tmp_path, case):
    src = _copy_tree(tmp_path / "project")
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", tmp_path / "env"], tmp_path, 300)
    bin_ = tmp_path / "env" / "bin"
    _run([bin_ / "python", "-m", "pip", "install", "-q", "-c", MATRIX / f"{case}.txt", f"{src}[tf,examples]"],
         tmp_path, 1200)
    versions = re.search(r"^VERSIONS (\S+) (\S+) (\S+)$", _run([bin_ / "python", "-c", (
        "import tensorflow as tf, keras, numpy; print('VERSIONS', tf.__version__, keras.__version__, numpy.__version__)"
    )], tmp_path, 300), re.M).groups()
    assert f"tensorflow=={versions[0]}" in (MATRIX / f"{case}.txt").read_text(), versions

    # The README's first run: one process, no Horovod installed yet.
    first = _run([bin_ / "python", src / "examples" / "train_digits.py"], tmp_path, 600)
    assert "ranks: 1" in first and float(re.search(r"test accuracy: ([0-9.]+)", first).group(1)) >= 0.95, first[-3000:]

    out = _run([bin_ / "hvdagent", "install-horovod"], tmp_path, 2700)  # a compilation when not cached
    assert f"tensorflow {versions[0]}: supported" in out, out
    assert "2-process allreduce over gloo: 3.0 on both ranks" in out, out
    assert f"works with TensorFlow {versions[0]}" in out, out
    again = _run([bin_ / "hvdagent", "install-horovod", "--check"], tmp_path, 300)
    assert re.search(rf"build horovod-0\.28\.1-tf{re.escape(versions[0])}-py[\d.]+-tf-gloo\S*: installed", again), again

    doctor = _run([bin_ / "hvdagent", "doctor"], tmp_path, 300)
    assert f"tensorflow: {versions[0]}" in doctor and "status: healthy" in doctor, doctor

    train = _run([bin_ / "horovodrun", "-np", "2", bin_ / "python", src / "examples" / "train_digits.py"],
                 tmp_path, 900)
    accs = re.findall(r"test accuracy: ([0-9.]+)", train)
    assert len(accs) == 1 and float(accs[0]) >= 0.95, train[-3000:]  # rank 0 alone prints
    assert "ranks: 2" in train, train[-3000:]
    print(f"{case}: TensorFlow {versions[0]}, Keras {versions[1]}, numpy {versions[2]}: test accuracy {accs[0]}")
