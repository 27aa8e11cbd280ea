"""vLLM fixtures: a tiny PIIP-LLaVA whose attention heads vLLM's CPU attention accepts, built through the CLI.

These tests run in ``.venv-vllm`` (``make test``); each module starts one vLLM engine (~40 s on 2 cores).
"""

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: plenty for tiny models
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

MODEL_NAME = "tiny-vllm"
MAX_MODEL_LEN = 1024


@pytest.fixture(scope="session", autouse=True)
def _needs_vllm() -> None:
    """Skip where vLLM is not installed (the main venv ignores this folder; this covers `pytest tests/vllm`)."""
    pytest.importorskip("vllm")


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory) -> str:
    from piip_llava.cli import main

    output = tmp_path_factory.mktemp("vllm") / MODEL_NAME
    assert main(["build", "--tiny", "--tiny-head-dim", "64", "--output", str(output)]) == 0
    return str(output)


@pytest.fixture(scope="session")
def hf_model(vllm_model_dir):
    """The same directory loaded by ``transformers`` (the oracle)."""
    from piip_llava.model.loading import load_for_inference

    return load_for_inference(vllm_model_dir, device="cpu", dtype="float32")
