"""piip_llava/model/loading.py: device/dtype defaults that fit the machine, the config as the one source of the
template and image mode, and projector weights from sharded checkpoints."""

import json

import pytest
import torch

from piip_llava.model.builder import PROJECTOR_PREFIXES, load_projector_weights
from piip_llava.model.loading import load_for_inference, resolve_device, resolve_dtype
from piip_llava.model.tiny import save_tiny_model
from piip_llava.model.vision import weights


def test_auto_dtype_is_bf16_on_ampere_fp16_on_older_cuda_fp32_on_cpu(monkeypatch):
    assert resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("float32", "cuda") == torch.float32 and resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ValueError, match="fp8"):
        resolve_dtype("fp8", "cpu")


def test_auto_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_every_entry_point_defaults_to_auto():
    import argparse

    from piip_llava.eval.cli import add_arguments
    from piip_llava.serve.model_worker import add_engine_arguments

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    worker = parser.parse_args(["--model-path", "m"])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run = parser.parse_args(["run", "--benchmark", "textvqa", "--model-path", "m", "--question-file", "q",
                             "--answers-file", "a"])  # fmt: skip
    assert (worker.device, worker.dtype, run.device, run.dtype) == ("auto",) * 4
    assert run.template is None and run.image_aspect_ratio is None  # the model's own


def test_template_and_image_mode_come_from_the_config(tmp_path):
    directory = save_tiny_model(tmp_path / "tiny")
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    assert config["template"] == "vicuna_v1"  # written by build
    config.update(image_aspect_ratio="square", template="chatml_direct")
    config_path.write_text(json.dumps(config))
    model, processor = load_for_inference(directory)
    assert model.dtype == torch.float32 and model.device.type == "cpu" and not model.training
    assert processor.image_processor.aspect_ratio == "square"  # the saved preprocessor said "pad"
    assert model.config.template == "chatml_direct"
    rendered = processor.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")  # the saved chat template was vicuna's
    config["template"] = "no_such_template"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="template='no_such_template'"):
        load_for_inference(directory)


def test_projector_from_a_sharded_checkpoint_reads_only_its_shards(tmp_path, monkeypatch):
    from piip_llava.model.tiny import build_tiny_model

    model, _ = build_tiny_model(seed=3)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    shards = set(index.values())
    projector_shards = {shard for key, shard in index.items() if key.startswith(PROJECTOR_PREFIXES)}
    assert len(shards) > len(projector_shards) >= 1
    opened = []
    read_file = weights._read_file
    monkeypatch.setattr(
        weights, "_read_file", lambda path, prefixes=None: opened.append(path.name) or read_file(path, prefixes)
    )
    other, _ = build_tiny_model(seed=4)
    load_projector_weights(other.multi_modal_projector, tmp_path / "sharded")
    assert set(opened) == projector_shards
    for a, b in zip(model.multi_modal_projector.parameters(), other.multi_modal_projector.parameters()):
        assert torch.equal(a, b)
