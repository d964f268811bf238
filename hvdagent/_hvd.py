"""The seam: the only module of hvdagent that imports Horovod.

Every collective hvdagent issues goes through the functions below. Horovod is
imported lazily, on the first call that needs it, so ``import hvdagent`` works
in a process where Horovod is missing or broken; that first call then raises
:class:`HorovodUnavailableError` pointing at ``python -m hvdagent doctor``.

With one process (``size() == 1``) every collective returns its input
unchanged without touching Horovod's background thread: the single-process
path costs nothing.
"""

from __future__ import annotations

import os
import threading
from typing import Any, List, Optional, Sequence

__all__ = [
    "HorovodUnavailableError",
    "init",
    "is_initialized",
    "is_launched",
    "rank",
    "size",
    "local_rank",
    "local_size",
    "allreduce",
    "broadcast_variables",
    "broadcast_object",
    "allgather_object",
    "allreduce_object",
    "barrier",
    "shutdown",
]

_LOCK = threading.Lock()
# The name of the eager collective this process is blocked in, if any (read by
# the stall watchdog to tell "waiting for the others" from "stuck elsewhere").
WAITING_IN: Optional[str] = None
_HVD = None  # the horovod.tensorflow module once imported
_IMPORT_ERROR: Optional[BaseException] = None

# Environment variables by which a launcher tells a process its rank.
_LAUNCHER_ENV = (
    "HOROVOD_RANK",  # horovodrun --gloo, hvdagent.launch
    "OMPI_COMM_WORLD_RANK",  # Open MPI's mpirun / horovodrun --mpi
    "PMI_RANK",  # MPICH, Intel MPI
    "PMIX_RANK",
)


class HorovodUnavailableError(RuntimeError):
    """Horovod is missing, broken, or built against another TensorFlow."""


def is_launched() -> bool:
    """True when this process was started by a Horovod/MPI launcher."""
    return any(name in os.environ for name in _LAUNCHER_ENV)


def _module():
    """Import ``horovod.tensorflow`` once; raise a helpful error if it fails."""
    global _HVD, _IMPORT_ERROR
    if _HVD is not None:
        return _HVD
    if _IMPORT_ERROR is not None:
        raise _unavailable(_IMPORT_ERROR)
    try:
        import horovod.tensorflow as hvd  # noqa: WPS433 (the one import)
    except BaseException as err:  # ImportError, or OSError/NotFoundError for ABI breaks
        if isinstance(err, KeyboardInterrupt):
            raise
        _IMPORT_ERROR = err
        raise _unavailable(err) from err
    _HVD = hvd
    return hvd


def _unavailable(err: BaseException) -> HorovodUnavailableError:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, ModuleNotFoundError):
        hint = "Horovod is not installed in this environment. Build it against your TensorFlow with `bash ci/setup.sh`"
    else:
        hint = (
            "Horovod is installed but does not load; this usually means it was built against "
            "another TensorFlow (for example before a TensorFlow upgrade). Rebuild it with "
            "`HVDAGENT_FORCE_SETUP=1 bash ci/setup.sh`"
        )
    return HorovodUnavailableError(
        f"hvdagent needs Horovod for this call, but importing horovod.tensorflow failed ({text}). "
        f"{hint}, and run `python -m hvdagent doctor` for a full report."
    )


def probe():
    """For the doctor: ``(horovod version or None, horovod.tensorflow or None, error or None)``.

    Never raises: a missing or broken Horovod is what the doctor reports.
    """
    try:
        import horovod
    except ImportError as err:
        return None, None, err
    try:
        return horovod.__version__, _module(), None
    except HorovodUnavailableError as err:
        return horovod.__version__, None, err.__cause__ or _IMPORT_ERROR or err


