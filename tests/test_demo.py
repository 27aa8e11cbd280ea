"""piip_llava/demo.py: a shortened quickstart (a few training steps), then a rerun that reuses every step."""

import json

from piip_llava.cli import main
from piip_llava.demo import STEPS


def test_shortened_demo_runs_every_step_then_reuses_them(tmp_path, capsys, caplog):
    output = tmp_path / "demo"
    arguments = ["demo", "--output", str(output), "--scale", "0.02", "--no-serve"]
    caplog.set_level("INFO", logger="piip_llava.demo")
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "| TextVQA (synthetic, with OCR tokens) |" in printed and "| MMBench (CircularEval) |" in printed
    assert all(f"{step.name}: done in" in caplog.text for step in STEPS)
    assert (output / "loss.png").stat().st_size > 1000
    results = json.loads((output / "results.json").read_text())
    assert set(results["eval"]["scores"]) == {"textvqa", "textvqa_small", "mmbench", "pope"}
    assert all(results[stage]["steps"] >= 3 for stage in ("warmup", "stage1", "stage2"))
    assert (output / "stage2" / "model.safetensors").exists()
    weights_time = (output / "stage2" / "model.safetensors").stat().st_mtime

    caplog.clear()
    assert main(arguments) == 0
    assert all(f"{step.name}: done in an earlier run" in caplog.text for step in STEPS)
    assert capsys.readouterr().out.count("| POPE (yes/no) |") == 1
    assert (output / "stage2" / "model.safetensors").stat().st_mtime == weights_time
