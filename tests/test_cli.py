"""piip_llava/cli.py"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import piip_llava.model  # noqa: F401  (registers the Auto classes)
from piip_llava.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_flops_all_json_via_console_script():
    executable = shutil.which("piip-llava", path=str(Path(sys.executable).parent))
    assert executable, "the piip-llava console script is installed with the package"
    result = subprocess.run([executable, "flops", "--all", "--json"], capture_output=True, text=True, check=True)
    reports = json.loads(result.stdout)
    by_name = {r["preset"]: r for r in reports}
    for fragment in ["clip-bl_512-256", "clip-bl_512-448", "convnext-b_clip-l_640-224", "convnext-l_clip-l_1024-336"]:
        assert any(fragment in name for name in by_name)
    for report in reports:
        assert {"preset", "vision_gflops", "vision_params_m", "interaction_params_m"} <= set(report)
    assert not any(name.startswith("tiny-") for name in by_name)


def test_unknown_preset_exits_2(capsys):
    assert main(["flops", "no-such-tower"]) == 2
    assert "valid presets" in capsys.readouterr().err


def test_readme_documents_every_subcommand():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"piip-llava (\w+)", readme))
    assert set(COMMANDS) <= documented, f"undocumented subcommands: {set(COMMANDS) - documented}"


def test_build_tower_from_local_branch_checkpoints(tmp_path):
    import torch
    from transformers import CLIPVisionModel, ConvNextModel

    from piip_llava.model.vision import PiipVisionModel, get_tower_config

    config = get_tower_config("tiny-convnext-clip")
    clip_dir, convnext_dir, output = tmp_path / "clip", tmp_path / "convnext", tmp_path / "tower"
    clip = CLIPVisionModel(config.branches[0].hf_config())
    clip.save_pretrained(clip_dir)
    ConvNextModel(config.branches[1].hf_config()).save_pretrained(convnext_dir)
    code = main(
        ["build", "--tower", "tiny-convnext-clip", "--output", str(output),
         "--branch-weights", f"clip-large={clip_dir}", f"convnext={convnext_dir}"]
    )  # fmt: skip
    assert code == 0
    tower = PiipVisionModel.from_pretrained(output).eval()
    torch.testing.assert_close(tower.branches[0].layers[1].mlp.fc2.weight, clip.encoder.layers[1].mlp.fc2.weight)
    again = PiipVisionModel.from_pretrained(output).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(tower(pixel_values), again(pixel_values)):
            assert torch.equal(a, b)


def test_build_reports_bad_branch_names(tmp_path, capsys):
    code = main(["build", "--tower", "tiny-clip-2branch", "--output", str(tmp_path), "--branch-weights", "x=/nope"])
    assert code == 2 and "unknown branch names" in capsys.readouterr().err


def test_build_whole_model_from_local_llm_and_branches(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from piip_llava.model.tiny import train_tokenizer
    from piip_llava.model.vision import get_tower_config

    # A local "LLM" the way users have one: a causal LM + a tokenizer without any <image> token.
    tokenizer = train_tokenizer(with_image_token=False)
    assert "<image>" not in tokenizer.get_vocab()
    llm_dir = tmp_path / "llm"
    llm_config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=len(tokenizer))  # fmt: skip
    llm = LlamaForCausalLM(llm_config)
    llm.save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    clip_dir = tmp_path / "clip"
    CLIPVisionModel(get_tower_config("tiny-clip-2branch").branches[0].hf_config()).save_pretrained(clip_dir)
    output = tmp_path / "model"
    code = main(["build", "--tower", "tiny-clip-2branch", "--llm", str(llm_dir), "--output", str(output),
                 "--branch-weights", f"clip-large={clip_dir}"])  # fmt: skip
    assert code == 0
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    torch.testing.assert_close(
        model.model.language_model.layers[0].mlp.up_proj.weight, llm.model.layers[0].mlp.up_proj.weight
    )
    from PIL import Image

    inputs = processor(text="USER: <image>\\nhi ASSISTANT:", images=Image.new("RGB", (20, 20)))
    assert model.generate(**inputs, max_new_tokens=2).shape[1] == inputs["input_ids"].shape[1] + 2


def test_build_tiny(tmp_path):
    from transformers import AutoModelForImageTextToText

    assert main(["build", "--tiny", "--tiny-llm", "qwen2", "--output", str(tmp_path)]) == 0
    assert AutoModelForImageTextToText.from_pretrained(tmp_path).config.text_config.model_type == "qwen2"
