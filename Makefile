# Everything runs from a project venv created on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test install bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install evtkit with its dev extras

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest

bench: $(STAMP)  ## benchmarks: capture vs raw nats-py, analysis vs a naive reference
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/analysis.py
	$(BIN)/python bench/replay.py

lint: $(STAMP)
	$(BIN)/ruff check evtkit tests bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
