"""Tower-only probe of the PIIP claim, like the paper's classification rows: a vision tower plus a linear head,
fine-tuned on a detail-dependent synthetic task, for a sweep of resolutions of the single branch and of the
pyramid; accuracy against vision FLOPs (docs/pyramid_vs_single.md).

The task: which of the 24 scene words is written, in small text (7 px on the 128-px canvas: 3.5 px at 64 px, where
it is not legible), among 0-2 distracting shapes; chance is 1/24. Images are rendered at 128 px, as the demo's data,
and each tower resizes them to its branches' resolutions. Every tower starts from the pretrained demo parts
(scripts/pretrain_demo_parts.py: the ViT pretrained at 64 or at 96 px, see :func:`part_name`; its position table is
interpolated to other resolutions, as PIIP does with CLIP), with the interactions at their zero-gate init; the head
is linear on every output token of every branch, its 24 logits the maximum over tokens, summed over branches.

    python scripts/experiments/tower_probe.py --seeds 0 1 2 --output docs/tower_probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from piip_llava.data.scenes import VOCABULARY, SceneSpec, random_scene, render_scene
from piip_llava.demo import DEMO_PARTS
from piip_llava.model.configuration_piip_llava import IMAGENET_MEAN, IMAGENET_STD
from piip_llava.model.vision import PiipVisionModel
from piip_llava.model.vision.configuration_piip import BranchConfig, PiipVisionConfig
from piip_llava.model.vision.flops import count_tower_flops
from piip_llava.model.vision.presets import DEMO_CLIP, DEMO_CONVNEXT
from piip_llava.model.vision.weights import load_tower_weights

DETAIL_SCENE = SceneSpec(shapes=(0, 2), words=(1, 1), text_sizes=("small",))
CANVAS = 128


def tower_config(vit_size: int, convnext_size: int | None) -> PiipVisionConfig:
    """The demo ViT alone at ``vit_size``, or the demo pyramid (ViT + ConvNeXt) at the two sizes."""
    if convnext_size is None:
        return PiipVisionConfig(branches=[BranchConfig("clip", "clip", vit_size, [[0, 3]], dict(DEMO_CLIP))])
    return PiipVisionConfig(
        branches=[
            BranchConfig("clip", "clip", vit_size, [[0, 1], [2, 3]], dict(DEMO_CLIP)),
            BranchConfig("convnext", "convnext", convnext_size, [[0, 2], [3, 5]], dict(DEMO_CONVNEXT)),
        ],
        deform_num_heads=4,
    )


# name -> (ViT size, ConvNeXt size or None)
TOWERS = {
    "single@64": (64, None), "single@96": (96, None), "single@128": (128, None),
    "pyramid@48-96": (48, 96), "pyramid@64-128": (64, 128),
}  # fmt: skip


# The ViT parts by the resolution they were pretrained at (scripts/pretrain_demo_parts.py).
VIT_PARTS = {64: "clip", 96: "clip_96"}


def part_name(branch: BranchConfig) -> str:
    """The pretrained part a branch starts from: for the ViT, the one pretrained at the highest resolution not above
    the branch's (the lowest if none), as the pyramid's ViT (64 px part) and the single baseline's (96 px part)."""
    if branch.backbone_type != "clip":
        return branch.name
    fitting = [size for size in VIT_PARTS if size <= branch.image_size] or [min(VIT_PARTS)]
    return VIT_PARTS[max(fitting)]


class TowerProbe(nn.Module):
    def __init__(self, tower: PiipVisionModel) -> None:
        super().__init__()
        self.tower = tower
        self.heads = nn.ModuleList(nn.Linear(b.block_dims[-1], len(VOCABULARY)) for b in tower.config.branches)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = 0
        for head, feature_map in zip(self.heads, self.tower(pixels)):
            logits = logits + head(feature_map.flatten(2).transpose(1, 2)).amax(dim=1)
        return logits


