"""piip_llava/model/modeling_piip_llava.py, configuration_piip_llava.py, projector.py"""

import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig

from piip_llava.model import PiipLlavaConfig, PiipLlavaForConditionalGeneration
from piip_llava.model.tiny import build_tiny_model, save_tiny_model
from piip_llava.model.vision import get_tower_config
from tests.conftest import solid_image

PROMPT = "USER: <image>\nWhat color is it? ASSISTANT:"


def test_image_features_land_exactly_at_image_tokens(tiny_llava):
    model, processor = tiny_llava
    inputs = processor(text=["Look <image>\nhere and <image>\nthere"], images=[solid_image(), solid_image((0, 0, 255))])
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(kwargs), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
        features = model.get_image_features(inputs["pixel_values"]).pooler_output  # (2, N, D)
        text_embeddings = model.model.get_input_embeddings()(inputs["input_ids"])
    hook.remove()
    embeds = captured["inputs_embeds"][0]
    is_image = inputs["input_ids"][0] == model.config.image_token_id
    assert int(is_image.sum()) == 2 * model.config.image_seq_length
    assert torch.equal(embeds[is_image], features.reshape(-1, features.shape[-1]))  # in order, image 1 then 2
    assert torch.equal(embeds[~is_image], text_embeddings[0][~is_image])


def test_mismatched_image_tokens_raise_with_both_counts(tiny_llava):
    model, processor = tiny_llava
    inputs = processor(text=PROMPT, images=solid_image())
    with pytest.raises(ValueError, match=r"63 image tokens in the text, 64 image features"):
        model(input_ids=inputs["input_ids"][:, 1:].contiguous().clone().masked_fill_(
            torch.arange(inputs["input_ids"].shape[1] - 1) == 10, 5), pixel_values=inputs["pixel_values"])  # fmt: skip


def test_labels_ignore_image_positions(tiny_llava):
    model, processor = tiny_llava
    inputs = processor(text=PROMPT, images=solid_image())
    with torch.no_grad():
        loss_all = model(**inputs, labels=inputs["input_ids"]).loss
        masked = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
        loss_masked = model(**inputs, labels=masked).loss
    torch.testing.assert_close(loss_all, loss_masked)


def test_text_only_and_multi_image_prompts(tiny_llava):
    model, processor = tiny_llava
    with torch.no_grad():
        text_only = model(**processor(text="USER: hello ASSISTANT:"))
        two = model(**processor(text="<image> and <image>", images=[solid_image(), solid_image()]))
    assert text_only.logits.shape[1] < two.logits.shape[1]


def test_batched_greedy_equals_one_by_one(tiny_llava):
    model, processor = tiny_llava
    prompts = [
        ("USER: <image>\nWhat is shown? ASSISTANT:", [solid_image()]),
        ("USER: describe ASSISTANT:", []),
        ("USER: <image>\n<image>\ncompare the two please ASSISTANT:", [solid_image((0, 255, 0)), solid_image()]),
    ]  # fmt: skip
    singles = []
    with torch.no_grad():
        for text, images in prompts:
            inputs = processor(text=text, images=images or None)
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
            singles.append(out[0, inputs["input_ids"].shape[1] :].tolist())
        batch = processor(text=[t for t, _ in prompts], images=[i for _, imgs in prompts for i in imgs])
        assert processor.tokenizer.padding_side == "left"
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    batched = [row[batch["input_ids"].shape[1] :].tolist() for row in out]
    eos, pad = processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id
    for single, batched_row in zip(singles, batched):
        assert batched_row[: len(single)] == single
        assert all(token in (eos, pad) for token in batched_row[len(single) :])


def test_save_load_identical_logits(tiny_llava, tmp_path):
    model, processor = tiny_llava
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = PiipLlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    inputs = processor(text=PROMPT, images=solid_image())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)


