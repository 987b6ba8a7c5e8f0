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
# its own browser on machines without internet access. Debian's redis-server backs the API's
# shared rate-limit counters in the tests (and in production when LEADFLOW_RATE_LIMIT_STORAGE
# points at it).
REDIS_SERVER ?= /usr/bin/redis-server
system-deps:
	@missing=""; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	[ -x $(REDIS_SERVER) ] || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing$$missing (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "Missing Debian packages:$$missing (sudo apt-get install$$missing);" \
			     "or set CHROMIUM=/path/to/chromium (and LEADFLOW_CHROMIUM_PATH), REDIS_SERVER=/path/to/redis-server"; exit 1; \
		fi; \
	fi

demo: install
	LEADFLOW_SANDBOX_CAPTCHA_SHARE=$${LEADFLOW_SANDBOX_CAPTCHA_SHARE:-0.1} $(BIN)/leadflow up
	$(BIN)/leadflow run --limit 1000
	$(BIN)/leadflow run --source google_maps --source directory --location "Austin, TX" --limit 300
	$(BIN)/leadflow crm status
	$(BIN)/leadflow status
	@$(BIN)/python -c "from leadflow.settings import get_settings as g; u = g().api_url; print(f'API {u}  docs {u}/docs  (key: leadflow keys create --name me --scopes admin)')"

test: install
	$(BIN)/python -m pytest --durations=10

down: install
	$(BIN)/leadflow down

status: install
	$(BIN)/leadflow crm status
	$(BIN)/leadflow status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean: down
	rm -rf .leadflow
