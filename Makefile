# consentry — one command per job. `make` alone lists them.
# Everything bootstraps from plain Python: pip installs uv (into .bootstrap/ when it is not
# on PATH), uv builds .venv from uv.lock, `make proto` generates the protobuf code.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.bootstrap/bin/uv)
VENV := .venv
INSTALLED := $(VENV)/.consentry-installed
PROTO_FILES := $(shell find proto/consentry -name '*.proto' 2>/dev/null)
PROTO_STAMP := proto/gen/.stamp
PYPROJECTS := pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml proto/pyproject.toml)
export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install proto lint lint-deploy fmt test test-faults run bench clean docs

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(CURDIR)/.bootstrap/bin/uv:
	$(PYTHON) -m venv .bootstrap
	.bootstrap/bin/python -m pip install --quiet --disable-pip-version-check uv

$(INSTALLED): uv.lock $(PYPROJECTS) | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

$(PROTO_STAMP): $(PROTO_FILES) $(INSTALLED)
	$(UV) run --frozen python proto/generate.py
	@touch $@

install: $(INSTALLED) $(PROTO_STAMP) ## bootstrap uv, create .venv from uv.lock, build the protobuf code

proto: $(INSTALLED) ## (re)generate the protobuf code into proto/gen (not committed)
	$(UV) run --frozen python proto/generate.py
	@touch $(PROTO_STAMP)

lint: install ## ruff, ruff format --check, mypy --strict, buf lint and buf breaking, lint-deploy
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy libs/*/src libs/*/tests services/*/src services/*/tests sdk/python/src sdk/python/tests cli/src cli/tests tests $(wildcard bench) proto/generate.py $(wildcard scripts/*.py)
	cd proto && $(UV) run --frozen buf lint
	@if git rev-parse --verify --quiet main >/dev/null && git cat-file -e main:proto/buf.yaml 2>/dev/null; then \
	  echo "buf breaking against main"; cd proto && $(UV) run --frozen buf breaking --against '../.git#branch=main,subdir=proto'; \
	else echo "buf breaking: no main with proto/ to compare with yet"; fi
	@$(MAKE) lint-deploy

lint-deploy: install ## validate the Dockerfile, deploy/compose and deploy/k8s (offline; see deploy/README.md)
	$(UV) run --frozen python scripts/lint_deploy.py

docs: install ## regenerate docs/event-reference.md from proto/ and the event catalogue
	$(UV) run --frozen python scripts/gen_event_catalogue.py

fmt: install ## format and autofix
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

# Two pytest-xdist workers, each with its own embedded PostgreSQL and broker: most tests wait on
# the broker or on the processes they start (serially, both cores were 57 % idle over the
# preferences tests). A test file, or a directory whose conftest.py starts a whole stack, runs
# in one worker (`--dist loadfile` as consentry.devstack.pytest_plugin extends it; ADR 0015).
# Against a configured broker the stacks' consumer groups would meet on it: one process then.
# TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= $(if $(CONSENTRY_KAFKA_BOOTSTRAP_SERVERS),0,2)

test: install ## run every test (starts its own PostgreSQL and broker unless CONSENTRY_* URLs are set)
	@scripts/ensure-chromium.sh  # Debian's Chromium for the preference-center browser test
	$(UV) run --frozen pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-faults: install ## the fault catalogue in its full form (longer load); figures in tests/faults/results/latest.md
	CONSENTRY_FAULTS_FULL=1 $(UV) run --frozen pytest tests/faults -m faults --timeout=900 $(PYTEST_ARGS)

run: install ## start the whole stack on this machine (Ctrl-C stops everything)
	$(UV) run --frozen python -m consentry.devstack run

bench: install ## run the load generators; results in bench/results/
	$(UV) run --frozen python -m bench $(BENCH_ARGS)

clean: ## remove the venv, generated code, caches and the embedded stack's data
	rm -rf .venv .bootstrap proto/gen .devstack .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
