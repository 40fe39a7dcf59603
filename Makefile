# Two commands work on a fresh clone with only Python, pip and make:
#   make demo   .venv-demo: `pip install ".[figures]"` (the library and matplotlib), then
#               expand the bundled sample dataset against the local reference server and
#               prepare a chat set from it (split by seed, decontaminated: scripts/to_sft.py)
#   make test   .venv: the package editable with the dev extra (pytest, ruff, mypy, ray), then
#               the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_VENV ?= .venv-demo
DEMO_OUT ?= out/demo
# What `pip install .` copies: the demo's install is redone when one of these changes.
PACKAGE_FILES := pyproject.toml $(shell find synth_datasets cards -type f ! -path '*__pycache__*')

.PHONY: demo test test-versions lint format clean

%/bin/python:
	$(PYTHON) -m venv $*
	$*/bin/python -m pip install --quiet --upgrade pip

$(DEMO_VENV)/.installed: $(PACKAGE_FILES) | $(DEMO_VENV)/bin/python
	$(DEMO_VENV)/bin/python -m pip install --quiet ".[figures]"
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/synth-datasets expand synth_datasets/data/sample_seeds.jsonl --local \
		--columns conv_prefix,response --prompt-file synth_datasets/data/sample_prompt.txt \
		--multiplier 4 --output $(DEMO_OUT)
	$(DEMO_VENV)/bin/python scripts/to_sft.py $(DEMO_OUT) \
		--mix-in-seeds synth_datasets/data/sample_seeds.jsonl \
		--decontaminate-against synth_datasets/data/sample_eval.jsonl --output $(DEMO_OUT)-sft

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The suite on the oldest and the newest supported Python too (pyenv's interpreters), each in its
# own virtualenv; a version this machine lacks is skipped with a line saying so.
PYENV_ROOT ?= $(HOME)/.pyenv
test-versions:
	@for v in 3.10 3.13; do \
		py=$$(ls -d $(PYENV_ROOT)/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -1); \
		if [ -z "$$py" ]; then echo "Python $$v not found under $(PYENV_ROOT): skipped"; continue; fi; \
		echo "== the suite on $$($$py --version)"; \
		$(MAKE) --no-print-directory test VENV=.venv-$$v PYTHON=$$py || exit 1; \
	done

lint: $(VENV)/.installed
	$(BIN)/ruff check synth_datasets tests scripts
	$(BIN)/ruff format --check synth_datasets tests scripts
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff format synth_datasets tests scripts
	$(BIN)/ruff check --fix synth_datasets tests scripts

clean:
	rm -rf $(VENV) $(DEMO_VENV) .venv-3.10 .venv-3.13 out build dist *.egg-info .mypy_cache
