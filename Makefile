# The two commands of the quick start: `make serve` and `make test`.
# Each sets up what it needs first (a virtualenv in .venv), so either works
# on a fresh clone.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck pytest setup setup-test system-deps sdk-deps sdk-pack

$(BIN)/sbd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.test-deps: $(BIN)/sbd
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

setup: $(BIN)/sbd
setup-test: $(VENV)/.test-deps

system-deps:
	./scripts/system-deps.sh

# The browser SDK's development tools (TypeScript, for tests/test_sdk_package.py)
# from sdk/js/package-lock.json; after this the tests need no registry.
SDK_CHECKS := sdk/js
$(SDK_CHECKS)/node_modules/.package-lock.json: $(SDK_CHECKS)/package-lock.json
	cd $(SDK_CHECKS) && npm ci --no-audit --no-fund --loglevel=error

sdk-deps: system-deps $(SDK_CHECKS)/node_modules/.package-lock.json

# The npm package of the browser SDK, as it would be published: dist/*.tgz.
sdk-pack:
	mkdir -p dist
	cd src/second_brain_database/webrtc/static && npm pack --pack-destination $(CURDIR)/dist

# A .env with a random signing key, so `sbd token` and the server agree.
.env:
	@echo "SBD_JWT_SECRET=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')" > .env
	@echo "wrote .env with a random SBD_JWT_SECRET"

serve: setup .env
	$(BIN)/sbd serve --host $(HOST) --port $(PORT)

# scripts/audit_deps.py: known vulnerabilities (PyPI's advisory data) in every
# installed package, read from the per-version JSON API or, where that answers
# 404, from the project JSON when the installed version is the latest release;
# the others are listed as unverified. The project itself (editable) is skipped.
# Exit 1 on a known vulnerability, 2 when PyPI cannot be asked.
lint: setup-test
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/python scripts/audit_deps.py

typecheck: setup-test
	$(BIN)/mypy

pytest: setup-test system-deps sdk-deps
	$(BIN)/pytest

test: lint typecheck pytest
