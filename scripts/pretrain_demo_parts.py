"""Pretrain the quickstart's parts on the synthetic scene world, as the paper's parts are pretrained before
PIIP-LLaVA training (docs/design.md): the ``demo-convnext-clip_128-64`` tower's branches and the demo LLM.

- Each vision branch, at its own resolution, learns supervised attributes of a scene (which colours and shapes are
  present, how many shapes, which words are written) through a linear head on its mean-pooled features. The branch
  is trained as the plain ``transformers`` backbone (``CLIPVisionModel`` / ``ConvNextModel``) and saved with
  ``save_pretrained``, so ``piip-llava build --branch-weights NAME=DIR`` loads it as it loads a real CLIP.
- The LLM (``DEMO_LLM``, a tiny Llama with the locally trained BPE tokenizer) learns the warm-up conversations in
  the ``vicuna_v1`` chat format: short answers, copying a word from a "Reference OCR token" line, option letters.
  It is saved as an HF LLM directory with its tokenizer (``--llm DIR``).

Outputs under ``--output``: ``branches/<name>/``, ``llm/``, ``log.jsonl`` (one line per step and part) and
``parts.json`` (command, seed, steps, final losses and held-out accuracies). Deterministic given ``--seed``.

    python scripts/pretrain_demo_parts.py --output playground/demo_parts
    piip-llava build --tower demo-convnext-clip_128-64 --llm playground/demo_parts/llm \\
        --branch-weights clip=playground/demo_parts/branches/clip convnext=playground/demo_parts/branches/convnext \\
        --output playground/demo_base
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM

from piip_llava.data.preprocess import tokenize_conversation
from piip_llava.data.scene_sets import TRAIN_SCENE, warmup_turns
from piip_llava.data.scenes import COLORS, SHAPES, VOCABULARY, random_scene, render_scene
from piip_llava.demo import DEMO_LLM, DEMO_TOWER
from piip_llava.model.configuration_piip_llava import IMAGENET_MEAN, IMAGENET_STD
from piip_llava.model.tiny import tiny_text_config, train_tokenizer
from piip_llava.model.vision import get_tower_config
from piip_llava.model.vision.weights import HF_MODEL_CLASSES

logger = logging.getLogger("pretrain_demo_parts")

# Multi-label targets: colour present, shape present, word present; plus the shape count as a 5-way class.
PRESENCE_LABELS = [f"color:{c}" for c in COLORS] + [f"shape:{s}" for s in SHAPES] + [f"word:{w}" for w in VOCABULARY]
MAX_SHAPES = TRAIN_SCENE.shapes[1]
IGNORE_INDEX = -100


def scene_batch(
    rng: random.Random, batch_size: int, image_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rendered scenes normalised as the PIIP processor does, with presence labels and shape counts.

    Returns pixels (B, 3, S, S), presence (B, len(PRESENCE_LABELS)) in {0, 1} and counts (B,) in [0, MAX_SHAPES].
    """
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    pixels, presence, counts = [], [], []
    for _ in range(batch_size):
        scene = random_scene(rng, TRAIN_SCENE)
        array = (np.asarray(render_scene(scene, image_size), np.float32) / 255.0 - mean) / std
        pixels.append(torch.from_numpy(array).permute(2, 0, 1))  # (S, S, 3) -> (3, S, S)
        present = {f"color:{s.color}" for s in scene.shapes} | {f"shape:{s.kind}" for s in scene.shapes}
        present |= {f"word:{w.text}" for w in scene.words}
        presence.append(torch.tensor([label in present for label in PRESENCE_LABELS], dtype=torch.float32))
        counts.append(len(scene.shapes))
    return torch.stack(pixels), torch.stack(presence), torch.tensor(counts)