def init() -> None:
    """Initialise Horovod once; later calls do nothing.

    Run without a launcher (plain ``python script.py``), Horovod starts as a
    single Gloo process, so no MPI runtime is needed for the size-1 path.
    """
    hvd = _module()
    with _LOCK:
        if hvd.is_initialized():
            return
        # A rank that waits longer than this for the others is reported as
        # stalled and the job ends (Horovod's default only warns, forever).
        os.environ.setdefault("HOROVOD_STALL_CHECK_TIME_SECONDS", "30")
        os.environ.setdefault("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "60")
        # Horovod's background loop sleeps this long (ms) between negotiation
        # cycles; 5 ms by default. 0.1 ms halved small-allreduce latency and
        # gave +16% training throughput on the benchmark (docs/benchmarks.md).
        os.environ.setdefault("HOROVOD_CYCLE_TIME", "0.1")
        if not is_launched():
            # A Horovod built with MPI would otherwise try MPI_Init as a
            # singleton; a lone Gloo context is cheaper and needs nothing.
            os.environ.setdefault("HOROVOD_CONTROLLER", "gloo")
            os.environ.setdefault("HOROVOD_CPU_OPERATIONS", "gloo")
        hvd.init()


def is_initialized() -> bool:
    if _HVD is None:
        return False
    return bool(_HVD.is_initialized())


def _ready():
    hvd = _module()
    if not hvd.is_initialized():
        init()
    return hvd


def rank() -> int:
    return int(_ready().rank())


def size() -> int:
    return int(_ready().size())


def local_rank() -> int:
    return int(_ready().local_rank())


def local_size() -> int:
    return int(_ready().local_size())


def shutdown() -> None:
    if _HVD is not None and _HVD.is_initialized():
        _HVD.shutdown()


# --- collectives ------------------------------------------------------------

_OPS = ("average", "sum", "adasum")


def _op(name: str):
    hvd = _ready()
    return {"average": hvd.Average, "sum": hvd.Sum, "adasum": hvd.Adasum}[name]


def allreduce(
    tensors: Sequence[Any],
    op: str = "sum",
    compression: Optional[str] = None,
    name: Optional[str] = None,
) -> List[Any]:
    """Reduce a list of dense tensors across ranks in one fused collective.

    Works eagerly and inside ``tf.function``. ``compression`` is ``None``,
    ``"fp16"`` or ``"bf16"``: floating tensors of two or more elements travel
    in that type and come back in their own (scalars, such as batch counts,
    always travel exactly). Horovod cannot sum bfloat16, so with ``"bf16"``
    the 16-bit payloads are gathered (one allgather, bit-exact) and summed in
    float32 on every rank, in rank order: as few bytes as a ring allreduce for
    2 ranks, with float32 accumulation.
    """
    tensors = list(tensors)
    if not tensors or size() == 1:
        return tensors
    import tensorflow as tf

    hvd = _ready()

    def compressible(t):
        return compression is not None and t.dtype.is_floating and t.shape.num_elements() not in (0, 1)

    if compression == "bf16" and op in ("sum", "average"):
        picked = [i for i, t in enumerate(tensors) if compressible(t)]
        rest = [i for i in range(len(tensors)) if i not in set(picked)]
        out = list(tensors)
        if picked:
            for i, r in zip(picked, _bf16_sum([tensors[i] for i in picked], average=(op == "average"), name=f"{name}_bf16")):
                out[i] = r
        if rest:
            for i, r in zip(rest, allreduce([tensors[i] for i in rest], op=op, compression=None, name=name)):
                out[i] = r
        return out
    if compression == "bf16":
        raise ValueError(f"compression='bf16' supports op 'sum' or 'average'. Received: op={op!r}")
    dtypes = [t.dtype for t in tensors]
    if compression == "fp16":
        tensors = [tf.cast(t, tf.float16) if compressible(t) else t for t in tensors]
    # Horovod matches collectives across ranks by op name. ignore_name_scope
    # makes the name independent of where the op was traced (for example the
    # two branches of the agent's empty-batch tf.cond).
    # A grouped allreduce takes one dtype: one group per dtype, in a fixed order.
    by_dtype = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype.name, []).append(i)
    out = [None] * len(tensors)
    for dtype_name in sorted(by_dtype):
        idx = by_dtype[dtype_name]
        group_name = name if len(by_dtype) == 1 or name is None else f"{name}_{dtype_name}"
        reduced = hvd.grouped_allreduce([tensors[i] for i in idx], op=_op(op), name=group_name, ignore_name_scope=True)
        for i, r in zip(idx, reduced):
            out[i] = r
    return [tf.cast(t, d) if t.dtype != d else t for t, d in zip(out, dtypes)]


def _bf16_sum(tensors, average: bool, name: str):
    """Sum float tensors across ranks with a bfloat16 payload (see allreduce)."""
    import tensorflow as tf

    hvd = _ready()
    sizes = [t.shape.num_elements() for t in tensors]
    flat = tf.concat([tf.reshape(tf.cast(t, tf.bfloat16), [-1]) for t in tensors], axis=0)
    wire = tf.bitcast(flat, tf.float16)  # same 16 bits; gathering moves them untouched
    gathered = hvd.allgather(wire, name=name, ignore_name_scope=True)
    values = tf.cast(tf.bitcast(gathered, tf.bfloat16), tf.float32)
    total = tf.reduce_sum(tf.reshape(values, [size(), -1]), axis=0)
    if average:
        total = total / float(size())
    parts = tf.split(total, sizes)
    return [tf.cast(tf.reshape(p, t.shape), t.dtype) for p, t in zip(parts, tensors)]


