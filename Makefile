# Leadflow: `make demo` runs the whole pipeline on the local sandbox; `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

CHROMIUM ?= /usr/bin/chromium

.PHONY: install system-deps demo test down status lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) system-deps

# Debian's Chromium for the JavaScript (scrapy-playwright) crawls: Playwright cannot download
# its own browser on machines without internet access.
system-deps:
	@if [ ! -x $(CHROMIUM) ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing chromium (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "Chromium is missing: install Debian's 'chromium' package (sudo apt-get install chromium)" \
			     "or set LEADFLOW_CHROMIUM_PATH and CHROMIUM=/path/to/chromium"; exit 1; \
		fi; \
	fi

# The sandbox's Google Maps stand-in puts a CAPTCHA in front of one request in ten, solved
# through the 2captcha sandbox. Two runs: the whole demo directory, then one search over both
# sources (Google Maps and the directory), whose cross-source duplicates merge.
demo: install
	LEADFLOW_SANDBOX_CAPTCHA_SHARE=$${LEADFLOW_SANDBOX_CAPTCHA_SHARE:-0.1} $(BIN)/leadflow up
	$(BIN)/leadflow run --limit 1000
	$(BIN)/leadflow run --source google_maps --source directory --location "Austin, TX" --limit 300
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
