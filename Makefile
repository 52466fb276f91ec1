# Two commands do all setup on a fresh machine (see README):
#   make demo   set up, then open JupyterLab (127.0.0.1 only) on the quickstart notebook
#   make test   set up, then run every test (installs Debian chromium for the browser test if missing)
# make headless runs the quickstart strategy on the simulator without Jupyter.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Jupyter refuses to run as root unless told to (containers, CI).
LAB    := $(PY) -m jupyterlab --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup demo headless lab test lint bench soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"      # test = notebook + bench + pytest & co.
	# Outputs of notebooks you run stay in your copy, never in a commit (.gitattributes names the filter).
	if git rev-parse --git-dir >/dev/null 2>&1; then $(VENV)/bin/nbstripout --install; fi
	touch $@

demo: setup
	$(LAB) notebooks/01_quickstart.ipynb

headless: setup
	$(PY) -m kit run examples/sma_cross.py --feed sim --mode queue --duration 20 --rate 20

lab: setup
	$(LAB) notebooks/

test: setup
	bash scripts/ensure-chromium.sh
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# The import contract of kit/'s layers (pyproject.toml, [tool.importlinter]); make test runs it too.
lint: setup
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m kit.bench

.PHONY: bench-replay
bench-replay: setup
	$(PY) -m kit.bench.replay

# One backtest, a 1- and a 2-worker sweep (joblib and Dask), and the replay floor, side by side.
.PHONY: bench-sweep
bench-sweep: setup
	$(PY) -m kit.bench.sweep

# Not part of `make test`: 10 minutes at 2,000 ticks/s over 50 tokens, a fault every 30 s.
soak: setup
	$(PY) scripts/soak.py --json artifacts/soak.json

clean:
	rm -rf $(VENV) .pytest_cache artifacts
