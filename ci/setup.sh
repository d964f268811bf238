#!/usr/bin/env bash
# Set up everything hvdagent needs, idempotently: Debian build packages, a
# virtual environment with the pinned TensorFlow/Keras stack, Horovod built
# from PyPI against that TensorFlow (cached as a wheel keyed by the Horovod,
# TensorFlow and Python versions), a health check, and hvdagent itself.
#
#   bash ci/setup.sh            # what `make demo` and `make test` run first
#
# Environment knobs:
#   HVDAGENT_VENV         where the virtual environment lives (default: .venv)
#   HVDAGENT_WHEEL_CACHE  where built Horovod wheels are kept
#                         (default: ${XDG_CACHE_HOME:-~/.cache}/hvdagent/wheels)
#   HVDAGENT_FORCE_SETUP  set to 1 to redo every step
#   HVDAGENT_ENGINES      set to 0 to leave out the cluster engines (the ray and
#                         spark extras and Java), which only the tests marked
#                         `ray` and `spark` need (default: 1, what CI runs; with 0,
#                         run the tests as ci/test.sh -m "not ray and not spark")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${HVDAGENT_VENV:-$ROOT/.venv}
CACHE=${HVDAGENT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hvdagent/wheels}
CONSTRAINTS=$ROOT/ci/constraints.txt
PY=$VENV/bin/python

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"; }

TF_VERSION=$(pin tensorflow)
HVD_VERSION=$(pin horovod)
[ -n "$TF_VERSION" ] && [ -n "$HVD_VERSION" ] || die "could not read the TensorFlow/Horovod pins from $CONSTRAINTS"

# --- fast path: nothing that setup depends on changed since the last success
ENGINES=${HVDAGENT_ENGINES:-1}
case "$ENGINES" in 0|1) ;; *) die "HVDAGENT_ENGINES must be 0 or 1. Received: HVDAGENT_ENGINES=$ENGINES";; esac
STAMP_KEY=$( (cat ci/setup.sh "$CONSTRAINTS" pyproject.toml; echo "engines=$ENGINES") | sha256sum | cut -c1-16)
STAMP=$VENV/.hvdagent-setup-$STAMP_KEY
if [ "${HVDAGENT_FORCE_SETUP:-0}" != 1 ] && [ -f "$STAMP" ] \
   && "$PY" -c 'import horovod.tensorflow, hvdagent' >/dev/null 2>&1; then
  say "already set up (delete $STAMP or set HVDAGENT_FORCE_SETUP=1 to redo)"
  exit 0
fi
START=$(date +%s)

# --- 1. Debian packages needed to build Horovod (and Java for Spark) --------
APT_PKGS="cmake g++ make libhighwayhash-dev libfarmhash-dev libopenmpi-dev openmpi-bin"
[ "$ENGINES" = 1 ] && APT_PKGS="$APT_PKGS openjdk-17-jre-headless"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing system packages:$missing (no apt-get here: install them with your package manager)"
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing system packages:$missing; run as root or install them: apt-get install$missing"
    SUDO=sudo
  fi
  say "installing system packages:$missing"
  $SUDO apt-get update -qq || die "apt-get update failed; cannot install:$missing"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null \
    || die "apt-get install failed for:$missing"
fi

