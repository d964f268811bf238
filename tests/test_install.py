"""`hvdagent install-horovod`: what it checks, what it refuses, what it tells a user to install.

These run in one process each and compile nothing: the compilation itself is
proved by ``ci/setup.sh`` (which calls the command) and by the TensorFlow
matrix (tests/test_tensorflow_matrix.py).
"""

import argparse
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hvdagent import _install
from hvdagent._install import recipe, system

ROOT = Path(__file__).resolve().parents[1]


def _command(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "hvdagent", "install-horovod", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=str(ROOT))
    return proc.returncode, proc.stdout, proc.stderr


def _in_process(*args):
    """(exit status, printed lines) of the command run in this process."""
    parser = argparse.ArgumentParser()
    _install.add_arguments(parser)
    lines = []
    return _install.run(parser.parse_args(list(args)), out=lines.append), "\n".join(lines)


def test_find_tensorflow_reads_the_version_and_include_folder_of_the_one_that_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "tensorflow"
    (pkg / "include").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "__version__ = '2.15.1'\n"
        "class sysconfig:\n"
        "    get_include = staticmethod(lambda: __file__.rsplit('/', 1)[0] + '/include')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert recipe.find_tensorflow() == recipe.TensorFlow("2.15.1", pkg / "include")
    (pkg / "__init__.py").write_text("raise ImportError('libtensorflow_framework.so.2: cannot open')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(recipe.InstallError, match=r"TensorFlow does not import in this environment .*cannot open"
                                                  r".*pip install 'tensorflow>=2.16,<2.22'"):
        recipe.find_tensorflow()


@pytest.mark.parametrize("version", ["2.15.1", "2.22.0", "nightly"])
def test_a_tensorflow_outside_the_tested_range_is_refused_with_the_fix(tmp_path, monkeypatch, version):
    monkeypatch.setattr(recipe, "find_tensorflow", lambda python=None: recipe.TensorFlow(version, tmp_path))
    status, out = _in_process("--check")
    assert status == 1, out
    assert "TensorFlow 2.16 to 2.21" in out and f"this environment has TensorFlow {version}" in out, out
    assert "pip install 'tensorflow>=2.16,<2.22'" in out, out
    assert out.endswith(f"Received: tensorflow={version}"), out
    for ok in ("2.16.2", "2.19.0", "2.21.0"):
        recipe.check_supported(ok)


def test_check_reports_this_environment_and_its_installed_build():
    """As ci/setup.sh left it: Horovod installed by this command, nothing to build."""
    import tensorflow as tf

    status, out, err = _command("--check")
    assert status == 0, out + err
    assert f"tensorflow {tf.__version__}: supported (2.16 to 2.21)" in out
    with_mpi = "Gloo and MPI" in out
    key = recipe.wheel_key(tf.__version__, with_mpi=with_mpi)
    assert key == f"horovod-0.28.1-tf{tf.__version__}-py{'%d.%d' % sys.version_info[:2]}-" \
                  f"{'tf-gloo-mpi' if with_mpi else 'tf-gloo'}-{platform.machine()}"
    assert f"build {key}: installed" in out, out
    assert recipe.installed_key() == key
    pinned = re.search(r"^horovod==(\S+)", (ROOT / "ci" / "constraints.txt").read_text(), re.M).group(1)
    assert pinned == recipe.HOROVOD_VERSION  # one Horovod version for ci/setup.sh and the command


def _this_tensorflow(monkeypatch):
    """find_tensorflow answers for the TensorFlow this process imported (no second import)."""
    import tensorflow as tf

    found = recipe.TensorFlow(tf.__version__, Path(tf.sysconfig.get_include()))
    monkeypatch.setattr(recipe, "find_tensorflow", lambda python=None: found)


def test_missing_build_tools_are_named_with_the_command_that_installs_them(tmp_path, monkeypatch):
    """No compiler and no make on PATH: the check names both and gives the install line."""
    _this_tensorflow(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    status, out = _in_process("--check", "--force", "--mpi", "off")
    assert status == 1, out
    assert "C++ compiler: MISSING" in out and "make: MISSING" in out, out
    assert "missing: C++ compiler, make. Install them with:" in out, out
    assert system.install_line(["g++", "make"]) in out, out
    assert "highwayhash headers: TensorFlow's own" in out and "farmhash headers: TensorFlow's own" in out, out
    assert "MPI: not wanted (--mpi off): Gloo only" in out, out
    status, out = _in_process("--check", "--mpi", "on")
    assert status == 1
    assert "MPI: MISSING (no mpicxx (Open MPI's headers))" in out, out
    assert "libopenmpi-dev openmpi-bin" in out, out


@pytest.mark.parametrize("jobs", ["0", "-3", "two"])
def test_a_bad_jobs_count_is_refused_by_the_command_line(jobs, capsys):
    parser = argparse.ArgumentParser()
    _install.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--jobs", jobs])
    assert exit_.value.code == 2
    assert f"must be a whole number of at least 1. Received: jobs={jobs}" in capsys.readouterr().err


def test_forwarding_headers_bridge_the_moved_xla_includes(tmp_path):
    inc = tmp_path / "include"
    for rel in ("xla/shape.h", "xla/hlo/builder/xla_builder.h", "xla/service/hlo.pb.h"):
        (inc / rel).parent.mkdir(parents=True, exist_ok=True)
        (inc / rel).write_text("// real\n")
    out = tmp_path / "fwd"
    assert recipe.forwarding_headers(inc, out) == 4  # 3 headers + the old client/ name of the builder
    xla = out / "tensorflow" / "compiler" / "xla"
    assert (xla / "shape.h").read_text() == '#include "xla/shape.h"\n'
    assert (xla / "client" / "xla_builder.h").read_text() == '#include "xla/hlo/builder/xla_builder.h"\n'
    assert (xla / "hlo" / "builder" / "xla_builder.h").read_text() == '#include "xla/hlo/builder/xla_builder.h"\n'
    assert recipe.forwarding_headers(tmp_path / "no-xla-here", tmp_path / "fwd2") == 0


def test_tensorflow_ships_the_hash_headers_the_build_takes_from_it():
    import tensorflow as tf

    findings, folders = system.bundled_headers(Path(tf.sysconfig.get_include()))
    assert [f.found.split(" (")[0] for f in findings] == ["TensorFlow's own", "TensorFlow's own"]
    assert (folders[0] / "highwayhash" / "sip_hash.h").is_file() and (folders[1] / "farmhash.h").is_file()


def test_the_wheel_cache_folder_and_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("HVDAGENT_WHEEL_CACHE", str(tmp_path / "explicit"))
    assert recipe.default_cache() == tmp_path / "explicit"
    monkeypatch.delenv("HVDAGENT_WHEEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert recipe.default_cache() == tmp_path / "xdg" / "hvdagent" / "wheels"
    key = recipe.wheel_key("2.16.2", with_mpi=False)
    assert recipe.cached_wheel(tmp_path, key) is None
    (tmp_path / key).mkdir()
    (tmp_path / key / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    assert recipe.cached_wheel(tmp_path, key).name == "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    assert recipe.cached_wheel(tmp_path, recipe.wheel_key("2.16.2", with_mpi=True)) is None  # MPI is in the key
