# Two commands work on a fresh clone with only Python, pip and make:
#   make demo   expand the bundled sample dataset against the local reference server
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= out/demo

.PHONY: demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/synth-datasets expand synth_datasets/data/sample_seeds.jsonl --local \
		--columns conv_prefix,response --prompt-file synth_datasets/data/sample_prompt.txt \
		--multiplier 4 --output $(DEMO_OUT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check synth_datasets tests scripts
	$(BIN)/ruff format --check synth_datasets tests scripts
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff format synth_datasets tests scripts
	$(BIN)/ruff check --fix synth_datasets tests scripts

clean:
	rm -rf $(VENV) out build dist *.egg-info .mypy_cache
