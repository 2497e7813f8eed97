# Quickstart: `make run` (the main job) and `make test` (the test suite). Both create .venv with
# the pinned versions in constraints.txt on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all]'
	@# compile the reference's numba kernels now (~25 s, cached), not in the first run
	$(BIN)/python -c "from harness import fastpath; fastpath.warm()"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/xent-harness run

test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/xent-harness check

lint: $(STAMP)
	$(BIN)/ruff check harness tests benchmarks examples

clean-venv:
	rm -rf $(VENV)
