"""The Horovod backend: collectives over Gloo or MPI through ``horovod.tensorflow``.

Horovod is imported on the first call that needs it; a missing or broken
Horovod raises :class:`HorovodUnavailableError` with the fix. With one rank
(``horovodrun -np 1``) every collective returns its input unchanged.
"""

from __future__ import annotations

import os
import threading
from typing import Any, List, Optional

from hvdagent._hvd.backend import OPS, PlainStartup, Startup
from hvdagent._hvd.errors import unavailable

__all__ = ["HorovodBackend", "import_horovod", "import_error", "set_process_defaults"]

_IMPORT_LOCK = threading.Lock()
_MODULE = None
_IMPORT_ERROR: Optional[BaseException] = None


def import_horovod():
    """``horovod.tensorflow``, imported once; raises HorovodUnavailableError on failure."""
    global _MODULE, _IMPORT_ERROR
    if _MODULE is not None:
        return _MODULE
    with _IMPORT_LOCK:
        if _IMPORT_ERROR is not None:
            raise unavailable(_IMPORT_ERROR)
        try:
            import horovod.tensorflow as hvd
        except BaseException as err:  # ImportError, or OSError/NotFoundError for ABI breaks
            if isinstance(err, KeyboardInterrupt):
                raise
            _IMPORT_ERROR = err
            raise unavailable(err) from err
        _MODULE = hvd
    return _MODULE


def import_error() -> Optional[BaseException]:
    """Why importing Horovod failed in this process (None if it did not fail, or was not tried)."""
    return _IMPORT_ERROR


def set_process_defaults(environ=os.environ) -> None:
    """Settings hvdagent makes before Horovod (and MPI) start, unless the user set them.

    * ``OMPI_MCA_mpi_yield_when_idle=1`` under Open MPI: without it, a rank
      waiting in a collective busy-polls a core, which starves the computing
      ranks whenever ranks share cores (measured: +75% throughput with 2 ranks
      on 2 cores). Open MPI reads it at ``MPI_Init``, so setting it here, in
      the process, is enough.
    * ``HOROVOD_STALL_CHECK_TIME_SECONDS=30`` (a warning only; Horovod's
      stall *shutdown* is not set: a rank-0 callback that takes minutes is
      legitimate, see :mod:`hvdagent._watchdog.watchdog`).

    Horovod's cycle time is left at Horovod's default: a value tuned on one
    machine cost 25-30% on another (docs/benchmarks.md).
    """
    if "OMPI_COMM_WORLD_RANK" in environ:
        environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    # Horovod only warns about ranks that keep the others waiting this long;
    # ending stalled jobs and jobs that lost a host is the watchdog's job.
    environ.setdefault("HOROVOD_STALL_CHECK_TIME_SECONDS", "30")


def _kv():
    from hvdagent._hvd import kv_get, kv_put  # the package re-exports _runner's (no cycle through _runner)

    return kv_put, kv_get


