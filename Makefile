# Two commands do all setup on a fresh machine (see README):
#   make demo   set up, then run the quickstart on the embedded simulator
#   make test   set up, then run every test (installs Debian chromium for the browser test if missing)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: setup demo lab test bench soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(PY) -m kit run examples/sma_cross.py --feed sim --mode queue --duration 20 --rate 20

test: setup
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest

bench: setup
	$(PY) -m kit.bench

# Not part of `make test`: 10 minutes at 2,000 ticks/s over 50 tokens, a fault every 30 s.
soak: setup
	$(PY) scripts/soak.py --json artifacts/soak.json

clean:
	rm -rf $(VENV) .pytest_cache artifacts
