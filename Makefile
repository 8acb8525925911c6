# Platform Service. Two commands matter: `make dev` (whole stack) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install dev service token test lint docs docs-serve bench record-history reconcile clean-dev

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' -e ./clients/python
	@touch $@

install: $(STAMP)  ## Create .venv and install the locked dependencies and the client library

dev: $(STAMP)  ## Run the whole stack in the foreground (Ctrl-C stops it)
	$(BIN)/python -m devstack.dev

service: $(STAMP)  ## Run one reference downstream service again: make service NAME=auth-service
	$(BIN)/python -m devstack.dev service $(NAME)

# `make token` mints a development token, e.g. `export TOKEN=$$(make -s token SUB=alice)`.
SUB    ?= operator
SCOPES ?= tenants:write tenants:read
TTL    ?= 3600

token: $(STAMP)  ## Print a dev token (needs make dev's keys): make token SUB=alice SCOPES="tenants:read"
	@$(BIN)/python -m devstack.tokens mint --sub '$(SUB)' --scope '$(SCOPES)' --ttl '$(TTL)'

# The suite on TEST_WORKERS pytest-xdist workers, shared out by tests/support/parallel.py;
# `make test TEST_WORKERS=1` uses one worker, `.venv/bin/pytest tests/x.py` runs serially.
TEST_WORKERS ?= 3

test: $(STAMP)  ## Run the test suite against real PostgreSQL and Temporal (TEST_WORKERS in parallel)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)  ## ruff (lint + format) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# The handbook: the reference pages are generated from the code first (`python -m docgen`), then
# MkDocs builds strictly (a broken link or a missing page fails) into site/, offline.
# MkDocs 1.x prints a banner about its successor on every build; the build's output is what matters.
docs docs-serve: export NO_MKDOCS_2_WARNING = 1

docs: $(STAMP)  ## Build the handbook into site/ (reference pages regenerated from the code)
	$(BIN)/python -m docgen
	$(BIN)/mkdocs build --strict --quiet

docs-serve: $(STAMP)  ## Serve the handbook on http://127.0.0.1:8001 while you edit it
	$(BIN)/python -m docgen
	$(BIN)/mkdocs serve --strict

# `make bench BENCH_ARGS="--tenants 200 --concurrency 1,32"`; `python -m bench --help` lists all.
# Fleet rollouts: `make bench BENCH_ARGS="fleet --tenants 1000 --scale-factor 5"` (`python -m bench fleet --help`).
BENCH_ARGS ?=

bench: $(STAMP)  ## Benchmark provisioning (Temporal vs direct); report in bench/results/
	$(BIN)/python -m bench $(BENCH_ARGS)

# `make record-history ONLY=deletion` records one workflow's scenarios (provision, deletion, rollout, moves).
ONLY ?=

record-history: $(STAMP)  ## Record workflow histories for the replay test into tests/histories/
	$(BIN)/python -m tests.support.record_history $(foreach f,$(ONLY),--only $(f))

reconcile: $(STAMP)  ## Report drift between tenant rows, workflows and storage (REPAIR=1 restarts stuck tenants)
	$(BIN)/python -m devstack.reconcile $(if $(REPAIR),--repair)

clean-dev:  ## Delete the data of `make dev` (PostgreSQL, Temporal)
	rm -rf .devdata
