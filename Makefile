# sepkit — top-level entry points.
#   make test    build tools/venv if needed, run the test suite (what CI runs)
#   make demo    build tools/venv if needed, run the end-to-end synthetic demo (egs/dsd100/chimera + egs/ikala/eval)
#   make bench   print the benchmark table (bench/run_all.py)
VENV := tools/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q
# two pytest-xdist workers, one thread each (no OpenMP oversubscription of a 2-core machine); each test
# file runs whole on one worker, so its module fixtures are built once and shared workspaces stay private.
# PYTEST_XDIST= runs the suite in one process (then with OMP_NUM_THREADS=2 unless set).
PYTEST_XDIST ?= -n 2 --dist loadfile

.PHONY: venv test demo bench clean-demo

venv:
	@bash tools/install.sh

test: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(if $(strip $(PYTEST_XDIST)),1,2)} $(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS) tests

demo: venv
	bash utils/demo.sh

bench: venv
	$(PY) bench/run_all.py
