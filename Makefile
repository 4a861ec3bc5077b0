# sagaline: the two commands of the README, and the steps they are made of.
#
#   make demo   set everything up, start local Kafka + PostgreSQL, run the main job
#   make test   set everything up, then ruff, import contracts, mypy --strict, pytest
#
# Neither needs Docker or any exported setting: Python dependencies go into .venv,
# Kafka comes from Maven Central into ~/.cache/sagaline, PostgreSQL and Chromium (for the
# console's browser tests) from apt when absent,
# and the test session starts (and stops) its own Kafka and PostgreSQL.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sagaline-installed

# The main job, run after `sagaline dev up`: the demo (sagas/demo.py).
DEMO_COMMAND ?= $(BIN)/sagaline demo

.PHONY: demo test setup infra browser bytecode lint typecheck pytest down

demo: infra bytecode
	$(BIN)/sagaline dev up
	$(DEMO_COMMAND)

test: infra lint typecheck pytest

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "setup: creating $(VENV) and installing sagaline with its dependencies (about a minute the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	mkdir -p $(VENV)/typecheck && ln -sfn ../.. $(VENV)/typecheck/sagaline
	touch $(STAMP)

infra: setup
	$(BIN)/sagaline dev install

bytecode: setup
	@# every sagaline process (and the tests start hundreds) imports our modules; with
	@# PYTHONDONTWRITEBYTECODE set, each would compile them from source again
	$(BIN)/python -m compileall -q -x '/(\.venv|build|node_modules|\.git)/' .

browser:
	@# the console's browser tests drive Debian's chromium (Playwright, no browser download)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "browser: apt-get install chromium (the console's browser tests need it)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "browser: chromium is missing; install it (sudo apt-get install -y chromium) for the browser tests"; \
	  fi; }

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

pytest: infra browser bytecode
	@# two workers, each with its own Kafka and PostgreSQL (docs/adr/0022); a test stuck
	@# in C ends its worker (tests/backstop.py): at most two workers replaced, then the run stops
	$(BIN)/pytest -n 2 --dist loadfile --max-worker-restart 2 --durations=30

down: setup
	$(BIN)/sagaline dev down
