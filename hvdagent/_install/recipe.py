"""The recipe: Horovod 0.28.1 compiled for one TensorFlow, as a cached wheel.

Horovod 0.28.1 (its last release) does not build as is against the
TensorFlow of the Keras 3 era; the workarounds, each applied without editing
Horovod's source:

* TensorFlow >= 2.19 ships XLA's headers as ``xla/...`` (and moved
  ``xla/client/xla_builder.h`` to ``xla/hlo/builder/``) while Horovod includes
  ``tensorflow/compiler/xla/...``: one-line forwarding headers on
  ``CPLUS_INCLUDE_PATH``, searched after TensorFlow's own include folder, so a
  real header always wins;
* TensorFlow's headers include highwayhash and farmhash, which it ships under
  ``include/external/``: those folders go on the same path;
* cmake 4 refuses Gloo's old ``CMakeLists.txt``: a cmake below 4 (the
  machine's, or a private one from PyPI) and ``CMAKE_POLICY_VERSION_MINIMUM``;
* Horovod's build imports TensorFlow: ``pip wheel --no-build-isolation``, with
  ``setuptools<81`` and ``wheel`` from a private folder rather than the user's
  environment.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

HOROVOD_VERSION = "0.28.1"
TF_OLDEST, TF_NEWEST = (2, 16), (2, 21)
# Horovod's own runtime requirements (its wheel is installed with --no-deps).
HOROVOD_REQUIRES = ("cloudpickle", "psutil", "pyyaml", "packaging")
BUILD_TOOLS = ("setuptools<81", "wheel", "packaging")
MARKER = ".hvdagent-horovod-key"  # in sys.prefix: which build is installed (read by doctor)


class InstallError(RuntimeError):
    """A step failed; the message says what to do."""


@dataclass(frozen=True)
class TensorFlow:
    version: str
    include: Path


def find_tensorflow(python: str = sys.executable) -> TensorFlow:
    code = "import tensorflow as tf; print(tf.__version__); print(tf.sysconfig.get_include())"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InstallError(
            f"TensorFlow does not import in this environment ({python}): {last}. Install it first, e.g. "
            f"`{python} -m pip install 'tensorflow>={TF_OLDEST[0]}.{TF_OLDEST[1]},<{TF_NEWEST[0]}.{TF_NEWEST[1] + 1}'`."
        )
    return TensorFlow(lines[-2].strip(), Path(lines[-1].strip()))


def check_supported(version: str) -> None:
    """Raise InstallError unless ``version`` is a TensorFlow this recipe is tested with."""
    parts = version.split(".")
    try:
        minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        minor = None
    if minor is None or not TF_OLDEST <= minor <= TF_NEWEST:
        oldest, newest = "%d.%d" % TF_OLDEST, "%d.%d" % TF_NEWEST
        raise InstallError(
            f"hvdagent builds Horovod {HOROVOD_VERSION} for TensorFlow {oldest} to {newest} (the Keras 3 era), "
            f"the versions it is tested with; this environment has TensorFlow {version}. Install a supported one "
            f"(`pip install 'tensorflow>={oldest},<{TF_NEWEST[0]}.{TF_NEWEST[1] + 1}'`) and run again. "
            f"Received: tensorflow={version}"
        )


def wheel_key(tf_version: str, with_mpi: bool) -> str:
    """The cache key: everything the compiled wheel depends on."""
    flags = "tf-gloo-mpi" if with_mpi else "tf-gloo"
    python = "%d.%d" % sys.version_info[:2]
    return f"horovod-{HOROVOD_VERSION}-tf{tf_version}-py{python}-{flags}-{platform.machine()}"


def default_cache() -> Path:
    if os.environ.get("HVDAGENT_WHEEL_CACHE"):
        return Path(os.environ["HVDAGENT_WHEEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hvdagent" / "wheels"


def cached_wheel(cache: Path, key: str) -> Optional[Path]:
    wheels = sorted((cache / key).glob("horovod-*.whl"))
    return wheels[0] if wheels else None


def forwarding_headers(tf_include: Path, dest: Path) -> int:
    """Write ``dest/tensorflow/compiler/xla/X`` -> ``#include "xla/X"`` for each
    header TensorFlow ships under ``xla/`` (plus the old ``client/`` name of each
    ``hlo/builder/`` header). Returns how many were written."""
    xla = tf_include / "xla"
    count = 0
    for header in sorted(xla.rglob("*.h")) if xla.is_dir() else []:
        rest = header.relative_to(xla).as_posix()
        olds = [rest]
        if rest.startswith("hlo/builder/"):
            olds.append("client/" + rest[len("hlo/builder/"):])
        for old in olds:
            target = dest / "tensorflow" / "compiler" / "xla" / old
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f'#include "xla/{rest}"\n')
            count += 1
    return count


def _pip(python: str, args: Sequence[str], log: Path, env=None, timeout: float = 900) -> None:
    cmd = [python, "-m", "pip", *args]
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(True)[-15:])
        raise InstallError(f"`pip {' '.join(args[:2])} ...` failed (exit {proc.returncode}):\n{tail}")


def build_wheel(*, tf: TensorFlow, with_mpi: bool, cmake: Optional[str], extra_includes: Sequence[Path],
                out_dir: Path, cache: Path, jobs: int, say: Callable[[str], None]) -> Path:
    """Compile Horovod into a wheel under ``out_dir``; return its path."""
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="hvdagent-horovod-build-") as tmp:
        tmp = Path(tmp)
        log = tmp / "build.log"
        tools = tmp / "tools"
        _pip(python, ["install", "-q", "--disable-pip-version-check", "--target", str(tools), *BUILD_TOOLS,
                      *([] if cmake else ["cmake>=3.13,<4"])], log)
        cmake_dir = str(Path(cmake).parent) if cmake else str(tools / "cmake" / "data" / "bin")
        forwards = forwarding_headers(tf.include, tmp / "include")
        if forwards:
            say(f"XLA forwarding headers: {forwards} (tensorflow/compiler/xla/... -> xla/...)")
        env = dict(os.environ)
        includes = [str(tmp / "include"), *map(str, extra_includes), env.get("CPLUS_INCLUDE_PATH", "")]
        env.update({
            "CPLUS_INCLUDE_PATH": os.pathsep.join(filter(None, includes)),
            "PATH": os.pathsep.join([cmake_dir, str(Path(python).parent), env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tools), env.get("PYTHONPATH", "")])),
            "CMAKE_POLICY_VERSION_MINIMUM": "3.5",
            "HOROVOD_WITH_TENSORFLOW": "1", "HOROVOD_WITH_GLOO": "1",
            "HOROVOD_WITHOUT_PYTORCH": "1", "HOROVOD_WITHOUT_MXNET": "1",
            "MAKEFLAGS": f"-j{jobs}",
        })
        env.pop("HOROVOD_WITHOUT_MPI" if with_mpi else "HOROVOD_WITH_MPI", None)
        env["HOROVOD_WITH_MPI" if with_mpi else "HOROVOD_WITHOUT_MPI"] = "1"
        cmd = [python, "-m", "pip", "wheel", "-v", "--disable-pip-version-check", "--no-build-isolation",
               "--no-deps", "--no-cache-dir", "-w", str(tmp / "wheel"), f"horovod=={HOROVOD_VERSION}"]
        start = time.monotonic()
        with open(log, "a") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            last = start
            try:
                while proc.poll() is None:
                    time.sleep(2)
                    if time.monotonic() - last >= 60:
                        last = time.monotonic()
                        say(f"  still building ({(last - start) / 60:.0f} min, {_progress(log)})")
            except BaseException:  # Ctrl-C: stop the compilation before its folder is removed
                proc.kill()
                proc.wait()
                raise
        if proc.returncode != 0:
            cache.mkdir(parents=True, exist_ok=True)
            kept = cache / "last-build.log"
            kept.write_text(log.read_text())
            raise InstallError(f"compiling Horovod failed:\n{_errors(log)}\nThe whole log: {kept}")
        built = sorted((tmp / "wheel").glob("horovod-*.whl"))
        if not built:
            raise InstallError(f"pip wheel made no Horovod wheel in {tmp / 'wheel'}")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / built[0].name
        shutil.copy2(built[0], target)
        say(f"compiled in {(time.monotonic() - start) / 60:.1f} min")
        return target


def _progress(log: Path) -> str:
    steps = re.findall(r"^\s*\[\s*(\d+)%\]", log.read_text(errors="replace"), re.M)
    return f"{steps[-1]}% of the compilation" if steps else "configuring"


def _errors(log: Path, keep: int = 20) -> str:
    lines = log.read_text(errors="replace").splitlines()
    errors = [ln for ln in lines if "error:" in ln or "fatal" in ln.lower() or "Error " in ln][:keep]
    return "\n".join(errors + ["..."] + lines[-10:])


def install_wheel(wheel: Path, key: str, say: Callable[[str], None]) -> None:
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "pip.log"
        _pip(python, ["install", "-q", "--disable-pip-version-check", "--force-reinstall", "--no-deps", str(wheel)], log)
        _pip(python, ["install", "-q", "--disable-pip-version-check", *HOROVOD_REQUIRES], log)
    (Path(sys.prefix) / MARKER).write_text(key + "\n")
    say(f"installed {wheel.name} into {sys.prefix}")


def installed_key() -> Optional[str]:
    """The key of the build this command installed here, if Horovod is still installed."""
    from importlib import metadata

    try:
        if metadata.version("horovod") != HOROVOD_VERSION:
            return None
        return (Path(sys.prefix) / MARKER).read_text().strip()
    except (OSError, metadata.PackageNotFoundError):
        return None
