"""Pretrain the quickstart's parts on the synthetic scene world, as the paper's parts are pretrained before
PIIP-LLaVA training (docs/design.md): the ``demo-convnext-clip_128-64`` tower's branches and the demo LLM.

- Each vision branch, at its own resolution, learns what every token of its output grid covers (nothing, one of
  the shapes or one of the 24 words, and its colour) and how many shapes the scene has, through linear heads. The
  branch is trained as the plain ``transformers`` backbone (``CLIPVisionModel`` / ``ConvNextModel``) and saved
  with ``save_pretrained``, so ``piip-llava build --branch-weights NAME=DIR`` loads it as it loads a real CLIP.
- The LLM (``DEMO_LLM``, a tiny Llama with the locally trained BPE tokenizer) first learns option letters in a
  letter phase (:func:`train_letters`: an option picked, then its letter, behind an empty image that grows to the
  full visual-token grid, then also lettered questions about scenes in words), then, per step, warm-up
  conversations in the ``vicuna_v1`` chat format (``--llm-batch-size``: short answers, copying a word from a
  "Reference OCR token" line, option letters) and, most of the step, conversations (``--llm-scenes``) and captions
  (``--llm-scene-captions``) about scenes written in words where the visual tokens go (:func:`embed_scenes`), as a
  real LLM arrives able to talk about what its context names (docs/quickstart.md, "What limits it"); then a
  presence phase (:func:`train_presence`: scene questions, a quarter of them POPE's "Is there a red star in the image?")
  and the mix once more (``--llm-final-steps``), ``--llm-rounds`` times. It is saved as an HF LLM directory with its
  tokenizer (``--llm DIR``). ``--llm-continue`` runs only the phases after the main mix, or the rounds left, on a
  part this command made up to there (the committed parts were made so, in two runs; ``parts.json`` names both).

Outputs under ``--output`` (default: the committed ``playground/demo_parts``): ``branches/<name>/``, ``llm/``,
``logs/<part>.jsonl.gz`` (loss and statistics of every step) and ``parts.json`` (per part: the command, seed, steps,
held-out results before and after). ``--parts`` retrains some parts and keeps the others. Deterministic given
``--seed`` and the settings.

    python scripts/pretrain_demo_parts.py                     # all parts into playground/demo_parts
    piip-llava build --tower demo-convnext-clip_128-64 --llm playground/demo_parts/llm \\
        --branch-weights clip=playground/demo_parts/branches/clip convnext=playground/demo_parts/branches/convnext \\
        --output playground/demo_base
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import logging
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageFont
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, ConvNextModel

from piip_llava.data import scenes
from piip_llava.data.preprocess import tokenize_conversation
from piip_llava.data.scene_sets import (
    QUESTION_KINDS,
    TRAIN_SCENE,
    ask,
    instruct_turns,
    pick_question,
    scene_with_items,
    warmup_turns,
)
from piip_llava.data.scenes import (
    COLORS,
    SHAPES,
    VOCABULARY,
    SceneSpec,
    caption,
    presence_question,
    random_scene,
    render_scene,
)
from piip_llava.demo import DEMO_LLM, DEMO_TOWER, name_values
from piip_llava.model.configuration_piip_llava import IMAGENET_MEAN, IMAGENET_STD
from piip_llava.model.conversation import IMAGE_TOKEN
from piip_llava.model.tiny import tiny_text_config, train_tokenizer
from piip_llava.model.vision import get_tower_config
from piip_llava.model.vision.weights import HF_MODEL_CLASSES

logger = logging.getLogger("pretrain_demo_parts")

# Steps per branch: the ConvNeXt at 128 px learns to read the words (small ones included) after ~1,000 steps of
# plateau; the pyramid's ViT at 64 px, which cannot read small text at all, learns colours and shapes in fewer.
# ``clip_96`` is the single-branch baseline's ViT (``demo-clip_96``), pretrained the same way at its own resolution
# (docs/pyramid_vs_single.md): a branch pretrained at 64 px has never seen small text legibly. It gets as many
# steps as the pyramid's ConvNeXt.
BRANCH_STEPS = {"clip": 1500, "convnext": 4000, "clip_96": 4000}
SINGLE_TOWER = "demo-clip_96"
# The shape count is a 5-way class on the mean of the tokens.
MAX_SHAPES = TRAIN_SCENE.shapes[1]
# Branch pretraining scenes carry more words than the instruction data: reading is the slowest skill to learn.
PRETRAIN_SCENE = SceneSpec(shapes=(0, MAX_SHAPES), words=(1, 3))
IGNORE_INDEX = -100


# Dense targets, one per token of the branch's output grid: what covers the token (nothing, a shape kind, a word)
# and its colour. A token is labelled with an item when its centre lies inside the item's box.
ITEM_CLASSES = ["none", *SHAPES, *(f"word:{w}" for w in VOCABULARY)]
COLOR_CLASSES = ["none", *COLORS]


def item_box(item, image_size: int) -> tuple[float, float, float, float]:
    """The item's box (x0, y0, x1, y1) in fractions of the canvas, as :func:`render_scene` draws it."""
    row, col = divmod(item.cell, 3)
    cx, cy = (col + 0.5 + item.jitter[0]) / 3, (row + 0.5 + item.jitter[1]) / 3
    if item.is_word:
        pixels = max(1, round(scenes.TEXT_SIZES[item.text_size] * image_size / scenes.BASE_SIZE))
        half_w = ImageFont.load_default(size=pixels).getlength(item.text) / image_size / 2
        half_h = 0.35 * pixels / image_size
    else:
        half_w = half_h = 0.32 * item.scale / 3
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def dense_targets(scene, image_size: int, grid: int) -> tuple[torch.Tensor, ...]:
    """(grid*grid,) item-class and colour targets, whether the token shows small text (for the statistics), and
    the item's position (1 + its index in ``scenes.POSITIONS``, 0 where nothing is); the token holding an item's
    centre always gets the item."""
    items = torch.zeros(grid, grid, dtype=torch.long)
    colors = torch.zeros(grid, grid, dtype=torch.long)
    small = torch.zeros(grid, grid, dtype=torch.bool)
    positions = torch.zeros(grid, grid, dtype=torch.long)
    centres = (torch.arange(grid) + 0.5) / grid
    for item in scene.items:
        x0, y0, x1, y1 = item_box(item, image_size)
        rows = ((centres >= y0) & (centres <= y1)).nonzero().flatten().tolist()
        cols = ((centres >= x0) & (centres <= x1)).nonzero().flatten().tolist()
        cells = {(r, c) for r in rows for c in cols} | {(min(grid - 1, int((y0 + y1) / 2 * grid)),
                                                         min(grid - 1, int((x0 + x1) / 2 * grid)))}  # fmt: skip
        label = ITEM_CLASSES.index(f"word:{item.text}" if item.is_word else item.kind)
        for r, c in cells:
            items[r, c], colors[r, c] = label, COLOR_CLASSES.index(item.color)
            small[r, c], positions[r, c] = item.text_size == "small", item.cell + 1
    return items.flatten(), colors.flatten(), small.flatten(), positions.flatten()


