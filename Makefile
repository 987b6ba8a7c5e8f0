# Leadflow: `make demo` runs the whole pipeline on the local sandbox; `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test down status lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/leadflow up
	$(BIN)/leadflow run --limit 1000
	$(BIN)/leadflow status

test: install
	$(BIN)/python -m pytest --durations=10

down: install
	$(BIN)/leadflow down

status: install
	$(BIN)/leadflow status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean: down
	rm -rf .leadflow