def allreduce_sparse(value, op: str = "sum", name: Optional[str] = None):
    """Reduce a ``tf.IndexedSlices`` by gathering indices and values."""
    if size() == 1:
        return value
    return _ready().allreduce(value, op=_op(op), name=name, ignore_name_scope=True)


def broadcast_variables(variables: Sequence[Any], root_rank: int = 0) -> None:
    """Overwrite ``variables`` on every rank with ``root_rank``'s values."""
    variables = list(variables)
    if not variables or size() == 1:
        return
    import tensorflow as tf

    hvd = _ready()
    # One flat buffer per dtype: a handful of collectives, whatever the model.
    # (Horovod's broadcast_variables traces a tf.function that cannot assign
    # Keras 3 variables.)
    by_dtype = {}
    for v in variables:
        by_dtype.setdefault(tf.as_dtype(v.dtype).name, []).append(v)
    for dtype_name in sorted(by_dtype):
        group = by_dtype[dtype_name]
        flat = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1]) for v in group], axis=0)
        if flat.dtype == tf.bool:
            flat = tf.cast(flat, tf.uint8)
        out = hvd.broadcast(flat, root_rank=root_rank, name=f"hvdagent_bcast_{dtype_name}")
        offset = 0
        for v in group:
            n = int(np_prod(v.shape))
            value = tf.reshape(out[offset:offset + n], v.shape)
            v.assign(tf.cast(value, v.dtype))
            offset += n


def broadcast_object(obj: Any, root_rank: int = 0, name: Optional[str] = None) -> Any:
    """Return ``root_rank``'s picklable ``obj`` on every rank."""
    if size() == 1:
        return obj
    with _waiting(name or "broadcast_object"):
        return _ready().broadcast_object(obj, root_rank=root_rank, name=name)


def allgather_object(obj: Any, name: Optional[str] = None) -> List[Any]:
    """Return the list of every rank's picklable ``obj``, in rank order."""
    if size() == 1:
        return [obj]
    with _waiting(name or "allgather_object"):
        return list(_ready().allgather_object(obj, name=name))


def allreduce_object(value: float, op: str = "sum", name: Optional[str] = None) -> float:
    """Reduce one Python number across ranks (eagerly)."""
    if size() == 1:
        return value
    import tensorflow as tf

    with _waiting(name or "allreduce_object"):
        out = _ready().allreduce(tf.constant(value, tf.float64), op=_op(op), name=name)
        return float(out.numpy())


class _waiting:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        global WAITING_IN
        WAITING_IN = self.name

    def __exit__(self, *exc):
        global WAITING_IN
        WAITING_IN = None
        return False


def barrier() -> None:
    """Block until every rank reaches this point."""
    if size() == 1:
        return
    import tensorflow as tf

    # horovod.tensorflow 0.28 has no barrier(); a one-element allreduce is one.
    with _waiting("barrier"):
        allreduce([tf.zeros([1])], op="sum", name="hvdagent_barrier")[0].numpy()


def np_prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


# --- the launcher's key-value store (heartbeats for stall reports) -------------

def _kv_address():
    addr = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
    port = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT")
    return (addr, port) if addr and port else None


def kv_put(key: str, value: Any) -> bool:
    """Store ``value`` under ``key`` in horovodrun's Gloo rendezvous store.

    Returns False (and stores nothing) when the job was not started by a Gloo
    launcher or the store is gone; never raises.
    """
    where = _kv_address()
    if where is None:
        return False
    try:
        from horovod.runner.http.http_client import put_data_into_kvstore

        put_data_into_kvstore(where[0], where[1], "hvdagent", key, value)
        return True
    except Exception:  # noqa: BLE001 (best effort: the store is a diagnostic aid)
        return False


def kv_get(key: str) -> Any:
    """Read ``key`` back (None when absent or unavailable); never raises."""
    where = _kv_address()
    if where is None:
        return None
    try:
        from horovod.runner.http.http_client import read_data_from_kvstore

        return read_data_from_kvstore(where[0], where[1], "hvdagent", key)
    except Exception:  # noqa: BLE001
        return None


# --- elastic training (horovodrun --min-np/--max-np) --------------------------

