# FlakeDrop Telemetry: `make run` serves, `make test` proves. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATA   ?= ./data

.DEFAULT_GOAL := help
.PHONY: help run test check lint types mutation system-deps bench profile dashboards env clean

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

lint: $(VENV)/.installed-test ## Run the linter and the type checker
	$(BIN)/ruff check exporter tests bench grafana
	$(BIN)/mypy

check: lint ## The inner loop (under a minute): lint, mypy, the fast tests (no real servers)
	$(BIN)/pytest -q -m "not slow" -p no:cacheprovider

test: system-deps $(VENV)/.installed-test lint ## Install what the tests need, lint, mypy, the whole pytest suite
	$(BIN)/pytest

# mutmut 3.8 reads a pytest internal that pytest 9 removed: it runs in its own venv with pytest 8.
MUT := .venv-mutation/bin
$(MUT)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv .venv-mutation
	$(MUT)/pip install --quiet -e '.[test]' 'pytest>=8,<9'
	@touch $@

mutation: $(MUT)/.installed ## Mutation testing of normalize, ingest and the planner (mutmut); prints the kill rate
	rm -rf mutants
	HYPOTHESIS_PROFILE=mutation $(MUT)/mutmut run --max-children 2 >/dev/null || true
	$(MUT)/python .ci/kill_rate.py

bench: system-deps $(VENV)/.installed-test ## Run the benchmarks, write bench/RESULTS.md (BENCH_ARGS="--baseline REF" adds a before/after)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

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
