# CaaS — one Makefile for setup, running, tests and benchmarks.
# Everything installs into the checkout: .venv (Python) and node_modules (Anvil).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
# ape finds vyper and anvil on PATH; keep the project's own first.
export PATH := $(BIN):$(CURDIR)/node_modules/.bin:$(PATH)
# Hypothesis profile for the stateful contract tests: ci (default) or nightly.
HYPOTHESIS_PROFILE ?= ci
export HYPOTHESIS_PROFILE

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip==24.3.1"
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The consoles' browser bundle (viem + the pages' ES modules), built once into static files.
CONSOLE := offchain/services/gateway/console
$(CONSOLE)/static/signer.js: node_modules/.installed $(CONSOLE)/build.mjs $(wildcard $(CONSOLE)/src/*)
	node $(CONSOLE)/build.mjs

# Debian's Chromium for the browser tests (Playwright's own browser download is not reachable).
.PHONY: chromium
chromium:
	@test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)

.PHONY: setup
setup: $(VENV)/.installed node_modules/.installed $(CONSOLE)/static/signer.js ## install Python deps (.venv) and Anvil (node_modules)

# Always from clean: ape's incremental compile once reused stale bytecode after sources were
# edited and restored (a clean checkout over an old .build then deployed the wrong code).
.PHONY: compile
compile: setup ## compile the Vyper contracts from clean
	rm -rf .build
	ape compile --force

.PHONY: run
run: setup ## run the whole stack on its embedded default (PostgreSQL, Redis, Anvil under .caas/)
	caas up

.PHONY: test
test: setup ## set up, then run every test suite
	$(MAKE) --no-print-directory test-contracts
	$(MAKE) --no-print-directory test-offchain
	$(MAKE) --no-print-directory test-stack
	$(MAKE) --no-print-directory test-system
	$(MAKE) --no-print-directory test-browser

.PHONY: test-contracts
test-contracts: compile ## ape tests of the contracts against Anvil (compiled from clean)
	ape test tests/contracts -q -p no:cacheprovider

# ape's pytest plugin would start an Anvil of its own for every backend test session.
OFFCHAIN_PYTEST := pytest -p no:ape_test -p no:cacheprovider -q

.PHONY: test-offchain
test-offchain: setup ## backend tests on the real PostgreSQL (127.0.0.1:5432) and Redis (:6379)
	$(OFFCHAIN_PYTEST) tests/offchain -m "not stack"

.PHONY: fuzz
fuzz: setup ## every service against its OpenAPI with all Schemathesis checks, 100 fresh examples per operation
	CAAS_FUZZ_EXAMPLES=100 CAAS_FUZZ_RANDOM=1 $(OFFCHAIN_PYTEST) tests/offchain/integration/test_services_schemathesis.py

.PHONY: test-stack
test-stack: setup ## `caas up` end to end in a scratch dir (embedded default; needs ports 8000-8010)
	$(OFFCHAIN_PYTEST) tests/offchain -m stack -s

.PHONY: test-system
test-system: setup ## system tests: `caas demo`, default + write-off, payout retry on a fresh stack (ports 8000-8010)
	$(OFFCHAIN_PYTEST) tests/system -m stack -s

.PHONY: test-browser
test-browser: setup chromium ## the consoles in Debian's Chromium (Playwright) against `caas up` (ports 8000-8010)
	$(OFFCHAIN_PYTEST) tests/browser -m stack -s

.PHONY: gas
gas: setup ## gas table of the contracts (docs/BENCHMARKS.md)
	python bench/gas.py --write

.PHONY: bench
bench: setup ## every benchmark; each writes its section of docs/BENCHMARKS.md
	python bench/gas.py --write
	python bench/scorecard.py --write
	python bench/indexer.py --write
	python bench/sender.py --write

.PHONY: load
load: setup ## capacity of the whole stack: a ladder of open-loop rates over the partner API + webhooks (ports 8000-8010)
	python bench/load.py capacity --write

.PHONY: soak
soak: setup ## capacity, then a 10-minute soak at half of it: zero errors, nothing lost (ports 8000-8010; not in `make test`)
	python bench/load.py soak --minutes 10 --write

.PHONY: drills
drills: setup ## fault drills on `caas up --processes`: kill -9 each service, PostgreSQL/Redis/Anvil down 30 s (ports 8000-8010)
	python bench/drills.py --write

.PHONY: lint
lint: setup ## ruff check, ruff format --check, mypy and the import rules (docs/ARCHITECTURE.md); < 1 min
	ruff check offchain scripts tests bench
	ruff format --check offchain scripts tests bench
	mypy offchain
	lint-imports

.PHONY: clean
clean: ## remove build output and local state (keeps .venv and node_modules)
	rm -rf .build .caas .pytest_cache .hypothesis
