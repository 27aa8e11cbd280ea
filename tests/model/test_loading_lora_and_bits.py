"""piip_llava/model/loading.py: ``--model-base`` (a LoRA output merged in memory) in every entry point, and
``--load-8bit`` / ``--load-4bit`` (bitsandbytes): its configuration, and its clear error where it cannot run."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest
import torch
from peft import PeftModel

from piip_llava.model import PiipLlavaForConditionalGeneration
from piip_llava.model.loading import (
    UNQUANTIZED_MODULES,
    add_loading_arguments,
    load_for_inference,
    loading_flags,
    loading_options,
    quantization_config,
)
from tests.conftest import solid_image

PROMPT = "USER: <image>\nWhat color? ASSISTANT:"


@pytest.fixture(scope="module")
def lora_logits(lora_run):
    """The oracle: PEFT's own unmerged model on the base, and its processor's inputs."""
    base_dir, lora_dir = lora_run
    _, processor = load_for_inference(base_dir, device="cpu")
    inputs = processor(text=PROMPT, images=solid_image())
    base = PiipLlavaForConditionalGeneration.from_pretrained(base_dir)
    with torch.no_grad():
        unmerged = PeftModel.from_pretrained(base, lora_dir).eval()(**inputs).logits
    return inputs, unmerged


def test_model_base_merges_the_lora_output_in_memory(lora_run, lora_logits):
    base_dir, lora_dir = lora_run
    inputs, expected = lora_logits
    model, processor = load_for_inference(lora_dir, device="cpu", model_base=base_dir)
    assert type(model) is PiipLlavaForConditionalGeneration and not model.training
    assert not any("lora" in name for name, _ in model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(**processor(text=PROMPT, images=solid_image())).logits, expected)
    base, _ = load_for_inference(base_dir, device="cpu")
    with torch.no_grad():
        assert not torch.allclose(base(**inputs).logits, expected)  # the run did change the model


def test_model_base_mismatch_is_a_clear_error(lora_run):
    base_dir, lora_dir = lora_run
    with pytest.raises(ValueError, match="is a LoRA output: pass its base model with --model-base"):
        load_for_inference(lora_dir, device="cpu")
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        load_for_inference(base_dir, device="cpu", model_base=base_dir)


def test_serving_engine_from_worker_flags_loads_the_merged_model(lora_run, lora_logits):
    """The worker, the API in local mode and CLI chat all build their engine from these flags."""
    from piip_llava.serve.cli import build_parser
    from piip_llava.serve.model_worker import engine_from_args

    base_dir, lora_dir = lora_run
    inputs, expected = lora_logits
    args = build_parser().parse_args(["--model-path", str(lora_dir), "--model-base", str(base_dir)])
    engine = engine_from_args(args)
    try:
        with torch.no_grad():
            torch.testing.assert_close(engine.model(**inputs).logits, expected)
    finally:
        engine.close()


def test_eval_run_with_model_base_answers_like_the_merged_model(lora_run, tmp_path):
    from piip_llava.cli import main
    from piip_llava.train.lora import merge_lora

    base_dir, lora_dir = lora_run
    merged = merge_lora(lora_dir, tmp_path / "merged", base=base_dir)
    solid_image().save(tmp_path / "red.png")
    questions = tmp_path / "questions.jsonl"
    rows = [{"question_id": i, "image": "red.png", "text": text} for i, text in enumerate(["What color?", "Hi"])]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    answers = {}
    for name, flags in {"base": ["--model-path", str(lora_dir), "--model-base", str(base_dir)],
                        "merged": ["--model-path", str(merged)]}.items():  # fmt: skip
        path = tmp_path / f"{name}.jsonl"
        assert main(["eval", "run", "--benchmark", "textvqa", "--question-file", str(questions), "--image-folder",
                     str(tmp_path), "--answers-file", str(path), "--max-new-tokens", "6", *flags]) == 0  # fmt: skip
        answers[name] = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    assert answers["base"] == answers["merged"] and len(answers["base"]) == 2


def test_flags_parse_and_travel(tmp_path):
    parser = argparse.ArgumentParser()
    add_loading_arguments(parser)
    args = parser.parse_args(["--model-base", "B", "--load-4bit", "--dtype", "float16"])
    assert loading_options(args) == {
        "device": "auto", "dtype": "float16", "model_base": "B", "load_8bit": False, "load_4bit": True
    }  # fmt: skip
    assert parser.parse_args(loading_flags(args)) == args  # a launcher passes on exactly what it was given
    with pytest.raises(SystemExit):
        parser.parse_args(["--load-8bit", "--load-4bit"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error path")
@pytest.mark.parametrize("flag", ["load_8bit", "load_4bit"])
def test_quantised_loading_on_cpu_is_a_clear_error(served_tiny_dir, flag):
    with pytest.raises(ValueError, match=r"--load-\dbit quantises with bitsandbytes, which needs a CUDA device"):
        load_for_inference(served_tiny_dir, device="auto", **{flag: True})


def test_quantisation_config(monkeypatch):
    cuda = torch.device("cuda")
    assert quantization_config(False, False, cuda, torch.bfloat16) is None
    with pytest.raises(ValueError, match="exclude each other"):
        quantization_config(True, True, cuda, torch.bfloat16)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    with pytest.raises(ValueError, match="pip install bitsandbytes"):
        quantization_config(False, True, cuda, torch.bfloat16)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    four = quantization_config(False, True, cuda, torch.bfloat16)
    assert (four.load_in_4bit, four.bnb_4bit_quant_type, four.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert four.bnb_4bit_compute_dtype == torch.bfloat16 and four.llm_int8_skip_modules == UNQUANTIZED_MODULES
    eight = quantization_config(True, False, cuda, torch.float16)
    assert eight.load_in_8bit and not eight.load_in_4bit


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="needs a CUDA device and bitsandbytes",
)
@pytest.mark.parametrize("flag", ["load_8bit", "load_4bit"])
def test_quantised_loading_on_cuda_answers_like_full_precision(served_tiny_dir, flag):
    full, processor = load_for_inference(served_tiny_dir, device="cuda", dtype="float16")
    quantised, _ = load_for_inference(served_tiny_dir, device="cuda", dtype="float16", **{flag: True})
    layer = quantised.model.language_model.layers[0].self_attn.q_proj
    assert type(layer).__module__.startswith("bitsandbytes")
    assert type(quantised.lm_head) is torch.nn.Linear  # the LLM only is quantised
    inputs = processor(text=PROMPT, images=solid_image()).to("cuda")
    with torch.no_grad():
        full_logits, quantised_logits = full(**inputs).logits.float(), quantised(**inputs).logits.float()
    assert torch.nn.functional.cosine_similarity(full_logits.flatten(), quantised_logits.flatten(), dim=0) > 0.9


@pytest.fixture(scope="module")
def served_tiny_dir(tmp_path_factory):
    from piip_llava.model.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")
