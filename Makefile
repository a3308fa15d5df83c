# FlakeDrop Telemetry: `make run` serves, `make test` proves. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATA   ?= ./data

.DEFAULT_GOAL := help
.PHONY: help run test lint system-deps bench profile dashboards env clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.cfg
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(VENV)/.installed ## Serve on :8080 with SQLite under ./data (HOST, PORT, DATA override)
	$(BIN)/flakedrop-telemetry serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

system-deps: ## Install Prometheus, Alertmanager, Chromium, PostgreSQL, wrk (root on Debian only)
	@bash .ci/system-deps.sh

lint: $(VENV)/.installed-test ## Run the linter
	$(BIN)/ruff check exporter tests bench grafana

test: system-deps $(VENV)/.installed-test lint ## Install what the tests need, lint, run pytest
	$(BIN)/pytest

bench: system-deps $(VENV)/.installed-test ## Run the benchmarks (bench/), write bench/RESULTS.md
	$(BIN)/python bench/run.py

$(VENV)/.installed-bench: $(VENV)/.installed-test setup.cfg
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $@

profile: system-deps $(VENV)/.installed-bench ## Profile the server under load with py-spy (bench/profiles/*.svg)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python bench/profile.py

dashboards: $(VENV)/.installed-test ## Regenerate grafana/dashboards/*.json from grafana/dashboards.py
	$(BIN)/python grafana/dashboards.py

env: ## Write .env and secrets/read_token for docker compose, with random secrets (never overwrites)
	@sh scripts/make-env.sh

clean: ## Remove the virtualenv and caches (keeps ./data)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
