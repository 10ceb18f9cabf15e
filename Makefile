# attnviz: `make run` sets up and starts the app; `make test` sets up and runs every test.
# Both create/refresh .venv from the pinned requirements, install the Debian packages they
# need (as root, via apt-get), and warm the Numba cache so nobody waits for a JIT compile.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
ADDRESS ?= 0.0.0.0

# Thread-safe Numba layer (Streamlit calls kernels from one thread per session) and a
# writable cache folder for compiled kernels.
export NUMBA_THREADING_LAYER ?= omp
export ATTNVIZ_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: run test test-nojit setup setup-dev system-deps system-deps-test warm bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime system-deps
setup-dev: $(VENV)/.dev system-deps-test

system-deps:
	@scripts/system-deps.sh libgomp1

system-deps-test:
	@scripts/system-deps.sh libgomp1 chromium

warm: setup
	$(PY) -c "import attnviz; attnviz.warmup()"

run: warm
	$(PY) -m streamlit run app.py --server.headless true --browser.gatherUsageStats false \
		--server.address $(ADDRESS) --server.port $(PORT)

test: setup-dev warm
	$(PY) -m ruff check .
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-nojit

# The pure-Python path of the kernels (no JIT): the kernel tests on small shapes.
test-nojit: setup-dev
	NUMBA_DISABLE_JIT=1 $(PY) -m pytest -m nojit -p no:cacheprovider -q

bench: warm
	$(PY) -m attnviz.bench

clean:
	rm -rf $(VENV) .cache test-artifacts .pytest_cache
