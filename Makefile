# Everything runs from a project venv created on first use.
PYTHON       ?= python3
VENV         := .venv
BIN          := $(VENV)/bin
STAMP        := $(VENV)/.installed
REPORTS      ?= reports
DEMO_SECONDS ?= 20
NOTEBOOKS    := $(wildcard notebooks/*.ipynb)

.PHONY: demo test html lab install bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml setup.py evtkit/_columnar.c
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install evtkit with its dev extras

demo: $(STAMP)  ## run the shop demo, write its trace and report, export the notebooks
	$(BIN)/python -m evtkit demo --duration $(DEMO_SECONDS) --quiet --out $(REPORTS) \
	    --name shop-demo.parquet --fault slow:billing:15@6+6 --fault stall:shipping@14+3
	$(BIN)/python -m evtkit report $(REPORTS)/shop-demo.parquet --out $(REPORTS)/shop-demo.html --quiet \
	    --spec data/shop-asyncapi.yaml
	$(MAKE) --no-print-directory html
	@echo
	@echo "trace:     $(REPORTS)/shop-demo.parquet"
	@echo "report:    $(REPORTS)/shop-demo.html"
	@for nb in $(NOTEBOOKS); do echo "notebook:  $(REPORTS)/$$(basename $$nb .ipynb).html"; done

html: $(STAMP)  ## execute every notebook to one offline HTML file under $(REPORTS)/
	@for nb in $(NOTEBOOKS); do \
	    $(BIN)/python -m evtkit export $$nb --out $(REPORTS)/$$(basename $$nb .ipynb).html --quiet \
	    || exit 1; done

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	$(BIN)/python -m jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: $(STAMP)  ## benchmarks: capture vs raw nats-py, publish with vs without a spec, analysis vs a naive reference, conformance vs a jsonschema loop, replay timing, telemetry, diagnosis by fault injection, scale (1 M and 10 M events on disk)
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/guard.py
	$(BIN)/python bench/analysis.py
	$(BIN)/python bench/conformance.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/telemetry.py
	$(BIN)/python bench/diagnose.py
	$(BIN)/python bench/scale.py --spark

lint: $(STAMP)  ## ruff on everything, mypy on the package (it ships py.typed)
	$(BIN)/ruff check evtkit tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info $(REPORTS)