class HorovodBackend:
    """Horovod's collectives for the ranks of a launched job."""

    name = "horovod"

    def __init__(self, startup: Startup = PlainStartup()):
        self._lock = threading.Lock()
        self._startup = startup

    # --- process -----------------------------------------------------------------
    def _hvd(self):
        hvd = import_horovod()
        if not hvd.is_initialized():
            self.init()
        return hvd

    def init(self) -> None:
        hvd = import_horovod()
        with self._lock:
            if hvd.is_initialized():
                return
            set_process_defaults()
            self._startup.before_init()  # before Horovod's (and, if not yet started, TensorFlow's) threads exist
            self._startup.checked_init(hvd.init, self.allgather_object, _kv())  # hvd.init() between the checks

    def restart(self) -> None:
        """Shut Horovod down and initialise it again (elastic training's reset)."""
        import_horovod().shutdown()
        self.init()

    def is_initialized(self) -> bool:
        return _MODULE is not None and bool(_MODULE.is_initialized())

    def shutdown(self) -> None:
        if self.is_initialized():
            _MODULE.shutdown()

    def rank(self) -> int:
        return int(self._hvd().rank())

    def size(self) -> int:
        return int(self._hvd().size())

    def local_rank(self) -> int:
        return int(self._hvd().local_rank())

    def local_size(self) -> int:
        return int(self._hvd().local_size())

    def cross_rank(self) -> int:
        return int(self._hvd().cross_rank())

    def cross_size(self) -> int:
        return int(self._hvd().cross_size())

    def _op(self, name: str):
        hvd = self._hvd()
        return dict(zip(OPS, (hvd.Average, hvd.Sum, hvd.Adasum)))[name]

    # --- tensors -------------------------------------------------------------------
    def allreduce(self, tensors: List[Any], op: str = "sum", compression: Optional[str] = None,
                  name: Optional[str] = None) -> List[Any]:
        if not tensors or self.size() == 1:
            return tensors
        import tensorflow as tf

        def compressible(t):
            return compression is not None and t.dtype.is_floating and t.shape.num_elements() not in (0, 1)

        if compression == "bf16":
            if op not in ("sum", "average"):
                raise ValueError(f"compression='bf16' supports op 'sum' or 'average'. Received: op={op!r}")
            picked = [i for i, t in enumerate(tensors) if compressible(t)]
            rest = [i for i in range(len(tensors)) if i not in set(picked)]
            out = list(tensors)
            if picked:
                summed = self._bf16_sum([tensors[i] for i in picked], average=(op == "average"), name=f"{name}_bf16")
                for i, r in zip(picked, summed):
                    out[i] = r
            if rest:
                for i, r in zip(rest, self.allreduce([tensors[i] for i in rest], op=op, name=name)):
                    out[i] = r
            return out
        dtypes = [t.dtype for t in tensors]
        if compression == "fp16":
            tensors = [tf.cast(t, tf.float16) if compressible(t) else t for t in tensors]
        # Horovod matches collectives across ranks by op name; ignore_name_scope
        # makes the name independent of where the op was traced. A grouped
        # allreduce takes one dtype: one group per dtype, in a fixed order.
        by_dtype = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype.name, []).append(i)
        out = [None] * len(tensors)
        hvd = self._hvd()
        for dtype_name in sorted(by_dtype):
            idx = by_dtype[dtype_name]
            group_name = name if len(by_dtype) == 1 or name is None else f"{name}_{dtype_name}"
            reduced = hvd.grouped_allreduce([tensors[i] for i in idx], op=self._op(op), name=group_name,
                                            ignore_name_scope=True)
            for i, r in zip(idx, reduced):
                out[i] = r
        return [tf.cast(t, d) if t.dtype != d else t for t, d in zip(out, dtypes)]

    def _bf16_sum(self, tensors, average: bool, name: str):
        """Sum float tensors with a bfloat16 payload: Horovod cannot sum bfloat16,
        so the 16-bit payloads are gathered (bit-exact) and summed in float32 on
        every rank, in rank order."""
        import tensorflow as tf

        size = self.size()
        sizes = [t.shape.num_elements() for t in tensors]
        flat = tf.concat([tf.reshape(tf.cast(t, tf.bfloat16), [-1]) for t in tensors], axis=0)
        wire = tf.bitcast(flat, tf.float16)  # same 16 bits; gathering moves them untouched
        gathered = self._hvd().allgather(wire, name=name, ignore_name_scope=True)
        values = tf.cast(tf.bitcast(gathered, tf.bfloat16), tf.float32)
        total = tf.reduce_sum(tf.reshape(values, [size, -1]), axis=0)
        if average:
            total = total / float(size)
        parts = tf.split(total, sizes)
        return [tf.cast(tf.reshape(p, t.shape), t.dtype) for p, t in zip(parts, tensors)]

    def allreduce_sparse(self, value, op: str = "sum", name: Optional[str] = None):
        if self.size() == 1:
            return value
        return self._hvd().allreduce(value, op=self._op(op), name=name, ignore_name_scope=True)

    def broadcast_variables(self, variables, root_rank: int = 0) -> None:
        if not variables or self.size() == 1:
            return
        import tensorflow as tf

        # One flat buffer per dtype: a handful of collectives, whatever the model.
        # (Horovod's broadcast_variables traces a tf.function that cannot assign
        # Keras 3 variables.)
        by_dtype = {}
        for v in variables:
            by_dtype.setdefault(tf.as_dtype(v.dtype).name, []).append(v)
        hvd = self._hvd()
        for dtype_name in sorted(by_dtype):
            group = by_dtype[dtype_name]
            flat = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1]) for v in group], axis=0)
            if flat.dtype == tf.bool:
                flat = tf.cast(flat, tf.uint8)
            out = hvd.broadcast(flat, root_rank=root_rank, name=f"hvdagent_bcast_{dtype_name}")
            offset = 0
            for v in group:
                n = 1
                for d in v.shape:
                    n *= int(d)
                v.assign(tf.cast(tf.reshape(out[offset:offset + n], v.shape), v.dtype))
                offset += n

    # --- Python objects (eager) -----------------------------------------------------
    def broadcast_object(self, obj: Any, root_rank: int = 0, name: Optional[str] = None) -> Any:
        if self.size() == 1:
            return obj
        return self._hvd().broadcast_object(obj, root_rank=root_rank, name=name)

    def allgather_object(self, obj: Any, name: Optional[str] = None) -> List[Any]:
        if self.size() == 1:
            return [obj]
        return list(self._hvd().allgather_object(obj, name=name))

    def allreduce_object(self, value: float, op: str = "sum", name: Optional[str] = None) -> float:
        if self.size() == 1:
            return value
        import tensorflow as tf

        out = self._hvd().allreduce(tf.constant(value, tf.float64), op=self._op(op), name=name)
        return float(out.numpy())

    def barrier(self) -> None:
        if self.size() == 1:
            return
        import tensorflow as tf

        # horovod.tensorflow 0.28 has no barrier(); a one-element allreduce is one.
        self.allreduce([tf.zeros([1])], op="sum", name="hvdagent_barrier")[0].numpy()
