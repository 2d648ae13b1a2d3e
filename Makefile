# HostStack: everything runs from these targets on a fresh Debian 12 machine (as root).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: deps demo demo-down test lint bench clean

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
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check .

clean: demo-down
	rm -rf .venv build *.egg-info
