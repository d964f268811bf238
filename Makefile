# The commands of the README. Each sets up what is missing first
# (ci/setup.sh is idempotent and takes seconds once done).
#   make demo          the main job on one process
#   make demo NP=2     the same job on 2 processes (horovodrun --gloo -np 2)
#   make check         the fast inner loop: unit tests and one 2-rank launch (under 5 minutes)
#   make test          the whole test suite (what CI runs)
#   make docs          the docs site, built strictly into site/ (what tests/test_docs.py checks)
#   make notebooks     run every notebook and store it with its outputs
#   make bench         the benchmarks of docs/benchmarks.md (tables and plots): both controllers (~15 minutes),
#                      then, as root, the communication-bound one between shaped hosts (~25 minutes);
#                      on a quiet machine: each refuses to start on a busy one
#   make bench-quick   a tiny benchmark run: checks the tooling, not the speed (~2 minutes)
#   make bench-comm    the communication-bound benchmark alone (root; ~25 minutes)
PY := .venv/bin/python
NP ?= 1

.PHONY: setup demo check test docs notebooks doctor bench bench-quick bench-comm bench-report

setup:
	bash ci/setup.sh

demo: setup
ifeq ($(NP),1)
	OMP_NUM_THREADS=1 $(PY) examples/train_digits.py
else
	OMP_NUM_THREADS=1 .venv/bin/horovodrun --gloo -np $(NP) $(PY) examples/train_digits.py
endif

check: setup
	bash ci/check.sh

test: setup
	bash ci/test.sh

docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

notebooks: setup
	HVDAGENT_STORE_NOTEBOOKS=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_notebooks.py -k runs_top_to_bottom

doctor: setup
	$(PY) -m hvdagent doctor

# The tables are regenerated whatever the run's exit status (a refused run adds nothing).
bench: setup  # the run, then the tables and plots of docs/benchmarks.md
	OMP_NUM_THREADS=1 $(PY) benchmarks/run.py --allreduce-hosts --history docs/bench/history; rc=$$?; \
	  OMP_NUM_THREADS=1 $(PY) benchmarks/comm.py --history docs/bench/comm --plots docs/bench; rc2=$$?; \
	  $(PY) benchmarks/report.py --write docs/benchmarks.md && [ $$rc = 0 ] && exit $$rc2

bench-comm: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/comm.py --history docs/bench/comm --plots docs/bench; rc=$$?; \
	  $(PY) benchmarks/report.py --write docs/benchmarks.md && exit $$rc

bench-quick: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/run.py --tiny --allow-busy --configs single,hvdagent,horovod,nosync,localsgd \
	  --out bench-results/quick

bench-report:
	$(PY) benchmarks/report.py --write docs/benchmarks.md
