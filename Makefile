# make setup: .venv with pinned packages and generated protobuf stubs (idempotent, quick when nothing changed)
# make test:  the whole suite
# make run:   a local Cognito emulator + the authz server, no AWS account and no Docker
# make token: a fresh access token for the demo user of the running stack

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP_DEPS   := $(VENV)/.deps-installed
STAMP_PROTOS := authz/_proto/.generated
PROTO_SOURCES := $(shell find protos -name '*.proto') protos/generate.py

.PHONY: setup protos test run token clean

setup: $(STAMP_DEPS) $(STAMP_PROTOS)

$(STAMP_DEPS): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(STAMP_PROTOS): $(STAMP_DEPS) $(PROTO_SOURCES)
	$(PY) protos/generate.py
	touch $@

protos: $(STAMP_DEPS)
	$(PY) protos/generate.py
	touch $(STAMP_PROTOS)

test: setup
	$(PY) -m pytest -q

run: setup
	$(PY) -m stack.run

token:
	@$(PY) -m stack.token

clean:
	rm -rf $(VENV) authz/_proto .pytest_cache .run
