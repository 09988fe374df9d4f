# The front door: every target creates .venv and installs into it when needed (with uv, which
# resolves and installs faster than pip; see benchmarks/results/install.jsonl).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test lint ui clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	# bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (as on this machine) every
	# process would otherwise compile each module it imports (about 4 s of CPU per start of a
	# command, a flow run or a server; measured: `ctloop ingest` 17.1 s -> 9.8 s)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 ctloop flows tasks deployments
	$(BIN)/ctloop demo

test: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 ctloop flows tasks deployments
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check ctloop tasks flows deployments tests benchmarks
	$(BIN)/ruff format --check ctloop tasks flows deployments tests benchmarks

ui: $(STAMP)
	$(BIN)/ctloop ui

clean:
	rm -rf $(VENV) .ctloop