def batch(rng: random.Random, size: int, image_size: int = CANVAS) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes rendered at 128 px and resized (bicubic) to the tower's input size, as the PIIP processor does; the
    tower then resizes them for each branch."""
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    pixels, labels = [], []
    for _ in range(size):
        scene = random_scene(rng, DETAIL_SCENE)
        image = render_scene(scene, CANVAS)
        if image_size != CANVAS:
            image = image.resize((image_size, image_size), Image.BICUBIC)
        array = (np.asarray(image, np.float32) / 255.0 - mean) / std
        pixels.append(torch.from_numpy(array).permute(2, 0, 1))
        labels.append(VOCABULARY.index(scene.words[0].text))
    return torch.stack(pixels), torch.tensor(labels)


def accuracy(probe: TowerProbe, data: tuple[torch.Tensor, torch.Tensor], chunk: int = 64) -> float:
    probe.eval()
    with torch.no_grad():
        predicted = torch.cat([probe(data[0][i : i + chunk]).argmax(-1) for i in range(0, len(data[1]), chunk)])
    probe.train()
    return (predicted == data[1]).float().mean().item()


def run(name: str, seed: int, args) -> dict:
    vit_size, convnext_size = TOWERS[name]
    config = tower_config(vit_size, convnext_size)
    torch.manual_seed(seed)
    tower = PiipVisionModel(config)
    load_tower_weights(tower, {b.name: args.parts / "branches" / part_name(b) for b in config.branches})
    probe = TowerProbe(tower)
    held_out = batch(random.Random(f"heldout-{seed}"), args.eval_size, config.image_size)
    rng = random.Random(f"train-{seed}")
    optimizer = torch.optim.AdamW(probe.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)  # linear warm-up over 5% of the steps, then linear decay to zero
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, (args.steps - step) / max(1, args.steps - warmup))
    )
    started = time.perf_counter()
    for _ in range(args.steps):
        pixels, labels = batch(rng, args.batch_size, config.image_size)
        loss = F.cross_entropy(probe(pixels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    flops = count_tower_flops(config)
    return {"tower": name, "seed": seed, "vision_mflops": 1000 * flops.vision_gflops,
            "accuracy": accuracy(probe, held_out), "steps": args.steps,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def plot(rows: list[dict], output: Path) -> None:
    """Small-word accuracy (y, %) against vision MFLOPs (x, log scale): a dot per run, blue pyramids, red singles,
    each tower labelled."""
    from PIL import ImageDraw

    width, height, margin = 800, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = margin, width - margin, margin, height - margin
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, top - 30), "tower-only probe: small-word accuracy (%) vs vision MFLOPs (log scale)", fill="black")
    low, high = (
        math.log(min(r["vision_mflops"] for r in rows) * 0.8),
        math.log(max(r["vision_mflops"] for r in rows) * 1.2),
    )
    for tick in (0, 25, 50, 75, 100):
        y = bottom - tick / 100 * (bottom - top)
        draw.text((left - 28, y - 6), str(tick), fill="black")
        draw.line([left, y, right, y], fill=(225, 225, 225))
    chance = bottom - 100 / len(VOCABULARY) / 100 * (bottom - top)
    draw.line([left, chance, right, chance], fill=(150, 150, 150))
    for name in dict.fromkeys(r["tower"] for r in rows):
        colour = (31, 119, 180) if name.startswith("pyramid") else (214, 39, 40)
        for row in (r for r in rows if r["tower"] == name):
            x = left + (math.log(row["vision_mflops"]) - low) / (high - low) * (right - left)
            y = bottom - 100 * row["accuracy"] / 100 * (bottom - top)
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
        draw.text((x + 8, y - 16), f"{name} ({row['vision_mflops']:.1f})", fill=colour)
    image.save(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--towers", nargs="*", default=list(TOWERS), choices=list(TOWERS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-size", type=int, default=384)
    parser.add_argument("--parts", type=Path, default=DEMO_PARTS)
    parser.add_argument("--output", type=Path, help="write every run's result here (JSON)")
    parser.add_argument("--plot", type=Path, help="PNG of accuracy against vision FLOPs")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        for name in args.towers:
            rows.append(run(name, seed, args))
            print(json.dumps(rows[-1]), flush=True)
    print("| tower | vision MFLOPs | small-word accuracy, mean (per seed) |\n|---|---|---|")
    for name in args.towers:
        values = [row["accuracy"] for row in rows if row["tower"] == name]
        mflops = next(row["vision_mflops"] for row in rows if row["tower"] == name)
        print(f"| {name} | {mflops:.1f} | {100 * statistics.mean(values):.1f} "
              f"({' / '.join(f'{100 * v:.1f}' for v in values)}) |")  # fmt: skip
    if args.plot:
        plot(rows, args.plot)
    if args.output:
        args.output.write_text(json.dumps({"command": "python scripts/experiments/tower_probe.py "
                                           + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                                           "runs": rows}, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