def scene_batch(rng: random.Random, batch_size: int, image_size: int, grid: int) -> dict[str, torch.Tensor]:
    """Rendered scenes normalised as the PIIP processor does, with their targets: ``pixels`` (B, 3, S, S),
    ``counts`` (B,) in [0, MAX_SHAPES], ``items`` and ``colors`` (B, grid*grid) dense class indices, ``small``
    (B, grid*grid) where small text is."""
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    batch = {"pixels": [], "counts": [], "items": [], "colors": [], "small": []}
    for _ in range(batch_size):
        scene = random_scene(rng, PRETRAIN_SCENE)
        array = (np.asarray(render_scene(scene, image_size), np.float32) / 255.0 - mean) / std
        batch["pixels"].append(torch.from_numpy(array).permute(2, 0, 1))  # (S, S, 3) -> (3, S, S)
        batch["counts"].append(torch.tensor(len(scene.shapes)))
        for name, value in zip(("items", "colors", "small"), dense_targets(scene, image_size, grid)):
            batch[name].append(value)
    return {name: torch.stack(values) for name, values in batch.items()}


class AttributeProbe(nn.Module):
    """A ``transformers`` backbone and linear heads on every token of its last hidden state (the features a PIIP
    branch hands on: CLIP's patch tokens before ``post_layernorm``, ConvNeXt's grid before its final norm).

    Dense heads classify what each token covers (nothing, a shape kind or one of the words, and its colour), the
    way the projector later reads the tokens; the count head reads the mean of the tokens. (A presence head on the
    maximum over tokens, tried first, never learned the words: it stayed at "absent" for every word.)"""

    def __init__(self, backbone: nn.Module, width: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.count_head = nn.Linear(width, MAX_SHAPES + 1)
        self.item_head = nn.Linear(width, len(ITEM_CLASSES))
        self.color_head = nn.Linear(width, len(COLOR_CLASSES))

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        if isinstance(self.backbone, ConvNextModel):  # (B, D, H, W) -> (B, HW, D)
            return self.backbone(pixel_values=pixels).last_hidden_state.flatten(2).transpose(1, 2)
        # CLIP: its position table keeps the pretraining size (``image_size`` of the backbone config), interpolated
        # to other inputs as the PIIP branch does; drop the class token
        return self.backbone(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 1:]

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.tokens(pixels)
        return {
            "counts": self.count_head(tokens.mean(dim=1)),
            "items": self.item_head(tokens),
            "colors": self.color_head(tokens),
        }


def _rate(hits: torch.Tensor, where: torch.Tensor) -> float:
    return (hits & where).sum().item() / max(1, where.sum().item())


def _dense_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the item tokens plus a fifth of it on the background tokens (most tokens are background)."""
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    on_item = targets.flatten() > 0
    return loss[on_item].mean() + 0.2 * loss[~on_item].mean()


def probe_loss(probe: AttributeProbe, batch: dict) -> tuple[torch.Tensor, dict]:
    """Dense item and colour CE plus the count's CE; statistics: accuracy of the item class on word tokens (and
    those of small words) and on shape tokens, of the colour on item tokens, and of the count."""
    out = probe(batch["pixels"])
    loss = (F.cross_entropy(out["counts"], batch["counts"]) + _dense_loss(out["items"], batch["items"])
            + _dense_loss(out["colors"], batch["colors"]))  # fmt: skip
    with torch.no_grad():
        predicted_items, items = out["items"].argmax(-1), batch["items"]
        is_word = items > len(SHAPES)
        stats = {
            "word_token_accuracy": _rate(predicted_items == items, is_word),
            "small_word_token_accuracy": _rate(predicted_items == items, is_word & batch["small"]),
            "shape_token_accuracy": _rate(predicted_items == items, (items > 0) & ~is_word),
            "color_token_accuracy": _rate(out["colors"].argmax(-1) == batch["colors"], items > 0),
            "count_accuracy": (out["counts"].argmax(-1) == batch["counts"]).float().mean().item(),
        }
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


WARMUP_STEPS = 50


def optimizer_step(module: nn.Module, optimizer, loss: torch.Tensor) -> None:
    """One AdamW step on ``loss`` with the gradient clipped to norm 1 (one run without it diverged at step ~1,500)."""
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()


def decay_factor(step: int, steps: int, decay: float = 0.2) -> float:
    """A short linear warm-up, a constant learning rate, then a linear decay to zero over the last ``decay`` of the
    steps. (Reading words starts late, after a plateau of about a thousand steps: a cosine schedule would have slowed
    it down by then.)"""
    return min(1.0, (step + 1) / WARMUP_STEPS, (steps - step) / max(1.0, decay * steps))


def train_branch(part: str, branch, args, log) -> tuple[AttributeProbe, dict]:
    """Train one branch's probe for its ``--branch-steps``; returns it and held-out metrics before/after."""
    probe = branch_probe(branch, args.seed)
    with torch.no_grad():
        grid = math.isqrt(probe.tokens(torch.zeros(1, 3, branch.image_size, branch.image_size)).shape[1])
    held_out = scene_batch(random.Random(f"{args.seed}-heldout"), args.eval_size, branch.image_size, grid)
    initial = evaluate_probe(probe, held_out)
    rng = random.Random(f"{args.seed}-branch-{part}")
    steps = args.branch_steps[part]
    optimizer = torch.optim.AdamW(probe.parameters(), lr=args.branch_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: decay_factor(step, steps))
    for step in range(1, steps + 1):
        loss, stats = probe_loss(probe, scene_batch(rng, args.batch_size, branch.image_size, grid))
        optimizer_step(probe, optimizer, loss)
        schedule.step()
        log({"part": part, "step": step, "loss": loss.item(), **stats})
    return probe, {"initial": initial, "final": evaluate_probe(probe, held_out)}


