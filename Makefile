# HostStack: everything runs from these targets on a fresh Debian 12 machine (as root).
PY := .venv/bin/python
PYTEST_ARGS ?=
# functional test files run in parallel workers (each file on one worker: its module fixtures and tagged
# run stay together); most of their time is spent waiting on real processes, not on the CPU
FUNCTIONAL_WORKERS ?= 2
FUNCTIONAL := $(PY) -m pytest -q -p no:cacheprovider -n $(FUNCTIONAL_WORKERS) --dist loadfile --durations=15 tests/functional

.PHONY: deps demo demo-down test unit functional lint typecheck bench clean
# unit tests run as an unprivileged user: they must need no root, no subprocess and no network
UNIT_AS := $(if $(filter 0,$(shell id -u)),env HOME=/tmp PYTHONDONTWRITEBYTECODE=1 setpriv --reuid=65534 --regid=65534 --clear-groups,)

deps:
	bash scripts/install-system.sh
	bash scripts/venv.sh

demo: deps
	$(PY) -m testbed.demo up

demo-down:
	@if [ -x $(PY) ]; then $(PY) -m testbed.demo down; else echo "nothing to remove"; fi

test: deps
	$(PY) -m testbed.sweep
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(UNIT_AS) $(PY) -m pytest -q -p no:cacheprovider -n 2 tests/unit
	$(FUNCTIONAL) $(PYTEST_ARGS)

unit: deps
	$(UNIT_AS) $(PY) -m pytest -q -p no:cacheprovider -n 2 tests/unit $(PYTEST_ARGS)

functional: deps
	$(PY) -m testbed.sweep
	$(FUNCTIONAL) $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check .

typecheck: deps
	$(PY) -m mypy

clean: demo-down
	rm -rf .venv build *.egg-info
