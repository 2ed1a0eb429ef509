# meshkit: every entry point is a target here, each thin and documented (`make help`).
# Nothing is assumed installed beyond python3 (3.11+), go and java/mvn: `make setup` and
# `make tools` fetch the rest into .venv/ and .cache/.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
comma       := ,
UV_VERSION  := 0.13.9
CACHE       := $(CURDIR)/.cache
UV          := $(CACHE)/uv-venv/bin/uv
VENV        := $(CURDIR)/.venv
PY          := $(VENV)/bin/python
BIN         := $(CACHE)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_CACHE_DIR := $(CACHE)/uv
export PATH := $(BIN):$(VENV)/bin:$(PATH)

.PHONY: help setup tools browser gen gen-check lint buf-lint test test-unit test-integration test-e2e demo readme bench clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(UV):
	@echo "==> installing uv $(UV_VERSION) into .cache/uv-venv"
	@$(PYTHON) -m venv $(CACHE)/uv-venv
	@$(CACHE)/uv-venv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is compiled up front: with PYTHONDONTWRITEBYTECODE set (as on our CI machines) every
# process would otherwise compile grpc, protobuf and OpenTelemetry from source at each start,
# which made `mesh up -d` take 16 s instead of 6 s. Python ignores a .pyc older than its source.
setup: $(UV) ## create .venv with every component and dev tool, pinned by uv.lock
	@echo "==> syncing .venv from uv.lock"
	@$(UV) sync --locked --python $(PYTHON) --quiet --compile-bytecode
	@$(PY) -m compileall -q libs services schema-registry gen >/dev/null

tools: ## pinned grpcurl, buf, Jaeger v2, the Go protoc plugins and the Go clients into .cache/bin (Go module proxy)
	@scripts/tools

# The shop page's browser test drives Debian's Chromium (Playwright's driver pointed at it, no
# browser download). apt needs root: sudo when we are not.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser: ## Debian's chromium for the shop page's browser test (apt; nothing when present)
	@command -v chromium >/dev/null || { \
	    echo "==> installing chromium from Debian's packages"; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	    || { $(SUDO) apt-get update -q >/dev/null && \
	         $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }

gen: setup ## regenerate gen/ from proto/
	@$(PY) scripts/gen.py

gen-check: setup ## fail when gen/ is stale against proto/
	@$(PY) scripts/gen.py --check

buf-lint: tools ## lint proto/ with buf (STANDARD + comments)
	@cd proto && $(BIN)/buf lint

lint: setup buf-lint ## ruff, mypy (strict) and buf lint
	@echo "==> ruff"; $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	@echo "==> mypy"; $(VENV)/bin/mypy

test-unit: setup ## unit tests (no network, no Kafka: the storage contract's Kafka case is left to `make test`)
	@$(PY) -m pytest tests/unit -q -m "not kafka"

test-integration: setup tools ## integration tests against real Kafka (scripts/kafka)
	@$(PY) -m pytest tests/integration -q

test-e2e: setup tools browser ## end-to-end: `mesh up`, the real grpcurl and Chromium
	@$(PY) -m pytest tests/e2e -q

# The e2e tier runs beside the unit and integration tiers, each on its own Kafka test broker:
# e2e mostly waits, the others want the CPU (scripts/test_tiers.py says why and how).
test: setup tools browser lint gen-check ## everything CI runs: lint, gen drift, unit, integration, e2e
	@$(PY) scripts/test_tiers.py

demo: setup tools ## the whole mesh on embedded defaults, a scripted flow, its outcome
	@$(PY) scripts/demo.py

# The README is what a newcomer runs first, so it is run as written: every ```sh block in order,
# in one shell, in a fresh clone of HEAD (.cache/readme-run; CI passes --here). See the script.
readme: setup tools ## run every shell block of README.md in order, in a fresh clone of HEAD
	@$(PY) scripts/readme_run.py $(README_RUN_FLAGS)

bench: setup tools ## benchmarks vs a same-run baseline, figures in .bench/results.json (ONLY=events,saga)
	@$(PY) scripts/bench.py $(subst $(comma), ,$(ONLY))

clean: ## stop the mesh and remove runtime state (.mesh/)
	-@$(VENV)/bin/mesh down 2>/dev/null
	rm -rf .mesh