class AttributeProbe(nn.Module):
    """A ``transformers`` backbone and a linear head on every token of its last hidden state (the features a PIIP
    branch hands on: CLIP before ``post_layernorm``, ConvNeXt before its final norm). Presence is the head's maximum
    over tokens (a word is present if some token sees it; a mean would dilute one small word among 64 tokens); the
    count is its mean, i.e. the head on mean-pooled features."""

    def __init__(self, backbone: nn.Module, width: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(width, len(PRESENCE_LABELS) + MAX_SHAPES + 1)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.backbone(pixel_values=pixels).last_hidden_state
        tokens = hidden if hidden.dim() == 3 else hidden.flatten(2).transpose(1, 2)  # (B, D, H, W) -> (B, HW, D)
        token_logits = self.head(tokens)  # (B, N, labels)
        presence = token_logits[..., : len(PRESENCE_LABELS)].amax(dim=1)
        return presence, token_logits[..., len(PRESENCE_LABELS) :].mean(dim=1)


def _rate(hits: torch.Tensor, where: torch.Tensor) -> float:
    return (hits & where).sum().item() / max(1, where.sum().item())


def probe_loss(probe: AttributeProbe, batch) -> tuple[torch.Tensor, dict]:
    """Presence BCE summed over the labels (averaged, it would be dwarfed by the count loss) plus the count's CE;
    held-out statistics: balanced presence accuracy per label group and count accuracy."""
    pixels, presence, counts = batch
    presence_logits, count_logits = probe(pixels)
    presence_loss = F.binary_cross_entropy_with_logits(presence_logits, presence, reduction="none").sum(-1).mean()
    loss = presence_loss + F.cross_entropy(count_logits, counts)
    with torch.no_grad():
        predicted = presence_logits > 0
        stats = {}
        for group in ("color", "shape", "word"):
            columns = torch.tensor([label.startswith(group + ":") for label in PRESENCE_LABELS])
            hits, truth = predicted[:, columns], presence[:, columns] == 1
            # (true-positive rate + true-negative rate) / 2: 0.5 for a head that predicts "absent" everywhere
            stats[f"{group}_balanced_accuracy"] = 0.5 * (_rate(hits, truth) + _rate(~hits, ~truth))
        stats["count_accuracy"] = (count_logits.argmax(-1) == counts).float().mean().item()
    return loss, stats


def branch_probe(branch, seed: int) -> AttributeProbe:
    """A random backbone of the branch's shape (``image_size`` is the branch's own) and its head."""
    torch.manual_seed(seed)
    config = branch.hf_config()
    if branch.backbone_type == "convnext":  # the demo ConvNeXt has 3 stages; transformers defaults to 4
        config = type(config)(**branch.backbone, num_stages=len(config.depths))
    backbone = HF_MODEL_CLASSES[branch.backbone_type](config)
    width = config.hidden_sizes[-1] if branch.backbone_type == "convnext" else config.hidden_size
    return AttributeProbe(backbone, width)


def evaluate_probe(probe: AttributeProbe, batch) -> dict:
    probe.eval()
    with torch.no_grad():
        loss, stats = probe_loss(probe, batch)
    probe.train()
    return {"loss": loss.item(), **stats}


def train_branch(branch, args, log) -> tuple[AttributeProbe, dict]:
    """Train one branch's probe for ``args.branch_steps`` steps; returns it and held-out metrics before/after."""
    probe = branch_probe(branch, args.seed)
    held_out = scene_batch(random.Random(f"{args.seed}-heldout"), args.eval_size, branch.image_size)
    initial = evaluate_probe(probe, held_out)
    rng = random.Random(f"{args.seed}-branch-{branch.name}")
    optimizer = torch.optim.AdamW(probe.parameters(), lr=args.branch_lr, weight_decay=0.01)
    for step in range(1, args.branch_steps + 1):
        loss, stats = probe_loss(probe, scene_batch(rng, args.batch_size, branch.image_size))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log({"part": f"branch:{branch.name}", "step": step, "loss": loss.item(), **stats})
    return probe, {"initial": initial, "final": evaluate_probe(probe, held_out)}


def conversation_batch(samples: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) input ids, labels (IGNORE_INDEX outside answers) and attention mask."""
    length = max(len(sample.input_ids) for sample in samples)
    input_ids = torch.zeros(len(samples), length, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(samples), length, dtype=torch.long)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample.input_ids)] = sample.input_ids
        labels[row, : len(sample.labels)] = sample.labels
        mask[row, : len(sample.input_ids)] = 1
    return input_ids, labels, mask


def text_batch(rng: random.Random, tokenizer, batch_size: int, max_length: int):
    samples = [tokenize_conversation(warmup_turns(rng), tokenizer, "vicuna_v1", 0, 0, max_length)
               for _ in range(batch_size)]  # fmt: skip
    return conversation_batch(samples)


def llm_loss(llm, batch) -> tuple[torch.Tensor, dict]:
    input_ids, labels, mask = batch
    logits = llm(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    targets = labels[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    with torch.no_grad():
        answered = targets != IGNORE_INDEX
        accuracy = ((logits.argmax(-1) == targets) & answered).sum() / answered.sum()
    return loss, {"answer_token_accuracy": accuracy.item()}


def build_llm(tokenizer, seed: int):
    config = tiny_text_config(tokenizer, "llama", DEMO_LLM)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def evaluate_llm(llm, batch) -> dict:
    llm.eval()
    with torch.no_grad():
        loss, stats = llm_loss(llm, batch)
    llm.train()
    return {"loss": loss.item(), **stats}


def train_llm(args, log):
    """Train the demo LLM on warm-up conversations; returns it, its tokenizer and held-out metrics."""
    tokenizer = train_tokenizer()
    llm = build_llm(tokenizer, args.seed)
    held_out = text_batch(random.Random(f"{args.seed}-text-heldout"), tokenizer, args.eval_size, args.max_length)
    initial = evaluate_llm(llm, held_out)
    rng = random.Random(f"{args.seed}-text")
    optimizer = torch.optim.AdamW(llm.parameters(), lr=args.llm_lr, weight_decay=0.01)
    for step in range(1, args.llm_steps + 1):
        loss, stats = llm_loss(llm, text_batch(rng, tokenizer, args.llm_batch_size, args.max_length))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log({"part": "llm", "step": step, "loss": loss.item(), **stats})
    return llm, tokenizer, {"initial": initial, "final": evaluate_llm(llm, held_out)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("playground/demo_parts"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--branch-steps", type=int, default=600, help="training steps per vision branch")
    parser.add_argument("--llm-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32, help="scenes per branch step")
    parser.add_argument("--llm-batch-size", type=int, default=16, help="conversations per LLM step")
    parser.add_argument("--eval-size", type=int, default=128, help="held-out scenes / conversations")
    parser.add_argument("--branch-lr", type=float, default=2e-3)
    parser.add_argument("--llm-lr", type=float, default=2e-3)
    parser.add_argument("--max-length", type=int, default=512)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(args.output / "log.jsonl", "w") as log_file:

        def log(record: dict) -> None:
            record["seconds"] = round(time.perf_counter() - started, 2)
            log_file.write(json.dumps(record) + "\n")
            if record["step"] % 50 == 0:
                logger.info("%s step %d loss %.4f", record["part"], record["step"], record["loss"])

        results = {}
        for branch in get_tower_config(DEMO_TOWER).branches:
            probe, results[f"branch:{branch.name}"] = train_branch(branch, args, log)
            probe.backbone.save_pretrained(args.output / "branches" / branch.name)
        llm, tokenizer, results["llm"] = train_llm(args, log)
        llm.save_pretrained(args.output / "llm")
        tokenizer.save_pretrained(args.output / "llm")
    command = "python scripts/pretrain_demo_parts.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    parts = {"command": command.strip(), "seed": args.seed, "tower": DEMO_TOWER,
             **{name: getattr(args, name) for name in ("branch_steps", "llm_steps", "batch_size", "llm_batch_size")},
             "results": results, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    (args.output / "parts.json").write_text(json.dumps(parts, indent=2) + "\n")
    logger.info("parts in %s (%.0f s): %s", args.output, parts["seconds"], json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
