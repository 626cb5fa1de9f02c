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

.PHONY: help venv test lint sanity unit integration molecule demo sandbox-up sandbox-down sandbox-status docs clean

help:
	@echo "make demo          create the venv, start the sandbox, run playbooks/demo.yml, stop the sandbox"
	@echo "make test          everything CI runs: lint, sanity, unit, integration (incl. build+install), molecule"
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
	$(BIN)/ansible-lint

sanity: venv
	tools/ansible-test-sanity

unit: venv
	$(PYTEST) tests/unit

integration: venv
	$(PYTEST) tests/integration

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
