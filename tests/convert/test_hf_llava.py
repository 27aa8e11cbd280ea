"""piip_llava/convert/hf_llava.py"""

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, LlamaConfig, LlavaForConditionalGeneration

import piip_llava.model  # noqa: F401  (registers the Auto classes)
from piip_llava.cli import main
from piip_llava.model import PiipLlavaConfig
from piip_llava.model.vision import get_tower_config
from tests.convert.layouts import llava15_logits

PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]


def test_llava15_to_ours_to_hf_llava_keeps_logits_and_greedy_output(llava15, llava15_converted, tmp_path):
    assert main(["convert", "--to", "hf-llava", str(llava15_converted), str(tmp_path)]) == 0
    ours = AutoModelForImageTextToText.from_pretrained(llava15_converted).eval()
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor, hf_processor = AutoProcessor.from_pretrained(llava15_converted), AutoProcessor.from_pretrained(tmp_path)
    prompt = processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    hf_prompt = hf_processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert prompt == processor.tokenizer.bos_token + hf_prompt  # llava-hf templates leave BOS to the tokenizer
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 72, 3), dtype=np.uint8))
    inputs, hf_inputs = (
        processor(text=prompt, images=image),
        hf_processor(text=hf_prompt, images=image, return_tensors="pt"),
    )
    assert torch.equal(hf_inputs["input_ids"], inputs["input_ids"])  # same tokenizer, 16 image tokens each
    torch.testing.assert_close(hf_inputs["pixel_values"], inputs["pixel_values"], rtol=0, atol=1e-6)  # pad, resize
    with torch.no_grad():
        logits = ours(**inputs).logits
        torch.testing.assert_close(hf(**inputs).logits, logits, rtol=1e-5, atol=1e-5)
        expected, _ = llava15_logits(llava15, inputs["input_ids"], inputs["pixel_values"], ours.config.image_token_id)
        torch.testing.assert_close(logits[..., : expected.shape[-1]], expected, rtol=1e-5, atol=1e-5)
        greedy = ours.generate(**inputs, max_new_tokens=8, do_sample=False)
        assert hf.generate(**inputs, max_new_tokens=8, do_sample=False).tolist() == greedy.tolist()


def test_export_refuses_what_llava_cannot_express(tmp_path, capsys):
    text = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, vocab_size=128
    )
    PiipLlavaConfig(vision_config=get_tower_config("tiny-clip-2branch"), text_config=text).save_pretrained(tmp_path)
    assert main(["convert", "--to", "hf-llava", str(tmp_path), str(tmp_path / "hf")]) == 2
    error = capsys.readouterr().err
    assert "one CLIP branch with its CLS token" in error and "projector_type is 'piip'" in error