def test_auto_classes_load_offline_in_a_fresh_process(tmp_path):
    save_tiny_model(tmp_path / "tiny")
    script = (
        "import piip_llava.model, torch\n"
        "from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor\n"
        "from PIL import Image\n"
        f"path = {str(tmp_path / 'tiny')!r}\n"
        "assert AutoConfig.from_pretrained(path).model_type == 'piip_llava'\n"
        "model = AutoModelForImageTextToText.from_pretrained(path).eval()\n"
        "processor = AutoProcessor.from_pretrained(path)\n"
        "messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Color?'}]}]\n"
        "prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)\n"
        "inputs = processor(text=prompt, images=Image.new('RGB', (40, 30)))\n"
        "print(type(model).__name__, model.generate(**inputs, max_new_tokens=3).shape[1] > 0)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "PiipLlavaForConditionalGeneration True"


@pytest.mark.parametrize("llm", ["qwen2", "mistral"])
def test_other_llm_families(llm):
    model, processor = build_tiny_model(llm=llm)
    assert model.config.text_config.model_type == llm
    with torch.no_grad():
        out = model.generate(**processor(text=PROMPT, images=solid_image()), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 3


def test_single_branch_llava15_baseline_uses_penultimate_layer():
    model, _ = build_tiny_model(tower="tiny-clip-2branch", projector_type="piip")
    vision = get_tower_config("tiny-clip-2branch")
    single = vision.branches[1]
    single.interaction_ranges = [[0, single.num_blocks - 1]]
    config = PiipLlavaConfig(
        vision_config={"branches": [single.to_dict()], "feature_layer": -2},
        text_config=model.config.text_config,
        projector_type="mlp2x_gelu",
        image_token_id=model.config.image_token_id,
    )
    baseline = PiipLlavaForConditionalGeneration(config).eval()
    tower = baseline.vision_tower
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        state = tower.branches[0].embed(pixel_values)
        penultimate = tower.branches[0].run_blocks(state, 0, single.num_blocks - 2)
        assert torch.equal(tower(pixel_values)[0], tower.branches[0].feature_map(penultimate))
    assert config.image_seq_length == 64


def test_full_size_7b_builds_on_meta_with_expected_shapes():
    vicuna_7b = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                            vocab_size=32064)  # fmt: skip
    sizes = {}
    for preset, tokens in [("piip-llava_clip-bl_512-256_7B", 1024), ("piip-llava_convnext-b_clip-l_640-224_7B", 400),
                           ("piip-llava_convnext-l_clip-l_1024-336_7B", 1024)]:  # fmt: skip
        config = PiipLlavaConfig(vision_config=get_tower_config(preset), text_config=vicuna_7b)
        with torch.device("meta"):
            model = PiipLlavaForConditionalGeneration(config)
        assert config.image_seq_length == tokens
        sizes[preset] = sum(p.numel() for p in model.multi_modal_projector.parameters()) / 1e6
        total = sum(p.numel() for p in model.parameters()) / 1e9
        assert 7.0 < total < 7.4
    # Per branch: Linear(D_j→4096) + GroupNorm(4096) + Linear(4096→4096); the official projector has ≈41–44 M for 7B.
    expected = {preset: sum(d * 4096 + 4096 + 2 * 4096 + 4096 * 4096 + 4096 for d in dims) / 1e6
                for preset, dims in [("piip-llava_clip-bl_512-256_7B", (1024, 768)),
                                     ("piip-llava_convnext-b_clip-l_640-224_7B", (1024, 1024)),
                                     ("piip-llava_convnext-l_clip-l_1024-336_7B", (1024, 1536))]}  # fmt: skip
    assert sizes == pytest.approx(expected)
    assert 40.9 <= min(sizes.values()) and max(sizes.values()) <= 44.1


def test_text_only_training_batch_keeps_the_vision_path_in_the_graph(tiny_llava):
    model, processor = tiny_llava
    inputs = processor(text="USER: hello there ASSISTANT: hi</s>")
    with torch.no_grad():
        eval_loss = model(**inputs, labels=inputs["input_ids"]).loss
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        projector_grads = [p.grad for p in model.multi_modal_projector.parameters()]
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
    torch.testing.assert_close(loss.detach(), eval_loss)
    assert all(g is not None and not g.any() for g in projector_grads)  # in the graph, with zero gradient
