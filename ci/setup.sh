#!/usr/bin/env bash
# Set up everything hvdagent needs, idempotently: Debian build packages, a
# virtual environment with the pinned TensorFlow/Keras stack and hvdagent
# itself, then Horovod built for that TensorFlow by `hvdagent install-horovod`
# (the command users run: cached as a wheel keyed by the Horovod, TensorFlow
# and Python versions, and checked with a 2-process allreduce).
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
# (highwayhash and farmhash headers come with TensorFlow; a cmake below 4 from PyPI
# when the system has none: see hvdagent/_install/recipe.py.)
APT_PKGS="g++ make libopenmpi-dev openmpi-bin"
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
EXTRAS=test,notebooks,examples,docs
[ "$ENGINES" = 1 ] && EXTRAS=$EXTRAS,ray,spark
say "installing the pinned TensorFlow/Keras stack, hvdagent (editable) and its extras [$EXTRAS] (pip)"
"$PY" -m pip install -q --disable-pip-version-check --upgrade pip wheel 'setuptools<81'
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" \
  "tensorflow==$TF_VERSION" keras tf-keras -e "$ROOT[$EXTRAS]"

TF_ACTUAL=$("$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null) \
  || die "TensorFlow does not import in $VENV"
[ "$TF_ACTUAL" = "$TF_VERSION" ] || die "TensorFlow $TF_ACTUAL is installed, $TF_VERSION is pinned"

# --- 3. Horovod, built for this TensorFlow by hvdagent's own recipe ---------
# `hvdagent install-horovod` (hvdagent/_install/, what users run too) checks the
# build tools, takes the wheel from $CACHE (keyed by the Horovod, TensorFlow and
# Python versions, the controllers and the machine) or compiles it, installs it,
# and proves it: horovodrun --check-build, then a 2-process allreduce over Gloo
# and over MPI. The tests need MPI: --mpi on fails without Open MPI.
HVDAGENT_WHEEL_CACHE=$CACHE "$PY" -m hvdagent install-horovod --mpi on \
  || die "hvdagent install-horovod failed (its output above says why)"

touch "$STAMP"
say "done in $(( $(date +%s) - START ))s; run: $VENV/bin/python -m hvdagent doctor"
