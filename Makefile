# Payment Parity Monitor: `make run` and `make test` each do their own set-up on a fresh machine.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RUFF   := $(VENV)/bin/ruff
PIP    := $(PY) -m pip install --disable-pip-version-check -q

# Stamp files: rebuilt (re-installed) when the requirements they come from change.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP     := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.PHONY: help venv dev system run test lint fmt clean

help:
	@echo "make run     set up .venv and run the monitor (demo mode when STRIPE_API_KEY is unset)"
	@echo "make test    set up .venv with dev tools, install redis/PostgreSQL/Chromium if missing, run pytest"
	@echo "make bench   set up .venv with dev tools, run the benchmark (~15 min), write BENCHMARKS.md (BENCH_ARGS=...)"
	@echo "make lint    ruff format --check and ruff check"
	@echo "make fmt     ruff format and ruff check --fix"
	@echo "make venv    create .venv and install requirements.txt"
	@echo "make dev     make venv, plus requirements-dev.txt"
	@echo "make system  install the services the tests start (as root through apt-get)"
	@echo "make clean   remove .venv"

venv: $(RUNTIME_STAMP)
dev: $(DEV_STAMP)

$(RUNTIME_STAMP): requirements.txt
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null || { \
	  echo "Python 3.11 or newer is needed: $(PYTHON) is $$($(PYTHON) -V 2>&1 || echo missing); use make PYTHON=python3.11 ..." >&2; \
	  exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  rm -rf $(VENV); \
	  echo "could not create $(VENV) with $(PYTHON) -m venv (on Debian/Ubuntu: apt-get install python3-venv)" >&2; \
	  exit 1; }
	$(PIP) -r requirements.txt
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	@touch $@

system:
	@bash scripts/system-deps.sh

run: venv
	$(PY) scripts/run.py

test: dev system
	$(PY) -m pytest

.PHONY: bench
bench: dev
	$(PY) -m benchmarks $(BENCH_ARGS)

lint: dev
	$(RUFF) format --check .
	$(RUFF) check .

fmt: dev
	$(RUFF) format .
	$(RUFF) check --fix .

clean:
	rm -rf $(VENV)
