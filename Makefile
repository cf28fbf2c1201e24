# Medley: `make app` runs the main job on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch with a matching torchvision (open_clip needs it); pip takes both from local disk where they lie there.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: app demo test lint install dev bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,serve]"  # serve: the Ray Serve tests run too
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

# the main job: the web app on the embedded base and the starter library (prints its URL)
app: $(VENV)/.installed
	$(VENV)/bin/medley serve

# a contact sheet of base prompts, written to MEDLEY_HOME/outputs (no browser needed)
demo: $(VENV)/.installed
	$(VENV)/bin/medley generate \
		"a red circle on a blue background" \
		"a yellow striped square on a black background" \
		"a green dotted triangle on a white background" \
		"a pink checkered star on a gray background" \
		"a cyan outlined diamond on a purple background" \
		"a large orange cross on a green background" \
		--batch 6 --seed 0 --grid "$${MEDLEY_HOME:-$$HOME/.medley}/outputs/demo-grid.png"

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) benchmarks/base_quality.py

clean:
	rm -rf $(VENV) .pytest_cache
