"""piip_llava/convert/llava.py"""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPVisionConfig, CLIPVisionModel
from transformers.image_utils import OPENAI_CLIP_MEAN

import piip_llava.model  # noqa: F401  (registers the Auto classes)
from piip_llava.cli import main
from piip_llava.convert.llava import vocabulary_rows
from piip_llava.model.vision.weights import read_state_dict
from tests.convert.conftest import TINY_CLIP
from tests.convert.layouts import llava15_logits, randomize, write_llava_checkpoint

PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]


def test_llava15_converts_to_our_baseline_with_the_same_logits_and_greedy_output(llava15, llava15_converted):
    model = AutoModelForImageTextToText.from_pretrained(llava15_converted).eval()
    processor = AutoProcessor.from_pretrained(llava15_converted)
    config = model.config
    assert (config.projector_type, config.vision_config.feature_layer, config.image_aspect_ratio) == (
        "mlp2x_gelu",
        -2,
        "pad",
    )
    assert config.image_mean == pytest.approx(OPENAI_CLIP_MEAN) and config.image_seq_length == 16
    prompt = processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=prompt, images=Image.new("RGB", (50, 70), (20, 90, 200)))
    vocab = llava15.llm.config.vocab_size
    with torch.no_grad():
        logits = model(**inputs).logits
        expected, embeddings = llava15_logits(
            llava15, inputs["input_ids"], inputs["pixel_values"], config.image_token_id
        )
        torch.testing.assert_close(logits[..., :vocab], expected, rtol=1e-5, atol=1e-5)
        ours = model.generate(**inputs, max_new_tokens=8, do_sample=False)[:, inputs["input_ids"].shape[1] :]
        theirs = llava15.llm.generate(inputs_embeds=embeddings, max_new_tokens=8, do_sample=False)
    assert ours.tolist() == theirs.tolist()
    dropped = json.loads((llava15_converted / "conversion.json").read_text())["dropped"]
    assert list(dropped) == ["model.layers.0.self_attn.rotary_emb.inv_freq"]


def test_a_checkpoint_that_saved_its_tower_uses_that_tower(llava15, llm_tokenizer, tmp_path):
    tuned = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP))
    randomize(tuned, scale=0.1)
    state = read_state_dict(llava15.root / "llava")
    tower = {f"vision_model.{k}": v for k, v in tuned.state_dict().items()} | {
        "vision_model.embeddings.position_ids": torch.arange(17)[None]}  # saved by transformers<4.31  # fmt: skip
    state |= {f"model.vision_tower.vision_tower.{k}": v for k, v in tower.items()}
    write_llava_checkpoint(tmp_path / "llava", state, llava15.config, llm_tokenizer, safetensors=True)
    args = ["convert", "--from", "llava", "--vision-tower", str(llava15.root / "clip"), str(tmp_path / "llava")]
    assert main([*args, str(tmp_path / "ours")]) == 0
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "ours")
    torch.testing.assert_close(
        model.vision_tower.branches[0].layers[2].mlp.fc1.weight, tuned.encoder.layers[2].mlp.fc1.weight
    )
    dropped = json.loads((tmp_path / "ours" / "conversion.json").read_text())["dropped"]
    assert "model.vision_tower.vision_tower.vision_model.post_layernorm.weight" in dropped
    assert "model.vision_tower.vision_tower.vision_model.embeddings.position_ids" in dropped


def test_unsupported_llava_checkpoints_are_named(llava15, llm_tokenizer, tmp_path, capsys):
    state = read_state_dict(llava15.root / "llava") | {"model.image_newline": torch.zeros(64)}  # LLaVA-1.6
    write_llava_checkpoint(tmp_path / "next", state, llava15.config, llm_tokenizer, safetensors=True)
    args = ["convert", "--from", "llava", "--vision-tower", str(llava15.root / "clip")]
    assert main([*args, str(tmp_path / "next"), str(tmp_path / "out")]) == 2
    assert (
        "unexpected source keys (neither used nor a known unused tensor): model.image_newline"
        in capsys.readouterr().err
    )
    (tmp_path / "next" / "config.json").write_text(
        json.dumps(dict(llava15.config, mm_patch_merge_type="spatial_unpad"))
    )
    assert main([*args, str(tmp_path / "next"), str(tmp_path / "out")]) == 2
    assert "mm_patch_merge_type='spatial_unpad'" in capsys.readouterr().err
    assert main(["convert", "--from", "llava", str(tmp_path / "next"), str(tmp_path / "out")]) == 2
    assert "needs --vision-tower" in capsys.readouterr().err


def test_vocabulary_rows_pad_to_64_only_when_tokens_are_added():
    assert vocabulary_rows(32001, 32000) == 32064
    assert vocabulary_rows(32001, 32064) == 32064
    assert vocabulary_rows(700, 641) == 704
