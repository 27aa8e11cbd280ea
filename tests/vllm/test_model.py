"""piip_llava/vllm: vLLM runs PIIP-LLaVA through the plugin and gives exactly HF ``generate``'s greedy tokens."""

import numpy as np
import pytest
import torch
from PIL import Image

from piip_llava.model.generation import chat_prompt
from tests.vllm.conftest import MAX_MODEL_LEN


def _image(seed: int, size=(72, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


CASES = [  # (question, images): 0, 1 and 2 images per prompt, run as one batch
    ("Describe it briefly.", []),
    ("What color is this?", [_image(0)]),
    ("Compare the two images.", [_image(1, (40, 90)), _image(2)]),
    ("How many shapes are there?", [_image(3, (64, 64))]),
]


@pytest.fixture(scope="module")
def llm(vllm_model_dir):
    from vllm import LLM

    engine = LLM(
        model=vllm_model_dir,
        dtype="float32",
        enforce_eager=True,
        max_model_len=MAX_MODEL_LEN,
        limit_mm_per_prompt={"image": 2},
    )
    yield engine
    engine.llm_engine.engine_core.shutdown()


def _hf_greedy(hf_model, prompt, images, max_new_tokens):
    model, processor = hf_model
    inputs = processor(text=prompt, images=images or None)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_ids = inputs["input_ids"][0].tolist()
    return prompt_ids, output[0, len(prompt_ids) :].tolist()


def test_plugin_is_registered_through_the_entry_point():
    from importlib.metadata import entry_points

    from vllm import ModelRegistry

    (plugin,) = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "piip_llava"]
    plugin.load()()
    assert "PiipLlavaForConditionalGeneration" in ModelRegistry.get_supported_archs()


def test_batched_greedy_tokens_equal_hf_generate(llm, hf_model):
    from vllm import SamplingParams

    prompts = [chat_prompt(text, image_count=len(images)) for text, images in CASES]
    requests = [
        {"prompt": prompt, "multi_modal_data": {"image": images}} if images else {"prompt": prompt}
        for prompt, (_, images) in zip(prompts, CASES)
    ]
    outputs = llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=16))
    image_seq_length = hf_model[1].image_seq_length
    for prompt, (_, images), output in zip(prompts, CASES, outputs):
        prompt_ids, expected = _hf_greedy(hf_model, prompt, images, 16)
        assert output.prompt_token_ids == prompt_ids  # BOS, template, each <image> -> image_seq_length tokens
        assert prompt_ids.count(hf_model[0].config.image_token_id) == len(images) * image_seq_length
        assert list(output.outputs[0].token_ids) == expected


def test_token_prompts_and_aspect_mode(llm, hf_model):
    """A token prompt with one ``<image>`` per image is expanded by the plugin; ``aspect_ratio`` reaches our image
    processor (``square`` crops where ``pad`` pads, so the answers see different pixels)."""
    from vllm import SamplingParams

    model, processor = hf_model
    prompt, image = chat_prompt("What is in the picture?", image_count=1), _image(5, (120, 40))
    token_ids = processor.tokenizer(prompt)["input_ids"]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    for aspect in ("pad", "square"):
        request = {"prompt_token_ids": token_ids, "multi_modal_data": {"image": image}}
        request["mm_processor_kwargs"] = {"aspect_ratio": aspect}
        (output,) = llm.generate([request], params)
        processor.image_processor.aspect_ratio = aspect
        try:
            inputs = processor(text=prompt, images=[image])
            with torch.no_grad():
                expected = model.generate(**inputs, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        finally:
            processor.image_processor.aspect_ratio = model.config.image_aspect_ratio
        assert list(output.outputs[0].token_ids) == expected[0, inputs["input_ids"].shape[1] :].tolist()
