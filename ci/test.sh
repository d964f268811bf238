#!/usr/bin/env bash
# The whole test suite: unit tests (one process), real `horovodrun -np 2`
# tests, the README example and the notebooks. What `make test` and CI run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${HVDAGENT_VENV:-$ROOT/.venv}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "$VENV/bin/python" -m pytest -q -rs --durations=30 -p no:cacheprovider --timeout=900 "$@" tests hvdagent callbacks
