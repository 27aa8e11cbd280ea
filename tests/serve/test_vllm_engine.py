"""piip_llava/serve/vllm_engine.py without vLLM (its engine tests run in .venv-vllm: tests/vllm/test_vllm_engine.py)."""

import importlib.util

import pytest

from piip_llava.serve.vllm_engine import VllmEngine, fold_image_spans


def test_fold_image_spans_gives_one_token_per_image():
    image, span = 9, 3
    ids = [1, 4, image, image, image, 5, image, image, image, image, image, image, 6]
    assert fold_image_spans(ids, image, span) == [1, 4, image, 5, image, image, 6]
    assert fold_image_spans([1, image, image, image], image, span) == [1, image]
    assert fold_image_spans([1, 2], image, span) == [1, 2]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_engine_says_what_to_install(tmp_path):
    with pytest.raises(ImportError, match="make vllm-venv"):
        VllmEngine(str(tmp_path), "tiny")
