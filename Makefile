# attnviz: `make run` sets up and starts the app; `make test` sets up and runs every test.
# Both create/refresh .venv from the pinned requirements (plus oneMKL on Intel CPUs), install
# the project itself (`pip install -e .`), install the Debian packages they need (as root,
# via apt-get), and warm the Numba cache so nobody waits for a JIT compile.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PORT    ?= 8501
# The app serves this machine only by default; ADDRESS=0.0.0.0 serves the network (a class).
ADDRESS ?= 127.0.0.1

# oneMKL is what the kernels' tile GEMMs call on Intel CPUs only (kernels/_blaslib.py);
# elsewhere its ~700 MB would never be loaded, so it is not installed.
MKL_REQ := $(shell grep -qm1 GenuineIntel /proc/cpuinfo 2>/dev/null && echo requirements-mkl.txt)

# Thread-safe Numba layer (Streamlit calls kernels from one thread per session). The JIT
# cache lives where plain Python puts it too (~/.cache/attnviz, or ATTNVIZ_CACHE_DIR).
export NUMBA_THREADING_LAYER ?= omp

PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: run test test-nojit setup setup-dev system-deps system-deps-test warm bench clean

$(VENV)/.runtime: requirements.txt $(MKL_REQ) pyproject.toml
	@echo "== setting up $(VENV) (the first time takes a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt $(addprefix -r ,$(MKL_REQ))
	$(PIP) --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime system-deps
setup-dev: $(VENV)/.dev system-deps-test

system-deps:
	@scripts/system-deps.sh libgomp1

system-deps-test:
	@scripts/system-deps.sh libgomp1 chromium

warm: setup
	@echo "== warming the kernels (the first time compiles them, ~20-60 s, and measures this host's"
	@echo "   kernel choices, <= 20 s; then ~1 s)"
	$(PY) -c "import attnviz; attnviz.warmup(progress=print)"

run: warm
	@echo "== starting attnviz on http://$(ADDRESS):$(PORT) (Ctrl+C stops it)"
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
	rm -rf $(VENV) test-artifacts .pytest_cache *.egg-info
