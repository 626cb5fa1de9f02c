# keel.postgres — two commands: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
SANDBOX_DIR ?= .sandbox
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export VENV := $(abspath $(VENV))
export ANSIBLE_COLLECTIONS_PATH := $(abspath .build/collections)
export ANSIBLE_NOCOLOR := 1
PYTEST := $(BIN)/pytest -p no:cacheprovider

.PHONY: help venv test lint sanity unit integration realworld molecule demo sandbox-up sandbox-down sandbox-status clean

help:
	@echo "make demo          create the venv, start the sandbox, run playbooks/demo.yml, stop the sandbox"
	@echo "make test          everything CI runs: lint, sanity, unit, integration (incl. build+install), molecule"
	@echo "make realworld     the pagila real-workload suite (KEEL_PAGILA_DIR, default ../shared/data/pagila); not in make test"
	@echo "make sandbox-up    start PostgreSQL + S3 on loopback and keep them (state in $(SANDBOX_DIR)/)"
	@echo "make sandbox-down  stop them"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

.build/collections/ansible_collections/keel/postgres: | venv
	$(BIN)/python -c 'from tests.harness.collection_path import ensure_collection_link; ensure_collection_link()'

# Fails on the first failing stage: each is a prerequisite run in order.
test: venv
	$(MAKE) lint
	$(MAKE) sanity
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) molecule
	@echo "make test: all stages passed"

lint: venv .build/collections/ansible_collections/keel/postgres
	$(BIN)/ruff check .
	# the continuation-line rules of ansible-test's pep8, which ruff does not have: fail fast here
	$(BIN)/pycodestyle --max-line-length=160 --ignore=E203,E402,E501,E701,E704,E741,W503,W504 $(wildcard plugins tests tools bench)
	# the example inventory's vault is encrypted with an example password, so its variables get linted too
	ANSIBLE_VAULT_PASSWORD_FILE=$(abspath inventories/example/vault-password.example) $(BIN)/ansible-lint

sanity: venv
	tools/ansible-test-sanity

unit: venv
	$(PYTEST) tests/unit

# Two workers (each with its own servers on free ports), then the latency-gate tests alone: they assert that an
# unchanged schema passes a 10% p99 gate, which a neighbour test competing for the CPU would make meaningless.
integration: venv
	$(PYTEST) -n 2 -m "not alone" tests/integration
	$(PYTEST) -m alone tests/integration

# Real-workload suite on the pagila sample database. Not part of `make test`: the data lives
# outside the project (a user's clone has no ../shared); .ci/run calls it when the data is there.
KEEL_PAGILA_DIR ?= $(abspath ../shared/data/pagila)

realworld: venv
	@test -f "$(KEEL_PAGILA_DIR)/pagila-schema.sql" || { echo "make realworld: no pagila in $(KEEL_PAGILA_DIR); set KEEL_PAGILA_DIR=/path/to/pagila" >&2; exit 2; }
	KEEL_PAGILA_DIR="$(KEEL_PAGILA_DIR)" $(PYTEST) tests/realworld

molecule: venv .build/collections/ansible_collections/keel/postgres
	$(BIN)/molecule test --all

demo: venv .build/collections/ansible_collections/keel/postgres
	tools/demo "$(SANDBOX_DIR)"

sandbox-up: venv
	$(BIN)/python -m tests.harness.sandbox up --state-dir "$(SANDBOX_DIR)"

sandbox-down: venv
	$(BIN)/python -m tests.harness.sandbox down --state-dir "$(SANDBOX_DIR)"

sandbox-status: venv
	$(BIN)/python -m tests.harness.sandbox status --state-dir "$(SANDBOX_DIR)"

clean: sandbox-down
	rm -rf .build tests/output
