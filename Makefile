# cssl-bench: one-command set-up. Every target creates .venv when missing and installs once
# (a stamp file records the install; re-running skips it unless pyproject.toml changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY := PASSIVE
export PYTHONDONTWRITEBYTECODE := 1
# pytest-xdist workers for the suite; each test file runs whole on one worker (its module fixtures are built once)
TEST_WORKERS ?= 2

.PHONY: install lint demo test test-all ffcv bench reproduce-small clean help

help:
	@echo "make demo   - install, then tiny SimCLR + MoCo v2 on the embedded dataset -> kNN + linear probes -> methods table"
	@echo "make lint   - ruff (lint + format check) and lint-imports (import layers, contracts in pyproject.toml)"
	@echo "make test   - install, lint, then the test suite (slow tests excluded; 'make test-all' includes them)"
	@echo "make ffcv   - install the FFCV fast loader with its system packages"
	@echo "make bench  - install lightly and run the training-step benchmark"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cssl-bench demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -m '' -n $(TEST_WORKERS) --dist loadfile

ffcv: $(STAMP)
	bash scripts/install_ffcv.sh $(BIN)

bench: $(STAMP)
	$(BIN)/pip install -e '.[bench]'
	$(BIN)/python benchmarks/train_step.py --quick

reproduce-small: $(STAMP)
	$(BIN)/cssl-bench reproduce all --scale small --seeds 3 --results results/ --runs runs/

clean:
	rm -rf runs .pytest_cache
