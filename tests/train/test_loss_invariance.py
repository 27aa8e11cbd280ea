"""The logged loss is the mean token cross-entropy of the optimiser's batch, whatever its split.

The same global batch of 8 gives the same per-step loss and grad norm for 8x1, 4x2 and 2x4 (per-device batch x
gradient accumulation) in one process, with LoRA too, and for 2 processes x accumulation 2 under DeepSpeed ZeRO-2,
ZeRO-3 (with text-only steps: the zero-image path) and torchrun DDP. The first logged loss of a random model equals
the cross-entropy computed by hand. Answers have very different lengths, so averaging per micro-batch means (or per
process) instead of per token would show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import piip_llava.model  # noqa: F401
from piip_llava.model.tiny import save_tiny_model
from piip_llava.train.train import train
from tests.train.test_two_stage_deepspeed import ROOT, TRAIN, free_port

WORDS = "red green blue the a image shows small large square circle word text on in left right top".split()
ALL_PARTS = "projector,vision_branches,interactions,llm"


def write_varied_data(folder: Path, images: int = 8, text_only: int = 8) -> Path:
    """``images`` image questions, then ``text_only`` text-only ones, with answers of 1 to 40 words."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    records = []
    for i in range(images + text_only):
        length = 1 + (i * 13) % 40
        answer = " ".join(WORDS[int(j)] for j in torch.randint(len(WORDS), (length,), generator=generator))
        if i < images:
            Image.new("RGB", (40 + 4 * i, 36), (30 * i, 200 - 20 * i, 90)).save(folder / "images" / f"{i}.png")
            question = {"from": "human", "value": "<image>\nDescribe the image."}
            records.append(
                {"id": f"i{i}", "image": f"{i}.png", "conversations": [question, {"from": "gpt", "value": answer}]}
            )
        else:
            question = {"from": "human", "value": f"Say {length} words."}
            records.append({"id": f"t{i}", "conversations": [question, {"from": "gpt", "value": answer}]})
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("invariance")
    save_tiny_model(root / "base")
    config_path = root / "base" / "config.json"
    config = json.loads(config_path.read_text())
    config["vision_config"]["interaction_drop_path_rate"] = 0.0  # no randomness that depends on the split
    config_path.write_text(json.dumps(config))
    write_varied_data(root / "mixed")
    write_varied_data(root / "images_only", images=8, text_only=0)
    return root


def common_args(root: Path, data: str, output: Path, per_device: int, accumulation: int, steps: int = 2) -> list[str]:
    return ["--model_name_or_path", str(root / "base"), "--data_path", str(root / data / "data.json"),
            "--image_folder", str(root / data / "images"), "--output_dir", str(output),
            "--per_device_train_batch_size", str(per_device), "--gradient_accumulation_steps", str(accumulation),
            "--max_steps", str(steps), "--learning_rate", "1e-3", "--lr_scheduler_type", "constant",
            "--tunable_parts", ALL_PARTS, "--logging_steps", "1", "--report_to", "none", "--save_strategy", "no",
            "--use_cpu", "--seed", "0", "--group_by_modality_length", "--template", "vicuna_v1"]  # fmt: skip


def logged(output: Path) -> list[tuple[float, float]]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [(r["loss"], r["grad_norm"]) for r in records if "loss" in r]


def assert_same(reference: list[tuple[float, float]], other: list[tuple[float, float]], label: str) -> None:
    assert len(reference) == len(other) == 2, (label, reference, other)
    for step, ((loss_a, norm_a), (loss_b, norm_b)) in enumerate(zip(reference, other), start=1):
        assert loss_b == pytest.approx(loss_a, rel=1e-4), f"{label}: step {step} loss {loss_b} vs {loss_a}"
        assert norm_b == pytest.approx(norm_a, rel=1e-4), f"{label}: step {step} grad norm {norm_b} vs {norm_a}"


def run_in_process(root: Path, name: str, per_device: int, accumulation: int, *extra: str, data: str = "mixed"):
    output = root / name
    assert train(common_args(root, data, output, per_device, accumulation) + list(extra)) == 0
    return logged(output)


@pytest.fixture(scope="module")
def reference(setup):
    """1 process, per-device 2 x accumulation 4: the split the multi-process runs are compared with."""
    return run_in_process(setup, "ref_2x4", 2, 4)


def test_same_loss_for_every_split_in_one_process(setup, reference):
    for per_device, accumulation in ((8, 1), (4, 2)):
        other = run_in_process(setup, f"split_{per_device}x{accumulation}", per_device, accumulation)
        assert_same(reference, other, f"{per_device}x{accumulation} vs 2x4")


def test_same_loss_for_every_split_with_lora(setup):
    lora = ("--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0")
    first = run_in_process(setup, "lora_8x1", 8, 1, *lora)
    assert_same(first, run_in_process(setup, "lora_2x4", 2, 4, *lora), "LoRA 2x4 vs 8x1")


def test_first_loss_is_the_token_cross_entropy_by_hand(setup):
    """One step over all 8 image samples: the logged loss is sum(CE over target tokens) / count(target tokens)."""
    from transformers import AutoProcessor

    from piip_llava.data import DataConfig, LlavaDataset
    from piip_llava.model import PiipLlavaForConditionalGeneration

    output = setup / "by_hand"
    assert train(common_args(setup, "images_only", output, 4, 2, steps=1)) == 0
    model = PiipLlavaForConditionalGeneration.from_pretrained(setup / "base").eval()
    processor = AutoProcessor.from_pretrained(setup / "base")
    config = DataConfig("vicuna_v1", model.config.image_seq_length, 2048, str(setup / "images_only" / "images"))
    dataset = LlavaDataset(setup / "images_only" / "data.json", processor.tokenizer, processor.image_processor, config)
    total, count = 0.0, 0
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset[index]
            logits = model(input_ids=sample["input_ids"][None], pixel_values=sample["pixel_values"]).logits[0]
            targets = sample["labels"][1:]
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[:-1][keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    (loss, _), *_ = logged(output)
    assert count > 8 * 10  # the answers, not one token per sample
    assert loss == pytest.approx(total / count, rel=1e-4)


def launch(root: Path, name: str, launcher: str, *extra: str) -> list[tuple[float, float]]:
    """2 processes x per-device 2 x accumulation 2 (global batch 8) through a real launcher."""
    output = root / name
    binary = Path(sys.executable).parent
    if launcher == "torchrun":
        command = [
            shutil.which("torchrun", path=str(binary)),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
        ]
    else:
        command = [shutil.which("deepspeed", path=str(binary)), "--num_gpus", "2", "--master_port", str(free_port())]
    command += [TRAIN, *common_args(root, "mixed", output, 2, 2), *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return logged(output)


@pytest.mark.parametrize(
    "launcher, extra",
    [
        ("deepspeed", ("--deepspeed", str(ROOT / "scripts/zero2.json"))),
        ("deepspeed", ("--deepspeed", str(ROOT / "scripts/zero3.json"))),
        ("torchrun", ()),
    ],
    ids=["zero2", "zero3", "ddp"],
)
def test_two_processes_match_one_process(setup, reference, launcher, extra):
    """Step 1 is the 8 image samples, step 2 the 8 text-only ones (the zero-image forward under ZeRO-3)."""
    name = f"multi_{launcher}_{Path(extra[1]).stem if extra else 'ddp'}"
    assert_same(reference, launch(setup, name, launcher, *extra), name)
