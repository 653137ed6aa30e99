# sepkit — top-level entry points.
#   make test    build tools/venv if needed, run the test suite (what CI runs)
#   make demo    build tools/venv if needed, run the end-to-end synthetic demo (egs/dsd100/chimera + egs/ikala/eval)
#   make bench   print the benchmark table (bench/run_all.py)
VENV := tools/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q

.PHONY: venv test demo bench clean-demo

venv:
	@bash tools/install.sh

test: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest $(PYTEST_ARGS) tests

demo: venv
	bash utils/demo.sh

bench: venv
	$(PY) bench/run_all.py
