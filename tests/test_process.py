"""Process helpers and the seam, in one process (no launcher)."""

import os
import subprocess
import sys


import hvdagent
from hvdagent import _hvd


def test_helpers_report_a_single_process():
    hvdagent.init()
    hvdagent.init()  # idempotent
    assert hvdagent.size() == 1
    assert hvdagent.rank() == 0
    assert hvdagent.local_rank() == 0
    assert hvdagent.local_size() == 1
    assert hvdagent.is_chief() is True


def test_collectives_are_identity_with_one_process():
    import tensorflow as tf

    t = tf.constant([1.0, 2.0])
    (out,) = _hvd.allreduce([t], op="sum")
    assert out is t  # no copy, no Horovod call
    assert _hvd.broadcast_object({"a": 1}) == {"a": 1}
    assert _hvd.allgather_object(5) == [5]
    assert _hvd.allreduce_object(2.5) == 2.5


def test_public_api_is_small_and_explicit():
    assert sorted(hvdagent.__all__) == sorted([
        "__version__", "init", "rank", "size", "local_rank", "local_size", "is_chief",
        "DistributedAgent", "DistributedOptimizer", "shard_dataset", "launch", "LaunchError", "LaunchTimeoutError",
        "HorovodUnavailableError", "ReplicaDivergenceError", "PowerSGD", "SyncProfiler", "SyncBatchNormalization", "watchdog_paused",
        # Horovod's horovod.tensorflow.keras names (import hvdagent as hvd)
        "shutdown", "is_initialized", "cross_rank", "cross_size", "mpi_built", "gloo_built", "nccl_built",
        "mpi_enabled", "gloo_enabled", "Compression", "Average", "Sum", "Adasum", "allreduce", "allgather",
        "broadcast", "broadcast_object", "allgather_object", "broadcast_variables", "broadcast_global_variables",
        "load_model", "callbacks", "elastic",
        # Horovod's horovod.tensorflow custom-loop names
        "DistributedGradientTape", "PartialDistributedGradientTape",
    ])
    for name in hvdagent.__all__:
        assert getattr(hvdagent, name) is not None


def test_import_works_without_horovod_and_first_call_explains(tmp_path):
    # A fake, broken `horovod` package first on the path stands in for a
    # missing or ABI-broken build: import hvdagent must still work.
    fake = tmp_path / "horovod"
    (fake / "tensorflow").mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.28.1'\n")
    (fake / "tensorflow" / "__init__.py").write_text("raise ImportError('undefined symbol: _ZN10tensorflow8OpKernel')\n")
    code = (
        "import hvdagent\n"
        "try:\n"
        "    hvdagent.size()\n"
        "except hvdagent.HorovodUnavailableError as err:\n"
        "    print('ERR', err)\n"
    )
    # Launched (a rank's environment): only then is Horovod needed at all.
    env = dict(os.environ, PYTHONPATH=str(tmp_path), HOROVOD_RANK="0", HOROVOD_SIZE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERR" in proc.stdout
    assert "undefined symbol" in proc.stdout
    assert "python -m hvdagent doctor" in proc.stdout
    assert "another TensorFlow" in proc.stdout