# --- 1b. what the multi-host test bed (ci/hosts.sh) needs: ip, sshd --------
# Only installed when missing. The package's post-install script must not
# start a system-wide sshd: a temporary policy-rc.d forbids service starts
# while it installs (only when none exists already).
HOSTS_PKGS=""
command -v ip >/dev/null 2>&1 || HOSTS_PKGS="$HOSTS_PKGS iproute2"
[ -x /usr/sbin/sshd ] || HOSTS_PKGS="$HOSTS_PKGS openssh-server"
command -v ssh >/dev/null 2>&1 || HOSTS_PKGS="$HOSTS_PKGS openssh-client"
if [ -n "$HOSTS_PKGS" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing the multi-host test bed's packages:$HOSTS_PKGS"
    POLICY=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      POLICY=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' > "$POLICY" && chmod +x "$POLICY"
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $HOSTS_PKGS >/dev/null \
      || { [ -z "$POLICY" ] || rm -f "$POLICY"; die "apt-get install failed for:$HOSTS_PKGS"; }
    [ -z "$POLICY" ] || rm -f "$POLICY"
  else
    say "not root (or no apt-get): the multi-host tests need$HOSTS_PKGS and will be skipped"
  fi
fi

# --- 2. virtual environment with the pinned stack ----------------------------
if [ ! -x "$PY" ]; then
  say "creating virtual environment $VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
EXTRAS=test,notebooks
[ "$ENGINES" = 1 ] && EXTRAS=$EXTRAS,ray,spark
say "installing the pinned TensorFlow/Keras stack, hvdagent (editable) and its extras [$EXTRAS] (pip)"
"$PY" -m pip install -q --disable-pip-version-check --upgrade pip wheel 'setuptools<81'
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" \
  "tensorflow==$TF_VERSION" keras tf-keras 'cmake<4' -e "$ROOT[$EXTRAS]"

PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
TF_ACTUAL=$("$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null) \
  || die "TensorFlow does not import in $VENV"
[ "$TF_ACTUAL" = "$TF_VERSION" ] || die "TensorFlow $TF_ACTUAL is installed, $TF_VERSION is pinned"

# --- 3. Horovod, built against this TensorFlow (or taken from the cache) -----
HVD_FLAGS=tf-gloo-mpi
KEY="horovod-$HVD_VERSION-tf$TF_VERSION-py$PYVER-$HVD_FLAGS-$(uname -m)"
WHEEL_DIR=$CACHE/$KEY
hvd_ok() {
  "$PY" - "$HVD_VERSION" <<'EOF' >/dev/null 2>&1
import sys, horovod, horovod.tensorflow as hvd
assert horovod.__version__ == sys.argv[1]
assert hvd.gloo_built()
EOF
}
# A Horovod installed by an earlier run may be built for another TensorFlow:
# the marker file records which one.
MARKER=$VENV/.hvdagent-horovod-key
if hvd_ok && [ "$(cat "$MARKER" 2>/dev/null)" = "$KEY" ]; then
  say "Horovod $HVD_VERSION already installed for TensorFlow $TF_VERSION"
else
  wheel=$(ls "$WHEEL_DIR"/horovod-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    say "building Horovod $HVD_VERSION against TensorFlow $TF_VERSION (4-8 minutes on 2 cores)"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    TF_INC=$("$PY" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())')
    # TensorFlow >= 2.19 ships XLA's headers as xla/... (and moved
    # xla/client/xla_builder.h to xla/hlo/builder/); Horovod 0.28.1 still
    # includes tensorflow/compiler/xla/.... Forwarding headers on
    # CPLUS_INCLUDE_PATH (searched after TensorFlow's own include dir, so real
    # headers win) bridge the two without editing Horovod's source.
    FWD=$BUILD/include
    if [ -d "$TF_INC/xla" ]; then
      (cd "$TF_INC" && find xla -name '*.h') | while read -r h; do
        rest=${h#xla/}
        for old in "$rest" $(case "$rest" in hlo/builder/*) echo "client/${rest#hlo/builder/}";; esac); do
          mkdir -p "$FWD/tensorflow/compiler/xla/$(dirname "$old")"
          printf '#include "%s"\n' "$h" > "$FWD/tensorflow/compiler/xla/$old"
        done
      done
    fi
    export CPLUS_INCLUDE_PATH="$FWD${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
    # pip's cmake 4.x refuses Gloo's old CMakeLists: use the venv's cmake<4.
    export PATH="$VENV/bin:$PATH" CMAKE_POLICY_VERSION_MINIMUM=3.5
    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
           HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
           MAKEFLAGS="-j$(nproc)"
    cmake_v=$(cmake --version | head -n 1)
    case "$cmake_v" in *" 4."*) die "cmake 4.x is first on PATH ($cmake_v); Gloo needs cmake<4";; esac
    if ! "$PY" -m pip wheel -v --no-build-isolation --no-deps --no-cache-dir \
         -w "$BUILD/wheel" "horovod==$HVD_VERSION" >"$BUILD/build.log" 2>&1; then
      mkdir -p "$CACHE" && cp "$BUILD/build.log" "$CACHE/last-build.log"
      grep -E "error:|Error [0-9]|fatal" "$BUILD/build.log" | head -n 20 >&2 || true
      tail -n 15 "$BUILD/build.log" >&2
      die "building Horovod failed (errors above; full log: $CACHE/last-build.log)"
    fi
    mkdir -p "$WHEEL_DIR"
    cp "$BUILD"/wheel/horovod-*.whl "$WHEEL_DIR/"
    wheel=$(ls "$WHEEL_DIR"/horovod-*.whl | head -n 1)
    say "cached $wheel"
  else
    say "reusing cached Horovod wheel $wheel"
  fi
  "$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
  # Horovod's own runtime dependencies (its wheel was installed without them).
  "$PY" -m pip install -q --disable-pip-version-check cloudpickle psutil pyyaml packaging
  echo "$KEY" > "$MARKER"
fi

# --- 4. verify the build: frameworks, controllers, and a real 2-rank allreduce
CHECK=$("$VENV/bin/horovodrun" --check-build 2>&1) || die "horovodrun --check-build failed: $CHECK"
echo "$CHECK" | grep -q '\[X\] TensorFlow' || die "Horovod was built without TensorFlow:\n$CHECK"
echo "$CHECK" | grep -q '\[X\] Gloo' || die "Horovod was built without Gloo:\n$CHECK"
OUT=$(cd /tmp && OMP_NUM_THREADS=1 timeout 120 "$VENV/bin/horovodrun" --gloo -np 2 "$PY" -c '
import horovod.tensorflow as hvd, tensorflow as tf
hvd.init()
v = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum).numpy()[0]
assert v == 3.0, v
print("allreduce-ok", hvd.rank())
' 2>&1) || die "a 2-process Horovod allreduce failed:\n$OUT"
[ "$(echo "$OUT" | grep -c allreduce-ok)" = 2 ] || die "a 2-process Horovod allreduce gave no result:\n$OUT"
say "Horovod verified: TensorFlow + Gloo built, 2-process allreduce correct"

touch "$STAMP"
say "done in $(( $(date +%s) - START ))s; run: $VENV/bin/python -m hvdagent doctor"
