"""piip_llava/serve/vllm_engine.py: the HF engine's tests (tests/serve/test_engine.py: token limits per row, stop
strings, cancellation on disconnect, validation, blocking stream) run unchanged on the vLLM-backed engine, plus
concurrent streams equal to HF ``generate`` one by one and the media limits."""

import asyncio

import pytest

from piip_llava.model.generation import chat_prompt, generate_answers
from piip_llava.serve.media import MediaPolicy
from piip_llava.serve.protocol import ApiError
from tests.conftest import solid_image
from tests.serve.test_engine import (  # noqa: F401  (collected here with this module's `engine` fixture)
    _collect,
    _request,
    _text,
    test_blocking_stream_matches_async,
    test_cancelled_stream_frees_its_row,
    test_rows_keep_their_own_token_limits,
    test_stop_string_cuts_the_answer,
    test_validation_errors,
)
from tests.vllm.conftest import MAX_MODEL_LEN


@pytest.fixture(scope="module")
def engine(vllm_model_dir):
    from piip_llava.serve.vllm_engine import VllmEngine

    engine = VllmEngine(
        vllm_model_dir, "tiny", dtype="float32", max_model_len=MAX_MODEL_LEN, media=MediaPolicy(max_images=2)
    )
    yield engine
    engine.close()


def test_concurrent_streams_equal_hf_generate_one_by_one(engine, hf_model):
    model, processor = hf_model
    red, blue = solid_image((255, 0, 0)), solid_image((0, 0, 255), size=(40, 90))
    cases = [("What color is this?", [red]), ("Describe it briefly.", []), ("Compare the two images.", [red, blue])]
    results = asyncio.run(_collect(engine, [_request(text, images, max_new_tokens=12) for text, images in cases]))
    for (text, images), events in zip(cases, results):
        expected = generate_answers(model, processor, [chat_prompt(text, image_count=len(images))], images, 12)[0]
        assert _text(events).strip() == expected
        final = events[-1]
        prompt_tokens = processor(text=chat_prompt(text, image_count=len(images)), images=images or None)
        assert final["usage"]["prompt_tokens"] == prompt_tokens["input_ids"].shape[1]
        assert final["finish_reason"] in ("stop", "length") and final["usage"]["completion_tokens"] <= 12


def test_media_limits_apply_before_vllm(engine):
    with pytest.raises(ApiError, match="at most 2 images"):
        engine.prepare(_request("Three?", [solid_image()] * 3), print)
    events = asyncio.run(
        _collect(engine, [_request("Which is which?", [solid_image(), solid_image()], max_new_tokens=3)])
    )
    assert events[0][-1]["usage"]["completion_tokens"] <= 3
