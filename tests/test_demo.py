"""piip_llava/demo.py: a shortened quickstart (a few training steps) on the committed pretrained parts, then a rerun
that reuses every step; and the shortened ``--from-scratch`` path."""

import json

import pytest
import torch
from safetensors.torch import load_file

from piip_llava.cli import main
from piip_llava.demo import DEMO_PARTS, DemoConfig, demo_steps


def run_shortened(output, capsys, caplog, *extra: str) -> dict:
    arguments = ["demo", "--output", str(output), "--scale", "0.02", "--no-serve", *extra]
    caplog.clear()
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "| TextVQA (synthetic, with OCR tokens) |" in printed and "| MMBench (CircularEval) |" in printed
    assert "steps took" in printed
    return json.loads((output / "results.json").read_text())


def test_shortened_demo_builds_from_the_committed_parts_then_reuses_every_step(tmp_path, capsys, caplog):
    output = tmp_path / "demo"
    caplog.set_level("INFO", logger="piip_llava.demo")
    results = run_shortened(output, capsys, caplog)
    steps = demo_steps(DemoConfig(output=output))
    assert [step.name for step in steps] == ["data", "build", "stage1", "stage2", "eval", "report"]
    assert all(f"{step.name}: done in" in caplog.text for step in steps)
    assert (output / "loss.png").stat().st_size > 1000
    assert set(results["eval"]["scores"]) == {"textvqa", "textvqa_small", "mmbench", "pope"}
    assert all(results[stage]["steps"] >= 3 for stage in ("stage1", "stage2"))
    assert results["build"]["parts"] == str(DEMO_PARTS)

    # the base model carries the committed parts' weights: the ConvNeXt branch and the LLM
    base = load_file(output / "base" / "model.safetensors")
    llm = load_file(DEMO_PARTS / "llm" / "model.safetensors")
    assert torch.equal(base["model.language_model.layers.0.self_attn.q_proj.weight"],
                       llm["model.layers.0.self_attn.q_proj.weight"])  # fmt: skip
    convnext = load_file(DEMO_PARTS / "branches" / "convnext" / "model.safetensors")
    stem = next(value for key, value in convnext.items() if key.endswith("embeddings.patch_embeddings.weight"))
    assert any(value.shape == stem.shape and torch.equal(value, stem) for value in base.values())

    # stage 1 trains the projector alone: branches and LLM leave it as they came
    stage1 = load_file(output / "stage1" / "model.safetensors")
    for name, value in base.items():
        if "multi_modal_projector" in name:
            continue
        assert torch.equal(stage1[name], value), name
    assert any(not torch.equal(stage1[n], v) for n, v in base.items() if "multi_modal_projector" in n)

    weights_time = (output / "stage2" / "model.safetensors").stat().st_mtime
    run_shortened(output, capsys, caplog)
    assert all(f"{step.name}: done in an earlier run" in caplog.text for step in steps)
    assert (output / "stage2" / "model.safetensors").stat().st_mtime == weights_time
    with pytest.raises(SystemExit, match="holds a pretrained-parts run"):
        main(["demo", "--output", str(output), "--scale", "0.02", "--no-serve", "--from-scratch"])


def test_shortened_demo_from_scratch(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="piip_llava.demo")
    results = run_shortened(tmp_path / "demo", capsys, caplog, "--from-scratch", "--data", str(tmp_path / "data"))
    assert results["build"]["parts"] == "random"
    assert all(results[stage]["steps"] >= 3 for stage in ("warmup", "stage1", "stage2"))
