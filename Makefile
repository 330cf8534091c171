# The two commands of the README: `make run` (service + demo) and `make test` (whole test suite).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PORT   ?= 8000
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: PyTorch's CPU build from that index first (no CUDA
# libraries: about 1.7 GB installed instead of 6.3 GB); empty: torch from the default index, as pip picks it
TORCH_INDEX ?=

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	@echo "Installing Toroid and its dependencies into $(VENV): FastAPI, SQLAlchemy, Celery, Plotly, scikit-learn,"
	@echo "pytest and Playwright, and PyTorch $(if $(TORCH_INDEX),from $(TORCH_INDEX) (about 1.7 GB in all),with its CUDA libraries (about 6 GB in all))."
	@echo "The first time takes minutes with little to see; later runs skip this step."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q -c requirements/constraints.txt torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[test]'
	touch $@
	@echo "Installed. The toroid command is $(VENV)/bin/toroid (or run: source $(VENV)/bin/activate)."

install: $(VENV)/.installed

run: install
	@echo "Command line: $(VENV)/bin/toroid networks (in another terminal; source $(VENV)/bin/activate puts toroid on PATH)"
	$(VENV)/bin/toroid serve --demo --port $(PORT)

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/paths.py

clean:
	rm -rf $(VENV) test-artifacts
