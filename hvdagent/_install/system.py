"""What building Horovod needs from the machine, found without root.

Each check returns a :class:`Finding`: what was found (to print), or what is
missing and which Debian/Ubuntu packages provide it. :func:`install_line` turns
the missing ones into the exact command to run; nothing here installs system
packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

# Horovod 0.28.1's setup.py wants cmake >= 3.13; cmake 4 refuses the
# cmake_minimum_required() of the Gloo copy it builds.
CMAKE_OLDEST = (3, 13)
CMAKE_TOO_NEW = (4,)

# Headers that TensorFlow's own headers include (tsl/platform/fingerprint.h,
# xla/printer.h). TensorFlow's wheel ships both under include/external/; the
# build puts those folders on the compiler's search path, so the system
# packages (libhighwayhash-dev, libfarmhash-dev) are needed only when a
# TensorFlow wheel lacks them.
BUNDLED_HEADERS = (
    ("highwayhash", "external/highwayhash", "highwayhash/sip_hash.h", "libhighwayhash-dev"),
    ("farmhash", "external/farmhash_archive/src", "farmhash.h", "libfarmhash-dev"),
)


@dataclass(frozen=True)
class Finding:
    """One thing the build needs.

    Attributes:
        what: what was looked for ("C++ compiler").
        found: what was found, printed as is; ``""`` when it is missing.
        packages: the Debian/Ubuntu packages that provide it.
        note: a remark printed after ``found`` (a fallback that is used).
    """

    what: str
    found: str
    packages: Tuple[str, ...] = ()
    note: str = ""

    @property
    def missing(self) -> bool:
        return not self.found


def _output(cmd: Sequence[str], timeout: float = 60) -> Optional[str]:
    """stdout+stderr of ``cmd`` when it exits 0, else None."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout + proc.stderr if proc.returncode == 0 else None


def version_of(text: str) -> Tuple[int, ...]:
    """The first dotted version in ``text`` as a tuple: ``"cmake version 3.25.1"`` -> ``(3, 25, 1)``."""
    found = re.search(r"(\d+(?:\.\d+)+)", text or "")
    return tuple(int(p) for p in found.group(1).split(".")) if found else ()


def compiler() -> Finding:
    """A C++17 compiler whose standard library headers are installed (``$CXX`` first)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.cc"
        probe.write_text("#include <optional>\n#include <thread>\nint main() { std::optional<int> x; return 0; }\n")
        for name in names:
            path = shutil.which(name)
            if path and _output([path, "-std=c++17", "-fsyntax-only", str(probe)]) is not None:
                first = (_output([path, "--version"]) or "").splitlines()
                return Finding("C++ compiler", f"{first[0] if first else name} ({path})")
    return Finding("C++ compiler", "", ("g++",))


def make() -> Finding:
    path = shutil.which("make")
    text = _output([path, "--version"]) if path else None
    if text is None:
        return Finding("make", "", ("make",))
    return Finding("make", f"{text.splitlines()[0]} ({path})")


def cmake() -> Tuple[Finding, Optional[str]]:
    """(finding, path of a usable cmake or None). Looks in this environment's
    scripts folder, then on PATH; none usable is no failure: the build then
    takes a private ``cmake<4`` from PyPI."""
    seen = []
    candidates = [Path(sysconfig.get_path("scripts")) / "cmake", shutil.which("cmake")]
    for path in filter(None, candidates):
        path = str(path)
        text = _output([path, "--version"]) if os.access(path, os.X_OK) else None
        if text is None:
            continue
        version = version_of(text)
        if CMAKE_OLDEST <= version < CMAKE_TOO_NEW:
            return Finding("cmake", f"{'.'.join(map(str, version))} ({path})"), path
        seen.append(f"{'.'.join(map(str, version))} at {path}")
    note = f" (not usable: {', '.join(seen)})" if seen else ""
    return Finding("cmake", f"a private cmake>=3.13,<4 from PyPI, for the build only{note}"), None


def mpi(mode: str) -> Tuple[Finding, bool]:
    """(finding, build with MPI). ``mode``: ``"auto"`` (MPI when Open MPI's
    compiler wrapper and launcher are both present), ``"on"`` or ``"off"``."""
    packages = ("libopenmpi-dev", "openmpi-bin")
    if mode == "off":
        return Finding("MPI", "not wanted (--mpi off): Gloo only"), False
    wrapper, launcher = shutil.which("mpicxx"), shutil.which("mpirun")
    version = _output([wrapper, "--showme:version"]) if wrapper else None
    if wrapper and launcher and version and "Open MPI" in version:
        found = re.search(r"Open MPI [\d.]+", version)
        return Finding("MPI", f"{found.group(0) if found else 'Open MPI'} ({wrapper}): Gloo and MPI"), True
    why = ("no mpicxx (Open MPI's headers)" if not wrapper else
           "no mpirun" if not launcher else f"{wrapper} is not Open MPI's")
    if mode == "on":
        return Finding("MPI", "", packages, note=why), False
    return Finding("MPI", f"Gloo only ({why}); for MPI too: {install_line(packages)}"), False


def bundled_headers(tf_include: Path) -> Tuple[list, list]:
    """(findings, include folders to add) for the hash libraries TensorFlow's headers include."""
    findings, folders = [], []
    for name, rel, header, package in BUNDLED_HEADERS:
        folder = tf_include / rel
        if (folder / header).is_file():
            findings.append(Finding(f"{name} headers", f"TensorFlow's own ({folder})"))
            folders.append(folder)
        elif any((Path(d) / header).is_file() for d in ("/usr/include", "/usr/local/include")):
            findings.append(Finding(f"{name} headers", f"the system's ({header})"))
        else:
            findings.append(Finding(f"{name} headers", "", (package,)))
    return findings, folders


def _debian_like() -> bool:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    ids = " ".join(re.findall(r"^(?:ID|ID_LIKE)=\"?([^\"\n]*)", text, re.M))
    return any(d in ids.split() for d in ("debian", "ubuntu"))


def install_line(packages: Sequence[str]) -> str:
    """The command that installs ``packages`` here (Debian/Ubuntu names)."""
    packages = " ".join(dict.fromkeys(packages))
    if _debian_like():
        sudo = "" if os.geteuid() == 0 else "sudo "
        return f"{sudo}apt-get install -y {packages}"
    return f"install with your system's package manager what Debian calls: {packages}"
