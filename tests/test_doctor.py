"""`python -m hvdagent doctor`."""

import os
import subprocess
import sys


def _doctor(env=None):
    return subprocess.run([sys.executable, "-m", "hvdagent", "doctor"], capture_output=True, text=True,
                          timeout=180, env=dict(os.environ, **(env or {})))


def test_doctor_reports_versions_and_exits_zero_when_healthy():
    import horovod
    import keras
    import tensorflow as tf

    proc = _doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"tensorflow: {tf.__version__}" in out
    assert f"keras: {keras.__version__}" in out
    assert f"horovod: {horovod.__version__}" in out
    assert "active keras: Keras 3" in out
    assert "controllers: gloo=yes" in out
    assert "status: healthy" in out


def test_doctor_names_keras2_when_legacy_keras_is_selected():
    proc = _doctor({"TF_USE_LEGACY_KERAS": "1"})
    assert "active keras: Keras 2 (tf_keras" in proc.stdout


def test_doctor_detects_a_horovod_built_for_another_tensorflow(tmp_path):
    fake = tmp_path / "horovod"
    (fake / "tensorflow").mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.28.1'\n")
    (fake / "tensorflow" / "__init__.py").write_text(
        "raise ImportError('mpi_lib.cpython-311-x86_64-linux-gnu.so: undefined symbol: _ZN10tensorflow8OpKernel')\n"
    )
    proc = _doctor({"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1
    assert "built for another TensorFlow" in proc.stdout
    assert "run `hvdagent install-horovod`" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "status: unhealthy" in proc.stdout