def conversation_batch(samples: list, scenes: list | None = None) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) ``input_ids``, ``labels`` (IGNORE_INDEX outside answers) and ``attention_mask``; with
    ``scenes`` (one ``(items, colors, positions)`` tuple or None per sample), ``items``, ``colors`` and
    ``positions`` (B, grid cells)."""
    length = max(len(sample.input_ids) for sample in samples)
    input_ids = torch.zeros(len(samples), length, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(samples), length, dtype=torch.long)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample.input_ids)] = sample.input_ids
        labels[row, : len(sample.labels)] = sample.labels
        mask[row, : len(sample.input_ids)] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
    if scenes and any(scene is not None for scene in scenes):
        cells = next(len(scene[0]) for scene in scenes if scene is not None)
        empty = (torch.zeros(cells, dtype=torch.long),) * 3
        for index, name in enumerate(("items", "colors", "positions")):
            batch[name] = torch.stack([(scene or empty)[index] for scene in scenes])
    return batch


def caption_sample(rng: random.Random, tokenizer, max_length: int):
    """A scene caption as language-model text, in stage 1's ``plain`` format without the image: loss on the
    caption. Vicuna models any text; a demo LLM trained on answers alone cannot write a caption, and stage 1 (a
    frozen LLM, the projector alone learning) then has nothing to align the image to."""
    turns = [
        {"from": "human", "value": IMAGE_TOKEN},
        {"from": "gpt", "value": caption(scene_with_items(rng, TRAIN_SCENE))},
    ]
    return tokenize_conversation(turns, tokenizer, "plain", 0, 1, max_length)


# Scenes written in words. A real LLM can already talk about what is named in its context; the demo LLM learns it
# here: the image's VISUAL_TOKENS positions (the demo tower's 8x8 output grid, row-major) hold, per grid cell, the
# embedding of the image token plus, where an item covers the cell (``dense_targets``, the branches' labels), the
# embeddings of its name and colour words. The questions and captions are those of the demo's stages. Stage 1 then
# has a target a projector can reach: write each cell of the image as the words that name it. With
# ``--llm-cell-positions`` (from the presence phase on) an item's cells also hold its position's words ("top" +
# "left"): a 4-layer LLM does not learn to tell a visual token's place in the grid from its place in the sequence
# (positions near chance, docs/quickstart.md), and a tower's tokens carry their place (a probe of the projector's
# shape names the 3x3 region of 93% of the built tower's tokens).
SCENE_GRID = 8
VISUAL_TOKENS = SCENE_GRID**2
# An LLM part learns one layout of visual tokens. ``llm`` is the demo tower's (8x8); ``llm_144`` is the same recipe
# on the 12x12 grid of the single-branch baseline ``demo-clip_96`` (docs/pyramid_vs_single.md), which
# ``piip-llava demo`` picks for a tower with 144 visual tokens, as it picks a branch part by resolution.
LLM_GRIDS = {"llm": SCENE_GRID, "llm_144": 12}


def scene_sample(rng: random.Random, tokenizer, max_length: int, as_caption: bool,
                 kind_weights: dict[str, float] | None = None, grid: int = SCENE_GRID,
                 one_lettered: bool = False):  # fmt: skip
    """A stage-2 style conversation (``vicuna_v1``, question kinds weighted by ``kind_weights``, default the
    stage-2 mix's) or a stage-1 caption (``plain``) about a random scene, with the scene's per-cell (item, colour)
    classes for its ``grid`` x ``grid`` visual tokens."""
    scene = scene_with_items(rng, TRAIN_SCENE)
    if as_caption:
        turns, template = [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": caption(scene)}], "plain"
    else:
        turns = instruct_turns(scene, rng, kind_weights=kind_weights, one_lettered=one_lettered)
        template = "vicuna_v1"
    return scene_row(scene, turns, tokenizer, template, max_length, grid)


def scene_row(scene, turns: list[dict], tokenizer, template: str, max_length: int, grid: int):
    """A conversation about ``scene`` tokenized with its ``grid`` x ``grid`` visual tokens, and the scene's
    per-cell (item, colour, position) classes (``dense_targets``) that ``embed_scenes`` writes there."""
    sample = tokenize_conversation(turns, tokenizer, template, grid * grid, 1, max_length)
    items, colors, _, positions = dense_targets(scene, scenes.BASE_SIZE, grid)
    return sample, (items, colors, positions)


def word_token_ids(tokenizer, names: list[str]) -> torch.Tensor:
    """The first token of each name as it reads after a space (``none``/``word:`` prefixes dropped)."""
    return torch.tensor([tokenizer(" " + name.split(":")[-1], add_special_tokens=False)["input_ids"][0]
                         for name in names])  # fmt: skip


@functools.cache
def class_token_ids(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids of ``ITEM_CLASSES`` and ``COLOR_CLASSES``, tokenized once per tokenizer (every step uses them)."""
    return word_token_ids(tokenizer, ITEM_CLASSES), word_token_ids(tokenizer, COLOR_CLASSES)


@functools.cache
def position_token_ids(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 + len(POSITIONS), 2) token ids of each position's words ("top left": top, left; "top": top, padded) and
    which of them count; row 0 (no item) counts none."""
    words = [[]] + [position.split() for position in scenes.POSITIONS]
    ids = torch.zeros(len(words), 2, dtype=torch.long)
    for row, names in enumerate(words):
        if names:
            ids[row, : len(names)] = word_token_ids(tokenizer, names)
    return ids, torch.tensor([[index < len(names) for index in range(2)] for names in words])


def embed_scenes(llm, tokenizer, batch: dict) -> torch.Tensor:
    """``inputs_embeds`` of the batch, the visual tokens of scene rows written as word embeddings: image token +
    item name + colour name (just the image token where nothing is), + the item's position words where
    ``llm.scene_positions`` (``--llm-cell-positions``) is set."""
    embedding = llm.get_input_embeddings()
    embeds = embedding(batch["input_ids"])
    if "items" not in batch:
        return embeds
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    items, colors = batch["items"], batch["colors"]
    item_ids, color_ids = class_token_ids(tokenizer)
    names = embedding(item_ids[items]) + embedding(color_ids[colors])
    if getattr(llm, "scene_positions", False):
        position_ids, counts = position_token_ids(tokenizer)
        positions = batch["positions"]
        names = names + (embedding(position_ids[positions]) * counts[positions].unsqueeze(-1)).sum(dim=-2)
    cells = embedding(torch.full_like(items, image_id)) + (items > 0).unsqueeze(-1) * names
    is_image = batch["input_ids"] == image_id
    rows = is_image.any(dim=1)
    return embeds.masked_scatter(is_image.unsqueeze(-1), cells[rows])


def text_batch(rng: random.Random, tokenizer, batch_size: int, max_length: int, captions: int = 0,
               scene_conversations: int = 0, scene_captions: int = 0, kind_weights: dict[str, float] | None = None,
               grid: int = SCENE_GRID, one_lettered: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """``batch_size`` warm-up conversations (``vicuna_v1``, loss on the answers), ``captions`` captions as text,
    ``scene_conversations`` conversations and ``scene_captions`` captions about scenes written in words;
    ``one_lettered``: at most one multiple-choice question per conversation, first."""
    samples = [tokenize_conversation(warmup_turns(rng, one_lettered=one_lettered), tokenizer, "vicuna_v1", 0, 0,
                                     max_length) for _ in range(batch_size)]  # fmt: skip
    samples += [caption_sample(rng, tokenizer, max_length) for _ in range(captions)]
    scene_list = [None] * len(samples)
    for index in range(scene_conversations + scene_captions):
        sample, scene = scene_sample(rng, tokenizer, max_length, index >= scene_conversations, kind_weights, grid,
                                     one_lettered)  # fmt: skip
        samples.append(sample)
        scene_list.append(scene)
    return conversation_batch(samples, scene_list)


PICK_QUESTION = "Choose one of the options."


def letter_turns(rng: random.Random, image: bool = False) -> list[dict]:
    """A one-question text conversation of the letter phase: four options of one kind (colours, shapes or written
    words) in MMBench's prompt under "Choose one of the options.", answered with one of them picked at random, then
    its letter ("orange C", as ``ask`` answers a lettered question). Only the option just written tells the letter,
    so this teaches the look-up a lettered question about a scene needs: find that word among the options and copy
    the letter in front of it. Facts asked by letter ("What color is a plum?") taught a map from the question to
    its option instead, which a question about a scene gives nothing to (docs/quickstart.md). ``image``: the
    question follows an image token (``letter_batch``'s empty prefix)."""
    pool = rng.sample(rng.choice([list(COLORS), SHAPES, list(VOCABULARY)]), 4)
    qa = scenes.QA(PICK_QUESTION, rng.choice(pool), "pick", tuple(pool))
    return image_question(*ask(qa, rng, lettered=True), image)


def image_question(prompt: str, answer: str, image: bool = True) -> list[dict]:
    """One question and its answer; with ``image`` the question follows ``<image>`` on its own line, as LLaVA
    asks it."""
    return [
        {"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt}" if image else prompt},
        {"from": "gpt", "value": answer},
    ]


def scene_letter_sample(rng: random.Random, tokenizer, max_length: int, grid: int, presence: float = 0.0):
    """``letter_turns`` about a scene written in words: one question of the stage-2 mix, asked for a short answer or
    as four lettered options, half each; with the scene's per-cell classes, as ``scene_sample``. With probability
    ``presence`` the question is POPE's instead ("Is there a red circle in the image?", ``presence_question``, its
    negatives adversarial half the time), answered a bare Yes / No after the short-answer suffix."""
    scene = scene_with_items(rng, TRAIN_SCENE)
    if presence and rng.random() < presence:
        qa = presence_question(scene, rng, adversarial=rng.random() < 0.5)
        turns = image_question(*ask(qa, rng, lettered=False))
    else:
        qa = pick_question(scene, rng)
        turns = image_question(*ask(qa, rng, lettered=rng.random() >= 0.5))
    return scene_row(scene, turns, tokenizer, "vicuna_v1", max_length, grid)


def letter_batch(rng: random.Random, tokenizer, batch_size: int, max_length: int, scene_fraction: float = 0.0,
                 grid: int = SCENE_GRID, prefix: int = 0, presence: float = 0.0) -> dict:  # fmt: skip
    """``batch_size`` ``letter_turns`` conversations in ``vicuna_v1``, loss on the answers; a ``scene_fraction`` of
    them about scenes written in words (``scene_letter_sample``, ``presence`` of those presence questions).
    ``prefix``: the text conversations open with an image of that many visual tokens where nothing is (the image
    token's embedding alone, as ``embed_scenes`` writes an empty cell)."""
    samples, scene_list = [], []
    empty = (torch.zeros(prefix, dtype=torch.long),) * 3
    for _ in range(batch_size):
        if scene_fraction and rng.random() < scene_fraction:
            sample, scene = scene_letter_sample(rng, tokenizer, max_length, grid, presence)
        else:
            turns = letter_turns(rng, image=prefix > 0)
            sample = tokenize_conversation(turns, tokenizer, "vicuna_v1", prefix, int(prefix > 0), max_length)
            scene = empty if prefix else None
        samples.append(sample)
        scene_list.append(scene)
    return conversation_batch(samples, scene_list)


def letter_prefix(step: int, args, grid: int) -> int:
    """The empty image prefix of the letter phase's text conversations at ``step`` (``--llm-letter-prefix-ramp``):
    it grows a grid row at a time from none to the part's ``grid**2`` visual tokens over that fraction of the phase.
    A prefix of all the visual tokens from the start keeps the letters at chance (0.30 after 3,000 steps behind 64
    empty tokens, 0.93 with none; docs/quickstart.md): the look-up two tokens back is learned first, then kept as
    the context grows."""
    if not args.llm_letter_prefix_ramp:
        return 0
    ramp_steps = args.llm_letter_prefix_ramp * args.llm_letter_steps
    return min(grid, int(grid * step / ramp_steps)) * grid


def llm_loss(llm, batch: dict, letter_ids: torch.Tensor | None = None, tokenizer=None) -> tuple[torch.Tensor, dict]:
    """Answer-token CE; statistics: answer-token accuracy, and on the option-letter answers alone (``letter_ids``,
    the tokens of A-D: multiple-choice answers are the only answers made of them; or other answer tokens to score
    alone, such as Yes / No). Scene rows need ``tokenizer``."""
    if "items" in batch:
        embeds = embed_scenes(llm, tokenizer, batch)
        logits = llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits[:, :-1]
    else:
        logits = llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    with torch.no_grad():
        right = logits.argmax(-1) == targets
        stats = {"answer_token_accuracy": _rate(right, targets != IGNORE_INDEX)}
        if letter_ids is not None:
            stats["letter_accuracy"] = _rate(right, torch.isin(targets, letter_ids))
    return loss, stats


def letter_token_ids(tokenizer) -> torch.Tensor:
    """The token ids of the option letters as an answer spells them."""
    ids = {tokenizer(f" {letter}", add_special_tokens=False)["input_ids"][-1] for letter in "ABCD"}
    return torch.tensor(sorted(ids))


# The demo LLM's weights start at std 0.08 (about 1/sqrt(hidden_size)) instead of Llama's 0.02, which is meant for
# widths in the thousands: at 0.02 a 128-wide model's attention starts uniform and no head learns to look at a
# token's neighbour, so option letters (two tokens before the option's text) stay at chance for thousands of steps
# (measured with benchmarks/llm_skills.py; docs/quickstart.md).
LLM_INIT_STD = 0.08


def build_llm(tokenizer, seed: int, layers: int = DEMO_LLM["num_hidden_layers"]):
    overrides = {**DEMO_LLM, "initializer_range": LLM_INIT_STD, "num_hidden_layers": layers}
    config = tiny_text_config(tokenizer, "llama", overrides)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def evaluate_llm(llm, batch, letter_ids: torch.Tensor, tokenizer=None) -> dict:
    llm.eval()
    with torch.no_grad():
        loss, stats = llm_loss(llm, batch, letter_ids, tokenizer)
    llm.train()
    return {"loss": loss.item(), **stats}


def train_letters(llm, tokenizer, letters: torch.Tensor, args, log, part: str) -> dict:
    """The letter phase (``--llm-letter-steps``, before the main mix): one-question conversations, an option picked
    and lettered (``letter_turns``, ``letter_batch``), constant rate ``--llm-letter-lr``, its own AdamW. With
    ``--llm-letter-prefix-ramp`` the text conversations sit behind the growing empty image of ``letter_prefix``, and
    the ``--llm-letter-scenes`` fraction about scenes in words comes in once that image is whole (text letters
    behind an image first, then the composition with a scene). Returns the held-out metrics at its end (logged every
    250 steps, as ``held_out_*``), with ``--llm-letter-scenes`` the letters of held-out scene questions alone as
    ``scene_letter_accuracy``."""
    fraction, grid = args.llm_letter_scenes, LLM_GRIDS[part]
    full_prefix = grid * grid if args.llm_letter_prefix_ramp else 0  # held out behind the whole prefix
    held_out = letter_batch(random.Random(f"{args.seed}-letter-heldout"), tokenizer, args.eval_size, args.max_length,
                            fraction, grid, full_prefix)  # fmt: skip
    held_out_scenes = letter_batch(random.Random(f"{args.seed}-letter-scene-heldout"), tokenizer, args.eval_size,
                                   args.max_length, 1.0, grid) if fraction else None  # fmt: skip

    def evaluate() -> dict:
        metrics = evaluate_llm(llm, held_out, letters, tokenizer)
        if held_out_scenes is not None:
            metrics["scene_letter_accuracy"] = evaluate_llm(llm, held_out_scenes, letters, tokenizer)["letter_accuracy"]
        return metrics

    rng = random.Random(f"{args.seed}-letters")
    optimizer = torch.optim.AdamW(llm.parameters(), lr=args.llm_letter_lr, weight_decay=0.0)
    last = min(args.llm_letter_steps, args.llm_letter_stop or args.llm_letter_steps)  # --llm-letter-stop cuts it
    for step in range(1, last + 1):
        prefix = letter_prefix(step, args, grid)
        scene_fraction = fraction if prefix == full_prefix else 0.0  # scenes only behind a whole image
        batch = letter_batch(rng, tokenizer, args.llm_letter_batch_size, args.max_length, scene_fraction, grid, prefix)
        loss, stats = llm_loss(llm, batch, letters, tokenizer)
        optimizer_step(llm, optimizer, loss)
        if step % 250 == 0:
            stats.update({f"held_out_{k}": v for k, v in evaluate().items()})
        log({"part": part, "phase": "letters", "step": step, "loss": loss.item(), **stats,
             **({"prefix": prefix} if args.llm_letter_prefix_ramp else {})})  # fmt: skip
    return evaluate()


def train_presence(llm, tokenizer, letters: torch.Tensor, yes_no: torch.Tensor, args, log, part: str,
                   held_out: dict, phase: str = "presence") -> None:  # fmt: skip
    """The presence phase (``--llm-presence-steps``, after the main mix): the letter phase's loop on scenes in words
    alone, a ``--llm-presence-fraction`` of its questions POPE's presence questions (``scene_letter_sample``), the
    rest the letter phase's scene questions; constant rate ``--llm-letter-lr``, its own AdamW. The main mix asks
    yes/no questions too, but they are one question kind in ten there and the part answered them at chance
    (docs/quickstart.md, item 2). Every 250 steps it logs the accuracy of the Yes / No tokens of ``held_out``
    (presence questions alone). ``phase``: its name in the log and its data's (a later round's is new data)."""
    rng = random.Random(f"{args.seed}-{phase}")
    optimizer = torch.optim.AdamW(llm.parameters(), lr=args.llm_letter_lr, weight_decay=0.0)
    for step in range(1, args.llm_presence_steps + 1):
        batch = letter_batch(rng, tokenizer, args.llm_letter_batch_size, args.max_length, 1.0, LLM_GRIDS[part], 0,
                             args.llm_presence_fraction)  # fmt: skip
        loss, stats = llm_loss(llm, batch, letters, tokenizer)
        optimizer_step(llm, optimizer, loss)
        if step % 250 == 0:
            stats["held_out_presence_accuracy"] = evaluate_llm(llm, held_out, yes_no, tokenizer)["letter_accuracy"]
        log({"part": part, "phase": phase, "step": step, "loss": loss.item(), **stats})


def train_llm(args, log, part: str = "llm", resume: dict | None = None):
    """Train an LLM part: the letter phase (``--llm-letter-steps``, ``train_letters``), then warm-up conversations
    and scenes written in words on its layout (``LLM_GRIDS``), then the presence phase (``train_presence``) and the
    mix once more (``--llm-final-steps``); returns it, its tokenizer and held-out metrics (also logged every 250
    steps, as ``held_out_*``); ``--llm-rounds N`` runs the presence phase and the final mix N times, each round on
    new data (results ``after_round_K`` between rounds). ``resume``: the state dict and results of this command's
    part as its main mix or an earlier round left it (``--llm-continue``): only the phases after that run."""
    grid = LLM_GRIDS[part]
    tokenizer = train_tokenizer()
    letters = letter_token_ids(tokenizer)
    llm = build_llm(tokenizer, args.seed, args.llm_layers)
    held_out = text_batch(random.Random(f"{args.seed}-text-heldout"), tokenizer, args.eval_size, args.max_length,
                          one_lettered=args.llm_one_lettered)  # fmt: skip
    held_out_captions = text_batch(random.Random(f"{args.seed}-caption-heldout"), tokenizer, 0, args.max_length,
                                   args.eval_size)  # fmt: skip
    held_out_scenes = text_batch(random.Random(f"{args.seed}-scene-heldout"), tokenizer, 0, args.max_length,
                                 scene_conversations=args.eval_size, grid=grid,
                                 one_lettered=args.llm_one_lettered)  # fmt: skip
    held_out_scene_captions = text_batch(random.Random(f"{args.seed}-scene-caption-heldout"), tokenizer, 0,
                                         args.max_length, scene_captions=args.eval_size, grid=grid)  # fmt: skip
    held_out_presence = letter_batch(random.Random(f"{args.seed}-presence-heldout"), tokenizer, args.eval_size,
                                     args.max_length, 1.0, grid, presence=1.0)  # fmt: skip
    yes_no = word_token_ids(tokenizer, ["Yes", "No"])  # the presence answers' tokens, scored alone

    def evaluate() -> dict:
        captions = evaluate_llm(llm, held_out_captions, letters)
        scene = evaluate_llm(llm, held_out_scenes, letters, tokenizer)
        scene_captions = evaluate_llm(llm, held_out_scene_captions, letters, tokenizer)
        presence = evaluate_llm(llm, held_out_presence, yes_no, tokenizer)
        return {
            **evaluate_llm(llm, held_out, letters),
            "caption_loss": captions["loss"],
            "scene_answer_accuracy": scene["answer_token_accuracy"],
            "scene_letter_accuracy": scene["letter_accuracy"],
            "scene_caption_loss": scene_captions["loss"],
            "scene_presence_accuracy": presence["letter_accuracy"],  # of the Yes / No token
        }

    def mix(steps: int, phase: str | None) -> None:
        """The main mix: per step warm-up conversations, scenes in words and their captions; decaying rate."""
        rng = random.Random(f"{args.seed}-text" + (f"-{phase}" if phase else ""))
        optimizer = torch.optim.AdamW(llm.parameters(), lr=args.llm_lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: decay_factor(step, steps))
        for step in range(1, steps + 1):
            batch = text_batch(rng, tokenizer, args.llm_batch_size, args.max_length, args.llm_captions,
                               args.llm_scenes, args.llm_scene_captions, args.llm_scene_kinds, grid,
                               args.llm_one_lettered)  # fmt: skip
            loss, stats = llm_loss(llm, batch, letters, tokenizer)
            optimizer_step(llm, optimizer, loss)
            schedule.step()
            if step % 250 == 0:
                stats.update({f"held_out_{k}": v for k, v in evaluate().items()})
            log({"part": part, **({"phase": phase} if phase else {}), "step": step, "loss": loss.item(), **stats})

    done_rounds = resume["rounds"] if resume else 0
    if resume:
        llm.load_state_dict(resume["state"])
        results = dict(resume["results"])
        if done_rounds:  # its end was the final result; it is now that of a round
            results[f"after_round_{done_rounds}"] = results.pop("final")
        else:
            results = {key: results[key] for key in ("initial", "after_letters") if key in results}
    else:
        results = {"initial": evaluate()}
        if args.llm_letter_steps:
            results["after_letters"] = train_letters(llm, tokenizer, letters, args, log, part)
        mix(args.llm_steps, None)
    if args.llm_presence_steps or args.llm_final_steps:
        if not done_rounds:
            results["after_mix"] = evaluate()
        llm.scene_positions = args.llm_cell_positions  # embed_scenes writes positions from here on
        for round_ in range(done_rounds + 1, args.llm_rounds + 1):
            suffix = f"-{round_}" if round_ > 1 else ""
            if round_ > 1:
                results[f"after_round_{round_ - 1}"] = evaluate()
            if args.llm_presence_steps:
                train_presence(llm, tokenizer, letters, yes_no, args, log, part, held_out_presence,
                               "presence" + suffix)  # fmt: skip
                results["after_presence" + suffix.replace("-", "_")] = evaluate()
            mix(args.llm_final_steps, "final" + suffix)
    results["final"] = evaluate()
    return llm, tokenizer, results


PART_NAMES = ("clip", "convnext", "clip_96", *LLM_GRIDS)


def part_branches() -> dict:
    """Part name -> branch config: the demo tower's branches by name, the single baseline's ViT as ``clip_96``."""
    branches = {branch.name: branch for branch in get_tower_config(DEMO_TOWER).branches}
    single = get_tower_config(SINGLE_TOWER).branches[0]
    return {**branches, f"{single.name}_{single.image_size}": single}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("playground/demo_parts"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--branch-steps",
        nargs="*",
        default=[],
        metavar="NAME=N",
        help=f"training steps of a branch (defaults: {BRANCH_STEPS}), or N for every branch",
    )
    parser.add_argument("--llm-steps", type=int, default=2000)
    parser.add_argument(
        "--parts",
        nargs="*",
        default=list(PART_NAMES),
        choices=PART_NAMES,
        help="the parts to (re)train; the others keep their files",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="scenes per branch step")
    parser.add_argument("--llm-batch-size", type=int, default=4, help="warm-up conversations per LLM step")
    parser.add_argument("--llm-captions", type=int, default=0, help="captions as text per LLM step")
    parser.add_argument(
        "--llm-scenes", type=int, default=12, help="conversations about a scene written in words per step"
    )
    parser.add_argument(
        "--llm-scene-captions", type=int, default=4, help="captions of a scene written in words per step"
    )
    parser.add_argument(
        "--llm-scene-kinds",
        nargs="*",
        default=[],
        metavar="KIND=WEIGHT",
        help=f"question kinds of the scene conversations (default the stage-2 mix's: {QUESTION_KINDS})",
    )
    parser.add_argument(
        "--llm-letter-steps",
        type=int,
        default=6000,
        help="steps of the letter phase before the main mix (one-question conversations: an option picked and "
        "lettered, letter_turns; 0: none)",
    )
    parser.add_argument(
        "--llm-one-lettered",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="at most one multiple-choice question per conversation, asked first (letter_question_first)",
    )
    parser.add_argument("--llm-layers", type=int, default=DEMO_LLM["num_hidden_layers"], help="the LLM's depth")
    parser.add_argument("--llm-letter-batch-size", type=int, default=16, help="conversations per letter step")
    parser.add_argument(
        "--llm-letter-scenes", type=float, default=0.5, help="the fraction of letter-phase conversations about scenes"
    )
    parser.add_argument("--llm-letter-lr", type=float, default=1e-3, help="the letter phase's constant rate")
    parser.add_argument(
        "--llm-letter-stop",
        type=int,
        default=0,
        metavar="N",
        help="end the letter phase after N steps, its schedule still that of --llm-letter-steps (to rerun the start "
        "of a recorded command)",
    )
    parser.add_argument(
        "--llm-letter-prefix-ramp",
        type=float,
        default=0.5,
        metavar="F",
        help="the letter phase's text conversations open with an empty image that grows a grid row at a time to "
        "all the part's visual tokens over this fraction of the phase (letter_prefix; 0: no image)",
    )
    parser.add_argument(
        "--llm-presence-steps",
        type=int,
        default=4000,
        help="steps of the presence phase after the main mix (train_presence; 0: none)",
    )
    parser.add_argument(
        "--llm-presence-fraction",
        type=float,
        default=0.25,
        help="the fraction of the presence phase's scene questions that are presence questions (0.5 for 3,000 steps "
        "gave fewer points of every demo score at seed 0: docs/quickstart.md)",
    )
    parser.add_argument(
        "--llm-final-steps", type=int, default=2000, help="steps of the mix again after the presence phase"
    )
    parser.add_argument(
        "--llm-rounds",
        type=int,
        default=1,
        help="times the presence phase and the final mix run, each round on new data (with --llm-continue, a part "
        "made with fewer rounds gets the rest)",
    )
    parser.add_argument(
        "--llm-cell-positions",
        action="store_true",
        help="from the presence phase on, an item's cells of a scene in words also hold its position's words "
        "(embed_scenes)",
    )
    parser.add_argument(
        "--llm-continue",
        action="store_true",
        help="the LLM part already in --output was made by this command's phases up to the main mix, or by fewer "
        "--llm-rounds (same seed and settings, checked against its record): load it and run only the presence phase "
        "and the final mix (the rounds left), its log and record continued",
    )
    parser.add_argument("--eval-size", type=int, default=128, help="held-out scenes / conversations")
    parser.add_argument("--branch-lr", type=float, default=3e-3)
    parser.add_argument("--llm-lr", type=float, default=2e-3)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args(argv)
    steps = dict(BRANCH_STEPS)
    for value in args.branch_steps:
        name, _, count = value.rpartition("=")
        if name and name not in steps:
            parser.error(f"--branch-steps: unknown branch {name!r}; valid: {', '.join(steps)}")
        for key in [name] if name else list(steps):
            steps[key] = int(count)
    args.branch_steps = steps
    if not 0 <= args.llm_letter_prefix_ramp <= 1:
        parser.error("--llm-letter-prefix-ramp takes a fraction in [0, 1] of the letter phase (--llm-letter-steps)")
    if not args.llm_letter_steps:  # no letter phase: nothing of it to record
        args.llm_letter_prefix_ramp = args.llm_letter_scenes = 0.0
    kinds = name_values(args.llm_scene_kinds, list(QUESTION_KINDS), float, "KIND")
    args.llm_scene_kinds = {**dict.fromkeys(QUESTION_KINDS, 0.0), **kinds} if kinds else None
    return args


def optional_llm_settings(args) -> dict:
    """The LLM settings of the tries in docs/quickstart.md, recorded only when used, so that the committed parts'
    records stay as they were made (the letter phase's batch size and rate only with a letter phase)."""
    settings = {
        "one_lettered": args.llm_one_lettered,
        "layers": args.llm_layers if args.llm_layers != DEMO_LLM["num_hidden_layers"] else None,
        "letter_steps": args.llm_letter_steps,
        "letter_batch_size": args.llm_letter_batch_size if args.llm_letter_steps else None,
        "letter_lr": args.llm_letter_lr if args.llm_letter_steps else None,
        "letter_scenes": args.llm_letter_scenes,
        "letter_prefix_ramp": args.llm_letter_prefix_ramp,
        "scene_kinds": args.llm_scene_kinds,
        "presence_steps": args.llm_presence_steps,
        "presence_fraction": args.llm_presence_fraction if args.llm_presence_steps else None,
        "final_steps": args.llm_final_steps,
        "rounds": args.llm_rounds if args.llm_rounds != 1 else None,
        "cell_positions": args.llm_cell_positions,
    }
    return {key: value for key, value in settings.items() if value}


def part_settings(args, part: str) -> dict:
    if part in LLM_GRIDS:
        return {
            "steps": args.llm_steps,
            "batch_size": args.llm_batch_size,
            "captions": args.llm_captions,
            "scenes": args.llm_scenes,
            "scene_captions": args.llm_scene_captions,
            "scene_grid": LLM_GRIDS[part],
            **optional_llm_settings(args),
            "lr": args.llm_lr,
        }
    return {"steps": args.branch_steps[part], "batch_size": args.batch_size, "lr": args.branch_lr}


# What ``--llm-continue`` does not compare: the settings of the phases it runs, and what a record holds besides the
# settings. Every other recorded setting must be the command's.
LATER_SETTINGS = {"presence_steps", "presence_fraction", "final_steps", "cell_positions", "rounds", "command",
                  "results", "seconds", "runs"}  # fmt: skip
ROUND_SETTINGS = ("presence_steps", "presence_fraction", "final_steps", "cell_positions")


def continued_part(args, part: str) -> dict:
    """``--llm-continue``: the part in ``--output``, its record and its log's lines, checked to be this command's part
    as its main mix, or fewer rounds of the later phases than ``--llm-rounds`` asks, left it."""
    record_file, folder = args.output / "parts.json", args.output / part
    record = json.loads(record_file.read_text())["parts"].get(part) if record_file.exists() else None
    if record is None or not (folder / "model.safetensors").exists():
        raise SystemExit(f"--llm-continue: no {part} part recorded in {args.output}")
    rounds = record.get("rounds", 1) if "after_mix" in record["results"] else 0
    wanted = {"seed": args.seed, **part_settings(args, part)}
    differ = sorted(key for key in (set(record) | set(wanted)) - LATER_SETTINGS if record.get(key) != wanted.get(key))
    if rounds:  # more rounds of the same later phases
        differ += [key for key in ROUND_SETTINGS if record.get(key) != wanted.get(key)]
    if differ or rounds >= args.llm_rounds:
        reason = differ or f"it has {rounds} round(s) of the later phases, --llm-rounds {args.llm_rounds}"
        raise SystemExit(f"--llm-continue: {folder} was not made by this command's phases up to the main mix or an "
                         f"earlier round (settings that differ: {reason})")  # fmt: skip
    with gzip.open(args.output / "logs" / f"{part}.jsonl.gz", "rt") as earlier:
        lines = earlier.readlines()
    later = rounds * (record.get("presence_steps", 0) + record.get("final_steps", 0))
    if len(lines) != record["steps"] + record.get("letter_steps", 0) + later:
        raise SystemExit(f"--llm-continue: the log of {part} has {len(lines)} steps, its record more or fewer")
    return {"state": load_file(folder / "model.safetensors"), "results": record["results"], "record": record,
            "log": lines, "rounds": rounds}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Train the ``--parts`` asked for (default: all) and record each in ``parts.json`` with the command that made
    it; a part not retrained keeps its files and record."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args.output / "logs").mkdir(parents=True, exist_ok=True)
    command = "python scripts/pretrain_demo_parts.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    record_file = args.output / "parts.json"
    branches = part_branches()
    for part in args.parts:
        resume = continued_part(args, part) if args.llm_continue and part in LLM_GRIDS else None
        # a continued part's clock goes on from the earlier run's
        started = time.perf_counter() - (resume["record"]["seconds"] if resume else 0.0)
        with gzip.open(args.output / "logs" / f"{part}.jsonl.gz", "wt") as log_file:
            log_file.writelines(resume["log"] if resume else [])  # continued: the log reads as one run's

            def log(entry: dict, log_file=log_file, started=started) -> None:
                entry = {key: round(value, 5) if isinstance(value, float) else value for key, value in entry.items()}
                log_file.write(json.dumps({**entry, "seconds": round(time.perf_counter() - started, 1)}) + "\n")
                if entry["step"] % 100 == 0:
                    stats = " ".join(f"{k} {v:.3f}" for k, v in entry.items() if k not in ("part", "step", "phase"))
                    logger.info("%s %s step %d %s", entry["part"], entry.get("phase", ""), entry["step"], stats)

            if part in LLM_GRIDS:
                llm, tokenizer, results = train_llm(args, log, part, resume)
                llm.save_pretrained(args.output / part)
                tokenizer.save_pretrained(args.output / part)
            else:
                probe, results = train_branch(part, branches[part], args, log)
                probe.backbone.save_pretrained(args.output / "branches" / part)
        entry = {"command": command.strip(), "seed": args.seed, **part_settings(args, part), "results": results,
                 "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        if resume:  # made in two runs: the one command that makes it, and both runs with their times
            earlier = resume["record"]
            entry["command"] = command.replace(" --llm-continue", "").strip()
            entry["runs"] = [
                *earlier.get("runs", [{"command": earlier["command"], "seconds": earlier["seconds"]}]),
                {"command": command.strip(), "seconds": round(entry["seconds"] - earlier["seconds"], 1)},
            ]
        # read just before writing: another run may have recorded another part meanwhile
        parts = json.loads(record_file.read_text())["parts"] if record_file.exists() else {}
        record = {"tower": DEMO_TOWER, "parts": {**parts, part: entry}}
        record_file.write_text(json.dumps(record, indent=2) + "\n")
        logger.info("%s in %s (%.0f s): %s", part, args.output, entry["seconds"], json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
