# The two commands of the README: `make run` (service + demo) and `make test` (whole test suite).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PORT   ?= 8000

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/toroid serve --demo --port $(PORT)

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/paths.py

clean:
	rm -rf $(VENV) test-artifacts
