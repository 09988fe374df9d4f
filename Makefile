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
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ctloop demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check ctloop tasks flows deployments tests benchmarks
	$(BIN)/ruff format --check ctloop tasks flows deployments tests benchmarks

ui: $(STAMP)
	$(BIN)/ctloop ui

clean:
	rm -rf $(VENV) .ctloop
