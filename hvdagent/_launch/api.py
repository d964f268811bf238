"""``launch``: run a function on several Horovod processes, here or on a Ray or Spark cluster.

One public function, three engines, each in its own private module:

* ``"local"`` (:mod:`hvdagent._launch.local`): ``horovodrun --gloo`` on this
  machine, for notebooks and scripts;
* ``"ray"`` (:mod:`hvdagent._launch.ray`): Horovod's ``RayExecutor``;
* ``"spark"`` (:mod:`hvdagent._launch.spark`): ``horovod.spark.run`` on a
  SparkSession.

This module validates the arguments and serialises ``(fn, args, kwargs)``
with cloudpickle *before* any process starts, so a function that cannot be
sent (for example one that closes over a ``tf.data`` pipeline or an open file)
fails at once, with a hint. Every engine runs the same rank-side code
(:mod:`hvdagent._launch.worker`) and turns the ranks' reports into results or a
:class:`LaunchError` the same way (:mod:`hvdagent._launch.errors`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from hvdagent import _hvd
from hvdagent._hvd import HorovodUnavailableError
from hvdagent._launch.errors import LaunchError, LaunchTimeoutError
from hvdagent._runtime import validate

__all__ = ["launch", "LaunchError", "LaunchTimeoutError"]

ENGINES = ("local", "ray", "spark")

OutputSpec = Union[int, Sequence[int], str, None]


def launch(
    fn: Callable[..., Any],
    np: int = 2,
    args: Sequence[Any] = (),
    kwargs: Optional[Mapping[str, Any]] = None,
    timeout: Optional[float] = None,
    output: OutputSpec = 0,
    env: Optional[Mapping[str, str]] = None,
    verbose: bool = False,
    *,
    engine: str = "local",
) -> List[Any]:
    """Run ``fn(*args, **kwargs)`` on ``np`` Horovod processes; return every rank's result.

    ``engine`` says where the processes run: ``"local"`` (default) starts
    them on this machine with ``horovodrun``; ``"ray"`` runs them as Ray
    actors through Horovod's ``RayExecutor`` (on the Ray cluster this process
    is connected to, or the one ``RAY_ADDRESS`` names, else on a local Ray
    started for this call and stopped after it); ``"spark"`` runs them as
    Spark tasks through ``horovod.spark.run`` on the active SparkSession (or,
    without one, on a ``local[np]`` session started for this call and
    stopped after it). Results, errors and ``timeout`` behave the same in
    all three.

    Call it from a notebook, or from a script under
    ``if __name__ == "__main__":``. Inside ``fn``, hvdagent sees a real
    ``np``-process job: ``hvdagent.rank()``, ``hvdagent.size()`` and
    ``DistributedAgent`` work as under ``horovodrun``. Build models and
    datasets *inside* ``fn``: only ``fn``, ``args`` and ``kwargs`` travel to
    the workers (by cloudpickle), and Keras models, ``tf.data`` pipelines,
    locks or open files either cannot travel or would arrive as copies.

    Local workers run with the caller's environment and working directory,
    minus every ``HOROVOD_*`` variable (a Horovod initialised in the caller
    must not leak into the job; pass Horovod settings through ``env``), plus
    ``env``; Ray and Spark workers run with the environment their engine
    gives them, plus ``env``. Their output is unbuffered. Interrupting the caller (``Ctrl-C``,
    a notebook's stop button) stops every rank before the
    ``KeyboardInterrupt`` propagates.

    The errors are importable as ``from hvdagent import LaunchError,
    LaunchTimeoutError``; ``LaunchError`` is a ``RuntimeError``.

    Args:
        fn: the function every rank calls. A function defined in a notebook
            or in ``__main__`` is sent by value; one from an importable module
            by reference (the workers get the caller's ``sys.path``).
        np: the number of processes, an integer >= 1 (default 2).
        args: positional arguments for ``fn``, the same on every rank
            (default ``()``).
        kwargs: keyword arguments for ``fn`` (default None: none).
        timeout: seconds after which every rank is stopped and
            :class:`LaunchTimeoutError` is raised (default None: no limit).
            It includes the launch itself, a few seconds.
        output: whose printed output is shown live: a rank (default 0), a
            list of ranks, ``"all"``, or ``None`` for nobody. With one rank
            shown its lines appear as printed; with several, each line starts
            with ``[rank n]``.
        env: extra environment variables for the workers (default None).
        verbose: also show the launcher's (``horovodrun``'s, Ray's or
            Horovod's Spark runner's) own messages (default False; the local
            engine keeps them for error messages either way).
        engine: ``"local"`` (default), ``"ray"`` or ``"spark"``; the last two
            need ``pip install "hvdagent[ray]"`` or ``"hvdagent[spark]"``
            (Spark also needs Java 17+).

    Returns:
        The list of the ranks' return values, in rank order. Each must be
        picklable: return plain data (numbers, numpy arrays,
        ``history.history``), not models.

    Raises:
        LaunchError: a rank raised or crashed; the message names the rank
            and carries its traceback. No process of the job is left running.
        LaunchTimeoutError: ``timeout`` passed (also a ``TimeoutError``).
        TypeError: ``fn``, ``args`` or ``kwargs`` cannot be sent to the
            workers, or an argument has the wrong type.
        ValueError: an argument has a wrong value.
        RuntimeError: called from inside a launched rank, or (Spark) while
            a helper process re-imports a script that has no
            ``if __name__ == "__main__":`` guard.
        HorovodUnavailableError: Horovod is not installed.
        ImportError: the engine's packages are missing (the message says
            which extra to install).

    Example:
        >>> import hvdagent
        >>> def where_am_i(scale):
        ...     import hvdagent
        ...     return hvdagent.rank() * scale, hvdagent.size()
        >>> hvdagent.launch(where_am_i, np=2, args=(10,), output=None)  # doctest: +SKIP
        [(0, 2), (10, 2)]
    """
    np_ = _validate_np(np)
    args, kwargs = _validate_call(fn, args, kwargs)
    timeout = _validate_timeout(timeout)
    shown = _validate_output(output, np_)
    extra_env = _validate_env(env)
    engine = _validate_engine(engine)
    validate.boolean("verbose", verbose)
    if _hvd.is_launched():
        raise RuntimeError(
            "hvdagent.launch was called inside a process that is itself a launched rank "
            f"({_launcher_vars()}); a rank cannot launch another job. Call launch from the notebook "
            "or from the script's `if __name__ == \"__main__\":` block, not from the launched function"
        )
    if importlib.util.find_spec("horovod") is None:
        raise HorovodUnavailableError(
            "hvdagent.launch needs Horovod's runner (horovodrun), but horovod is not installed in "
            f"{sys.executable}'s environment. Build it with `bash ci/setup.sh` and run `python -m hvdagent doctor`."
        )
    payload = _pickle_call(fn, args, kwargs)
    context = {"sys_path": [p for p in sys.path if p]}
    if engine == "ray":
        from hvdagent._launch import ray as _launch_ray

        return _launch_ray.run(payload, context, np_, timeout, shown, extra_env, verbose)
    if engine == "spark":
        from hvdagent._launch import spark as _launch_spark

        return _launch_spark.run(payload, context, np_, timeout, shown, extra_env, verbose)
    from hvdagent._launch import local as _launch_local

    folder = Path(tempfile.mkdtemp(prefix="hvdagent-launch-"))
    try:
        (folder / "payload.pkl").write_bytes(payload)
        (folder / "context.json").write_text(json.dumps(context))
        return _launch_local.run(folder, np_, timeout, shown, extra_env, verbose)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- validation -------------------------------------------------------------------


def _validate_np(np_) -> int:
    return validate.integer("np", np_, minimum=1, hint=" (the number of processes)")


def _validate_call(fn, args, kwargs):
    if not callable(fn):
        raise TypeError(f"fn must be a callable (the function every rank runs). Received: fn={fn!r}")
    if isinstance(args, (str, bytes)) or not isinstance(args, (tuple, list)):
        raise TypeError(f"args must be a tuple or list of positional arguments. Received: args={args!r}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"kwargs must be a dict with string keys, or None. Received: kwargs={kwargs!r}")
    return tuple(args), dict(kwargs)


def _validate_timeout(timeout) -> Optional[float]:
    return validate.optional(validate.number, "timeout", timeout, minimum=0, exclusive=True,
                             hint=" (seconds), or None")


def _validate_output(output, np_: int) -> List[int]:
    if output is None:
        return []
    if output == "all":
        return list(range(np_))
    ranks = [output] if isinstance(output, int) and not isinstance(output, bool) else output
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, (list, tuple, set, range)) or not all(
        isinstance(r, int) and not isinstance(r, bool) and 0 <= r < np_ for r in ranks
    ):
        raise ValueError(
            f'output must be a rank in 0..{np_ - 1}, a list of such ranks, "all", or None. Received: output={output!r}'
        )
    return sorted(set(ranks))


def _validate_env(env) -> Dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise TypeError(f"env must be a dict of str to str, or None. Received: env={env!r}")
    return dict(env)


def _validate_engine(engine) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}. Received: engine={engine!r}")
    return engine


def _launcher_vars() -> str:
    return ", ".join(f"{k}={os.environ[k]}" for k in _hvd.LAUNCHER_ENV if k in os.environ)


def _pickle_call(fn, args, kwargs) -> bytes:
    """Serialise the call now, so that what cannot travel fails before any process starts."""
    import cloudpickle

    try:
        return cloudpickle.dumps((fn, args, kwargs))
    except Exception as err:  # noqa: BLE001 (pickling raises TypeError, PicklingError, AttributeError, ...)
        culprit = _find_unpicklable(fn, args, kwargs)
        raise TypeError(
            f"hvdagent.launch cannot send {culprit} to the worker processes: cloudpickle failed with "
            f"{type(err).__name__}: {err}. Only fn, args and kwargs travel to the workers, so everything fn "
            "uses must be picklable. Build the model, the dataset and anything holding a lock, a file or a "
            "session *inside* fn (define the model inside fn), and pass plain data (numbers, strings, "
            f"numpy arrays) as arguments. Received: fn={fn!r}"
        ) from err


def _find_unpicklable(fn, args, kwargs) -> str:
    import cloudpickle

    candidates = [("fn", fn)] + [(f"args[{i}]", a) for i, a in enumerate(args)]
    candidates += [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    for name, value in candidates:
        try:
            cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001
            return name
    return "the call"
