# Two entry points do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.mfn-installed

.PHONY: setup demo test schema golden clean

setup: $(INSTALLED)

# torch goes in first and pinned: a loose torch requirement resolved later would pull a multi-GB CUDA build.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[triton,torchserve,dev]'
	touch $@

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh

test: setup
	$(PY) -m pytest

schema: setup
	$(PY) -m mfn.spec > schema/modelspec.schema.json

golden: setup
	MFN_UPDATE_GOLDEN=1 $(PY) -m pytest tests/unit -q

clean:
	rm -rf $(VENV) .pytest_cache
