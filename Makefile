# The two commands of the quick start: `make serve` and `make test`.
# Each sets up what it needs first (a virtualenv in .venv), so either works
# on a fresh clone.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint audit docs typecheck pytest fuzz setup setup-test system-deps conformance \
	test-uvicorn-latest sdk-deps sdk-pack

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

lint: setup-test
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

# scripts/audit_deps.py: known vulnerabilities (PyPI's advisory data) in every
# installed package, read from the per-version JSON API or, where that answers
# 404, from the project JSON when the installed version is the latest release;
# the others are listed as unverified. The project itself (editable) is skipped.
# Its own target, not part of `make test`, so the suite runs with no network:
# a known vulnerability fails (exit 1); an index that cannot be asked (exit 2)
# only warns. .ci/run runs it after the tests.
audit: setup-test
	@$(BIN)/python scripts/audit_deps.py; status=$$?; \
	if [ $$status -eq 2 ]; then \
		echo "WARNING: dependency audit not done: the package index could not be asked" >&2; \
	elif [ $$status -ne 0 ]; then exit $$status; fi

# docs/configuration.md from the settings' docstrings (config.py).
docs: setup
	$(BIN)/python scripts/gen_config_docs.py

typecheck: setup-test
	$(BIN)/mypy

pytest: setup-test system-deps sdk-deps
	$(BIN)/pytest

test: lint typecheck pytest

# Autobahn|Testsuite (scripts/conformance.py): Python 2 code, so it goes into
# .autobahn/ with pyenv's Python 2.7 and these pins, once; no network after.
PYTHON2 ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)/versions/2.7.18/bin/python
AUTOBAHN := .autobahn
AUTOBAHN_PINS := autobahntestsuite==0.8.2 autobahn==0.10.9 Twisted==19.10.0 txaio==2.1.0 \
	zope.interface==4.7.2 Jinja2==2.11.3 MarkupSafe==1.1.1 six==1.17.0

$(AUTOBAHN)/.installed:
	$(PYTHON2) -m pip --version >/dev/null 2>&1 || $(PYTHON2) -m ensurepip
	$(PYTHON2) -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(AUTOBAHN) $(AUTOBAHN_PINS)
	@touch $@

conformance: setup-test $(AUTOBAHN)/.installed
	$(BIN)/python scripts/conformance.py --autobahn $(AUTOBAHN) --python2 $(PYTHON2)

# The WebSocket layer extends uvicorn's internals (webrtc/native_ws.py), so
# pyproject.toml caps uvicorn at a tested minor version. This runs the suites
# that cover that layer against the newest uvicorn release, installed once into
# a second virtualenv (offline after that), so that raising the cap is a
# measured decision (docs/conformance.md records each result).
LATEST := .venv-uvicorn-latest
UVICORN_SUITES := tests/test_conformance.py tests/test_native_ws.py tests/test_rfc6455.py \
	tests/test_contract.py tests/test_ws_limits.py

$(LATEST)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip setuptools
	$(LATEST)/bin/pip install --quiet -e ".[test]"
	# Past the cap on purpose: pip reports the conflict with it and installs.
	$(LATEST)/bin/pip install --quiet --upgrade "uvicorn[standard]" 2>&1 | grep -v "^ERROR: pip's dependency resolver\|which is incompatible\|^WARNING: Location" || true
	@touch $@

test-uvicorn-latest: $(LATEST)/.installed system-deps
	@$(LATEST)/bin/python -c "import uvicorn; print('uvicorn', uvicorn.__version__)"
	$(LATEST)/bin/pytest -q -p no:randomly $(UVICORN_SUITES)

# The fuzz targets of tests/test_fuzz.py (a live server's frame handling, and
# message and token validation in process), longer and randomized: new inputs
# each run. The default suite runs them briefly with fixed inputs.
FUZZ_EXAMPLES ?= 20000
fuzz: setup-test system-deps
	SBD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_fuzz.py -q -p no:randomly
