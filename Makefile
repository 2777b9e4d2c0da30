# The two commands of the README: `make run` and `make test`. Both bootstrap what they need
# on a fresh machine: uv (into .tools/ when it is not on PATH), the locked virtualenv, and for
# the tests the services they talk to.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
# Trust the system certificate store (where this machine kind keeps its CA bundle).
export UV_SYSTEM_CERTS := 1

.PHONY: help run test lint format sync services

help:
	@echo "make run   - run energymon on its embedded defaults: Dagster UI on http://127.0.0.1:3001"
	@echo "make test  - lint and run the test suite against real services"

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode: every Dagster run is a new process that imports the code location;
# without .pyc files (e.g. with PYTHONDONTWRITEBYTECODE set) each run compiles about 2000
# modules again, seconds per run; compileall does the same for the project's own modules
# (an editable install). The Docker image does the same (UV_COMPILE_BYTECODE).
sync: | $(UV)
	$(UV) sync --locked --compile-bytecode
	$(UV) run --no-sync python -m compileall -q energymon_pipeline virtual_server

services:
	./scripts/ensure-services.sh

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format: sync
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

test: lint services
	UV=$(UV) $(UV) run pytest

run: sync
	UV=$(UV) ./scripts/run-local.sh