def make_elastic_state(hooks):
    """A Horovod elastic ``State`` whose save/restore/sync/reset call ``hooks``.

    The class is defined inside this function only to keep the Horovod import
    lazy; it is the same small adapter every time.
    """
    from horovod.common.elastic import State

    class HookState(State):
        def __init__(self):
            super().__init__(bcast_object=broadcast_object, get_rank=rank)

        def save(self):
            hooks.save()

        def restore(self):
            hooks.restore()

        def sync(self):
            hooks.sync()

        def reset(self):
            hooks.reset()

    return HookState()


def elastic_run(func):
    """Horovod's elastic retry loop around ``func(state, ...)``.

    Collective failures surface from Keras as TensorFlow errors; they are
    turned into Horovod's ``HorovodInternalError`` so that the loop restores
    the last commit, re-initialises Horovod with the new set of workers, and
    calls ``func`` again.
    """
    from horovod.common.elastic import run_fn
    from horovod.common.exceptions import HorovodInternalError

    import tensorflow as tf

    def wrapper(state, *args, **kwargs):
        try:
            return func(state, *args, **kwargs)
        except (tf.errors.UnknownError, tf.errors.InternalError, tf.errors.AbortedError) as err:
            if "Horovod" in str(err):
                raise HorovodInternalError(err) from err
            raise

    def reset():
        hvd = _module()
        hvd.shutdown()
        hvd.init()

    return run_fn(wrapper, reset)


# --- Horovod's Keras API (hvdagent top level, hvdagent.elastic) ----------------
# Used by hvdagent/_horovod_api.py and hvdagent/elastic.py only: the names of
# `horovod.tensorflow.keras` that hvdagent offers with Horovod's meaning.


def _api_module():
    """``horovod.tensorflow``, initialised (``init`` raises the helpful error)."""
    init()
    import horovod.tensorflow as hvd_tf

    return hvd_tf


def cross_rank() -> int:
    """This machine's index among the machines of the job."""
    return int(_api_module().cross_rank())


def cross_size() -> int:
    """The number of machines in the job."""
    return int(_api_module().cross_size())


def built(what: str) -> bool:
    """Whether Horovod was built with ``what``: "mpi", "gloo" or "nccl"."""
    return bool(getattr(_api_module(), f"{what}_built")())


def enabled(what: str) -> bool:
    """Whether this job runs on ``what``'s controller: "mpi" or "gloo"."""
    return bool(getattr(_api_module(), f"{what}_enabled")())


def allgather_tensor(value, name: Optional[str] = None):
    """Concatenate every rank's tensor along the first axis, in rank order."""
    import tensorflow as tf

    tensor = tf.convert_to_tensor(value)
    if size() == 1:
        return tensor
    with _waiting(name or "allgather"):
        return _api_module().allgather(tensor, name=name)


def broadcast_tensor(value, root_rank: int, name: Optional[str] = None):
    """``root_rank``'s tensor on every rank."""
    import tensorflow as tf

    tensor = tf.convert_to_tensor(value)
    if size() == 1:
        return tensor
    with _waiting(name or "broadcast"):
        return _api_module().broadcast(tensor, root_rank=root_rank, name=name)


def api_elastic_state(owner):
    """A Horovod elastic ``State`` whose save/restore/sync/reset call ``owner``'s
    ``_save``/``_restore``/``_sync``/``_reset`` (for :class:`hvdagent.elastic.KerasState`).

    Defined here so that only this module imports Horovod.
    """
    from horovod.common.elastic import State

    class _OwnerState(State):
        def __init__(self):
            super().__init__(bcast_object=broadcast_object, get_rank=rank)

        def save(self):
            owner._save()

        def restore(self):
            owner._restore()

        def sync(self):
            owner._sync()

        def reset(self):
            owner._reset()

    return _OwnerState()


def api_elastic_run(func):
    """Horovod's elastic retry loop (``horovod.common.elastic.run_fn``) around ``func``.

    A collective that fails because a worker went away surfaces from Keras as
    a TensorFlow error naming Horovod; it becomes ``HorovodInternalError`` so
    that the loop restores the last commit and re-forms the job.
    """
    import tensorflow as tf
    from horovod.common.elastic import run_fn
    from horovod.common.exceptions import HorovodInternalError

    def wrapper(state, *args, **kwargs):
        try:
            return func(state, *args, **kwargs)
        except (tf.errors.UnknownError, tf.errors.InternalError, tf.errors.AbortedError) as err:
            if "Horovod" in str(err):
                raise HorovodInternalError(err) from err
            raise

    def reset():
        hvd_tf = _api_module()
        hvd_tf.shutdown()
        hvd_tf.init()

    return run_fn(wrapper, reset)
