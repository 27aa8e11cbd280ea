"""piip_llava/demo.py: a shortened quickstart (a few training steps) on the committed pretrained parts, then a rerun
that reuses every step; and the shortened ``--from-scratch`` path."""

import json
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from piip_llava.cli import main
from piip_llava.demo import DEMO_PARTS, DemoConfig, demo_steps, step_data, train_command


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


def test_data_sizes_can_be_set_per_set_and_a_shared_folder_of_other_sizes_is_refused(tmp_path):
    data = tmp_path / "data"
    result = step_data(DemoConfig(output=tmp_path / "a", data=data, scale=0.02, sizes={"instruct": 30}))
    assert result["sizes"]["instruct"] == 30 and result["sizes"]["pretrain"] == 140  # 7,000 x 0.02
    assert len(json.loads((data / "instruct.json").read_text())) == 30
    assert step_data(DemoConfig(output=tmp_path / "b", data=data, scale=0.02, sizes={"instruct": 30})) == result
    with pytest.raises(SystemExit, match="other sizes"):
        step_data(DemoConfig(output=tmp_path / "c", data=data, scale=0.02))
    with pytest.raises(SystemExit, match="SET=VALUE"):
        main(["demo", "--output", str(tmp_path / "d"), "--size", "captions=3"])


def test_stages_group_batches_by_modality_and_length_when_asked(tmp_path):
    def grouping(*flags: str) -> str:
        configs = []

        def run_demo(config: DemoConfig) -> int:
            configs.append(config)
            return 0

        with mock.patch("piip_llava.demo.main", run_demo):
            assert main(["demo", "--output", str(tmp_path), *flags]) == 0
        command = train_command(configs[0], 1)
        return command[command.index("--group_by_modality_length") + 1]

    assert grouping() == "False"
    assert grouping("--group-by-length") == "True"
