# Two entry points do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.mfn-installed

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup system-deps demo test test-fast lint guard docs bench soak schema golden clean

setup: system-deps $(INSTALLED)

# Prometheus, promtool and Redis (redis-tools: the binaries without a service that would start) come from the
# distribution (Debian/Ubuntu); everything else from PyPI.
system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v redis-check-rdb >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus redis-tools >/dev/null; }

# torch goes in first and pinned: a loose torch requirement resolved later would pull a multi-GB CUDA build.
$(INSTALLED): pyproject.toml scripts/install_helm.py scripts/install_nginx.py scripts/fetch_crd_schemas.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[triton,torchserve,onnx,tensorflow,tflite,signing,tune,cache,dev]'
	$(PY) scripts/install_helm.py $(VENV)/bin
	$(PY) scripts/install_nginx.py $(VENV)/bin $(VENV)/opt/nginx
	$(PY) scripts/fetch_crd_schemas.py $(VENV)/share/mfn-crd-schemas
	@# Debian ships redis-server as a name for redis-check-rdb (the binary picks its role by that name).
	ln -sf "$$(command -v redis-check-rdb)" $(VENV)/bin/redis-server
	touch $@

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh

# Two xdist workers, one per core, grouped as tests/conftest.py says: about 7.5 minutes on a 2-core machine where the
# serial run takes 15-16 (three workers took as long, with more server starts slowed past their time-outs).
# `$(PY) -m pytest` alone runs the same tests serially.
PARALLEL := -n 2 --dist loadgroup --no-loadscope-reorder

test: setup lint guard
	$(PY) -m pytest $(PARALLEL)

# The hot path's guard: mfn's adapters against the hand-written ones, in-process (a few seconds); a doubling of
# mfn's per-request cost fails, while the servers' throughput is compared in `make bench`.
guard: setup
	$(PY) benchmarks/adapter_overhead.py --check

# ruff (with complexity, argument-count and blind-except rules) and mypy (strict on the public API): pyproject.toml.
lint: setup
	$(VENV)/bin/ruff check mfn tests benchmarks scripts examples
	$(VENV)/bin/mypy

# The edit loop: every test that starts no server (unit, CLI, chart, monitoring rules), in under a minute.
test-fast: setup
	$(PY) -m pytest -m "not integration" $(PARALLEL)

# The documentation site, built strictly (a warning fails it) into site/.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Never part of CI: about 25 minutes of load on the machine.
bench: setup
	$(PY) benchmarks/run.py
	$(PY) benchmarks/images.py
	$(PY) benchmarks/client_overhead.py
	$(PY) benchmarks/streaming.py

# Never part of CI: ten minutes of load per server while workers and servers are killed; writes RELIABILITY.md.
soak: setup
	$(PY) benchmarks/soak.py

schema: setup
	$(PY) -m mfn.spec > schema/modelspec.schema.json

# Every test file that compares with a golden file, found by the helper they all call.
golden: setup
	MFN_UPDATE_GOLDEN=1 $(PY) -m pytest -q $(shell grep -rl --include='test_*.py' assert_matches_golden tests)

clean:
	rm -rf $(VENV) .pytest_cache
