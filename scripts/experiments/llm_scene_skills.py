"""How well an LLM part answers each kind of question when the scene is handed to it perfectly: its visual tokens
written in words (``scripts/pretrain_demo_parts.py``: image token + item name + colour per cell of the 8x8 grid, +
the item's position words for a part made with ``--llm-cell-positions``).

This is the ceiling of the demo for that LLM: a projector can at best make the visual tokens look like this. Each
row is one question skill in the stage-2 formats (short answer, lettered options, yes/no presence), scored on the
first answer token that is not blank (a lettered answer, the option's text then its letter: on every token up to
the letter, so a row is right when greedy decoding writes that answer), with the scene and with every cell blanked
(the image token alone: what the LLM gets from the question and its priors).

    python scripts/experiments/llm_scene_skills.py --llm DIR [--samples 600] [--json OUT]

The layout and the position words follow the part's record in ``DIR/../parts.json`` (``--grid`` and
``--cell-positions`` for a part without one).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import random
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from piip_llava.data import scenes
from piip_llava.data.scene_sets import TRAIN_SCENE, ask, pick_question, scene_with_items
from piip_llava.eval.benchmarks import SHORT_ANSWER

SCRIPT = Path(__file__).resolve().parents[1] / "pretrain_demo_parts.py"


def parts_script():
    spec = importlib.util.spec_from_file_location("pretrain_demo_parts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def question(scene, rng: random.Random) -> tuple[str, str, str]:
    """(prompt, answer, skill): a short-answer, lettered-option or presence question about the scene."""
    qa, kind = pick_question(scene, rng), rng.choice(["short", "choice", "presence"])
    if kind == "choice":
        return *ask(qa, rng, lettered=True), f"letter: {qa.category}"
    if kind == "presence":
        qa = scenes.presence_question(scene, rng, adversarial=rng.random() < 0.5)
    return f"{qa.question}\n{SHORT_ANSWER}", qa.answer, qa.category


def first_answer_accuracy(llm, tokenizer, parts, batch: dict, blank: torch.Tensor, whole: bool = False) -> float:
    """Share of rows whose first non-blank answer token (``blank``: per token id, whether it decodes to
    whitespace) is the argmax of the logits before it; ``whole``: every answer token but the end token is."""
    with torch.no_grad():
        embeds = parts.embed_scenes(llm, tokenizer, batch)
        logits = llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    answer = targets != parts.IGNORE_INDEX
    right = logits.argmax(-1) == targets
    if whole:
        last = answer.int().cumsum(dim=1) == answer.sum(dim=1, keepdim=True)  # the end token and what follows
        return (right | ~answer | last).all(dim=1).float().mean().item()
    first = (answer & ~blank[targets.clamp(min=0)]).float().argmax(dim=1)
    rows = torch.arange(len(targets))
    return right[rows, first].float().mean().item()


def skill_table(llm, tokenizer, samples: int, seed: int = 0, grid: int = 8) -> dict[str, dict]:
    """skill -> {"questions", "scene", "blank"} (accuracies in %), scenes written on a ``grid`` x ``grid`` layout."""
    parts, rng = parts_script(), random.Random(f"{seed}-scene-skills")
    rows = collections.defaultdict(list)
    for _ in range(samples):
        scene = scene_with_items(rng, TRAIN_SCENE)
        prompt, answer, skill = question(scene, rng)
        turns = [{"from": "human", "value": "<image>\n" + prompt}, {"from": "gpt", "value": answer}]
        sample = parts.tokenize_conversation(turns, tokenizer, "vicuna_v1", grid * grid, 1, 512)
        items, colors, _, positions = parts.dense_targets(scene, scenes.BASE_SIZE, grid)
        rows[skill].append((sample, items, colors, positions))
    blank = torch.tensor([tokenizer.decode([i]).strip() == "" for i in range(len(tokenizer))])
    table = {}
    for skill in sorted(rows):
        samples_, items, colors, positions = zip(*rows[skill])
        scores, whole = {}, skill.startswith("letter: ")  # a lettered answer counts whole
        for mode, cells in (("scene", items), ("blank", [torch.zeros_like(i) for i in items])):
            batch = parts.conversation_batch(list(samples_), list(zip(cells, colors, positions)))
            scores[mode] = 100 * first_answer_accuracy(llm, tokenizer, parts, batch, blank, whole)
        table[skill] = {"questions": len(samples_), **scores}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", type=Path, required=True, help="an LLM part directory (model and tokenizer)")
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--grid", type=int, default=8, help="visual-token layout of a part without a record: 8 (llm), 12 (llm_144)"
    )
    parser.add_argument(
        "--cell-positions", action="store_true", help="a part without a record: made with --llm-cell-positions"
    )
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    llm = AutoModelForCausalLM.from_pretrained(args.llm).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    record_file = args.llm.resolve().parent / "parts.json"
    record = json.loads(record_file.read_text())["parts"].get(args.llm.resolve().name) if record_file.exists() else None
    if record:  # the layout and cell contents the part was trained on
        args.grid, args.cell_positions = record["scene_grid"], record.get("cell_positions", False)
    llm.scene_positions = args.cell_positions
    table = skill_table(llm, tokenizer, args.samples, args.seed, args.grid)
    print("| skill | questions | with the scene | scene blanked |\n|---|---|---|---|")
    for skill, row in table.items():
        print(f"| {skill} | {row['questions']} | {row['scene']:.1f} | {row['blank']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
