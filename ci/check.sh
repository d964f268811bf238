#!/usr/bin/env bash
# The fast inner loop (`make check`, under 5 minutes on 2 cores): the tests that
# start no process (one process each: the agent, the architecture contracts, the
# install command's checks, the benchmark tooling, ...), the doctests of the
# package, and one short 2-rank launch (the README's example on 1 and 2
# processes). `make test` (ci/test.sh) is the whole suite that CI runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${HVDAGENT_VENV:-$ROOT/.venv}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
UNIT="tests/test_agent_single.py tests/test_architecture.py tests/test_bench.py tests/test_binding.py
      tests/test_doctor.py tests/test_install.py tests/test_process.py tests/test_scaling_model.py
      tests/test_without_horovod.py"
LAUNCH="tests/test_readme_and_examples.py::test_readme_example_runs_on_one_and_two_processes"
# the benchmark's tiny real run starts a dozen launches: make test runs it
SLOW="--deselect tests/test_bench.py::test_tiny_run_on_both_controllers"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout=300 --durations=10 $SLOW "$@" $UNIT $LAUNCH hvdagent callbacks
