# Two commands: `make run` (install into .venv, then run the main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The PyBullet GUI ("human" render mode) is checked too where a virtual display is installed.
XVFB := $(shell command -v xvfb-run >/dev/null 2>&1 && echo "xvfb-run -a")

.PHONY: run test lint install clean

# Everything but the cluster extra (ray: compare's tests use a stand-in): train (torch, export, eval), sim, dev.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[train,sim,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python launch.py

test: $(STAMP)
	$(BIN)/ruff check .
	$(XVFB) $(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
