# The two commands of the README. Each sets up what is missing first
# (ci/setup.sh is idempotent and fast once done).
PY := .venv/bin/python

.PHONY: setup demo demo2 test bench doctor

setup:
	bash ci/setup.sh

demo: setup
	$(PY) examples/train_digits.py

demo2: setup
	OMP_NUM_THREADS=1 .venv/bin/horovodrun --gloo -np 2 $(PY) examples/train_digits.py

test: setup
	bash ci/test.sh

doctor: setup
	$(PY) -m hvdagent doctor
