"""The quickstart's data sets from :mod:`piip_llava.data.scenes`, in the formats of the real ones.

- Stage 1: captions in LLaVA-Pretrain's format (``blip_laion_cc_sbu_558k.json``-like).
- Stage 2: an instruction mix in LLaVA-1.5's format: short-answer VQA with LLaVA's suffix, TextVQA-style questions
  with the "Reference OCR token" line, OCR reading, counting, multiple choice, yes/no, multi-turn, descriptions and
  some text-only conversations.
- Evaluation, laid out as LLaVA's ``playground/data/eval`` so ``eval/*.sh`` run on it unchanged
  (docs/evaluation.md): TextVQA (question JSONL + official annotation JSON with 10 answers and OCR
  tokens), a small-text TextVQA set without the OCR line (reading only), MMBench (TSV with base64 images and the
  circular copies, index + k·1,000,000), POPE (question JSONL + ``coco_pope_{random,adversarial}.json``).

Each set draws from its own ``random.Random(f"{seed}-{name}")``, so a seed gives byte-identical files.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from piip_llava.eval.benchmarks import LETTER_ANSWER, SHORT_ANSWER
from piip_llava.eval.mmbench import CIRCULAR_STRIDE, LETTERS

from .scenes import (
    QA,
    Scene,
    SceneSpec,
    caption,
    multiple_choice,
    presence_question,
    random_scene,
    reading_qa,
    render_scene,
    shape_questions,
    text_only_qa,
    word_questions,
)

CAPTION_PROMPTS = ["Describe the image briefly.", "Give a brief description of the image.",
                   "What is in this picture?", "Write a short caption for the image."]  # fmt: skip
TRAIN_SCENE = SceneSpec(shapes=(0, 4), words=(0, 2))
TEXTVQA_SCENE = SceneSpec(shapes=(0, 2), words=(1, 2), text_sizes=("large", "medium"))
SMALL_TEXT_SCENE = SceneSpec(shapes=(0, 2), words=(1, 2), text_sizes=("small",))
EVAL_SCENE = SceneSpec(shapes=(1, 4), words=(0, 2), text_sizes=("large", "medium"))


@dataclass
class SceneSetSizes:
    """Samples per set (the evaluation sets count questions; MMBench runs each question in 4 circular copies)."""

    warmup: int = 3200
    pretrain: int = 7000
    instruct: int = 11200
    textvqa: int = 200
    textvqa_small: int = 200
    mmbench: int = 100
    pope: int = 150


def _save(scene: Scene, folder: Path, name: str, image_size: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    render_scene(scene, image_size).save(folder / name)
    return name


def _turn(human: str, gpt: str) -> list[dict]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}-{name}")


def scene_with_items(rng: random.Random, spec: SceneSpec) -> Scene:
    """A random scene with at least one shape or word (captions and questions need something to name)."""
    while True:
        scene = random_scene(rng, spec)
        if scene.items:
            return scene


def write_pretrain(folder: Path, count: int, seed: int = 0, image_size: int = 128) -> Path:
    """Caption data for stage 1; images under ``folder/images/pretrain``."""
    rng = _rng(seed, "pretrain")
    records = []
    for index in range(count):
        scene = scene_with_items(rng, TRAIN_SCENE)
        image = _save(scene, folder / "images" / "pretrain", f"{index:06d}.png", image_size)
        prompt = rng.choice(CAPTION_PROMPTS)
        prompt = f"<image>\n{prompt}" if rng.random() < 0.5 else f"{prompt}\n<image>"
        records.append({"id": f"pretrain-{index:06d}", "image": f"pretrain/{image}",
                        "conversations": _turn(prompt, caption(scene))})  # fmt: skip
    path = folder / "pretrain.json"
    path.write_text(json.dumps(records))
    return path


def pick_question(scene: Scene, rng: random.Random) -> QA:
    """One skill at random among those the scene allows, then one question of it (keeps skills balanced)."""
    by_category: dict[str, list[QA]] = {}
    for qa in shape_questions(scene, rng) + word_questions(scene, rng):
        by_category.setdefault(qa.category, []).append(qa)
    return rng.choice(by_category[rng.choice(sorted(by_category))])


def mc_prompt(question: str, options: list[str]) -> str:
    return question + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, options)) + \
        f"\n{LETTER_ANSWER}"  # fmt: skip


def ask(qa: QA, rng: random.Random, lettered: bool) -> tuple[str, str]:
    """(prompt, answer): ``qa`` asked for a short answer (LLaVA's short-answer suffix), or as lettered options in
    MMBench's prompt, answered with the option's text, then its letter ("orange C"). MMBench's matching reads the
    letter (``extract_choice``); the text in front lets a small LLM copy the letter from the option it has just
    named, where a bare letter needs the answer and its option found in one step, which the demo LLM never learned
    about a scene (docs/quickstart.md, "What limits it")."""
    if not lettered:
        return f"{qa.question}\n{SHORT_ANSWER}", qa.answer
    options, letter = multiple_choice(qa, rng)
    return mc_prompt(qa.question, options), f"{qa.answer} {letter}"


def textvqa_prompt(question: str, ocr_tokens: list[str] | None) -> str:
    """LLaVA's TextVQA prompt: the question, the "Reference OCR token" line when given, the short-answer suffix."""
    ocr = f"\nReference OCR token: {', '.join(ocr_tokens)}" if ocr_tokens else ""
    return f"{question}{ocr}\n{SHORT_ANSWER}"


QUESTION_KINDS = {"short": 35, "choice": 35, "textvqa": 20, "yesno": 10}


def letter_question_first(kinds: list[str]) -> list[str]:
    """At most one multiple-choice question per conversation, asked first (``one_lettered=True``): the question
    kinds drawn for one conversation, the first "choice" moved to the front and any other dropped. MMBench asks one
    question per image, so its letter is looked up in the only option listing in context. With several listings in
    one conversation the demo's 4-layer LLM does not learn to look the letter up in the latest one: in
    ``benchmarks/llm_skills.py`` four-way letters stay at chance after 1,500 steps of six-question conversations and
    reach 0.55 with one-question ones (docs/quickstart.md). Not the default: in the LLM part's mix it did not make
    letters learnable by itself, and the committed data and parts were made without it."""
    if "choice" not in kinds:
        return kinds
    return ["choice", *(kind for kind in kinds if kind != "choice")]


def _question_turn(kind: str, scene: Scene, rng: random.Random) -> tuple[str, str]:
    """One question of ``kind`` about the scene, as (prompt, answer); "textvqa" falls back to "short" without
    words."""
    if kind == "textvqa" and scene.words:
        qa = rng.choice(word_questions(scene, rng))
        return textvqa_prompt(qa.question, scene.ocr_tokens()), qa.answer
    if kind == "choice":
        return ask(pick_question(scene, rng), rng, lettered=True)
    if kind == "yesno":
        qa = presence_question(scene, rng, adversarial=rng.random() < 0.5)
    else:
        qa = pick_question(scene, rng)
    return ask(qa, rng, lettered=False)


def instruct_turns(
    scene: Scene,
    rng: random.Random,
    max_questions: int = 6,
    kind_weights: dict[str, float] | None = None,
    one_lettered: bool = False,
) -> list[dict]:
    """One conversation about the scene; the first human turn carries ``<image>``. Like LLaVA-1.5's mix, which
    joins the VQA questions of one image into one multi-turn conversation, most conversations ask several
    questions (short answer, multiple choice, TextVQA-style with OCR tokens, yes/no): every answer is a training
    target, so one encoded image teaches several answers. ``kind_weights`` reweights the question kinds (default
    ``QUESTION_KINDS``); ``one_lettered`` asks at most one multiple-choice question, first
    (``letter_question_first``)."""
    if rng.random() < 0.05:
        turns = _turn(rng.choice(CAPTION_PROMPTS), caption(scene))
    else:
        kinds, weights = zip(*(kind_weights or QUESTION_KINDS).items())
        turns, asked = [], set()
        drawn = rng.choices(kinds, weights, k=rng.randint(1, max_questions))
        for kind in letter_question_first(drawn) if one_lettered else drawn:
            prompt, answer = _question_turn(kind, scene, rng)
            if prompt not in asked:
                asked.add(prompt)
                turns += _turn(prompt, answer)
    turns[0]["value"] = "<image>\n" + turns[0]["value"]
    return turns


def write_instruct(folder: Path, count: int, seed: int = 0, image_size: int = 128,
                   text_only_fraction: float = 0.05) -> Path:  # fmt: skip
    """The stage-2 mix; images under ``folder/images/instruct``. At most one lettered question per conversation,
    first (``letter_question_first``), as MMBench asks it and as the demo LLM part learned its letters."""
    rng = _rng(seed, "instruct")
    records = []
    for index in range(count):
        sample_id = f"instruct-{index:06d}"
        if rng.random() < text_only_fraction:
            qa = text_only_qa(rng)
            records.append({"id": sample_id, "conversations": _turn(qa.question, qa.answer)})
            continue
        scene = scene_with_items(rng, TRAIN_SCENE)
        image = _save(scene, folder / "images" / "instruct", f"{index:06d}.png", image_size)
        records.append(
            {
                "id": sample_id,
                "image": f"instruct/{image}",
                "conversations": instruct_turns(scene, rng, one_lettered=True),
            }
        )
    path = folder / "instruct.json"
    path.write_text(json.dumps(records))
    return path


def warmup_turns(rng: random.Random, max_questions: int = 8, one_lettered: bool = False) -> list[dict]:
    """A text-only conversation for the LLM warm-up: reading questions answered from a "Reference OCR token" line
    (copy the word, or pick the one naming a colour or shape) and simple facts, short-answer and multiple-choice;
    ``one_lettered``: at most one multiple-choice question, first (``letter_question_first``)."""
    turns, lettered = [], []
    for _ in range(rng.randint(max_questions // 2, max_questions)):
        if rng.random() < 0.5:
            qa, tokens = reading_qa(rng)
            turns += _turn(textvqa_prompt(qa.question, tokens), qa.answer)
        elif rng.random() < 0.5:
            turns += _turn(*ask(text_only_qa(rng), rng, lettered=False))
        else:
            qa = text_only_qa(rng)
            while len(qa.choices) < 4:
                qa = text_only_qa(rng)
            turn = _turn(*ask(qa, rng, lettered=True))
            if not one_lettered:
                turns += turn
            elif not lettered:
                lettered = turn
    return lettered + turns


def write_warmup(folder: Path, count: int, seed: int = 0) -> Path:
    """``warmup.json``: text-only conversations (no images) for the LLM warm-up stage."""
    rng = _rng(seed, "warmup")
    records = [{"id": f"warmup-{index:06d}", "conversations": warmup_turns(rng)} for index in range(count)]
    path = folder / "warmup.json"
    path.write_text(json.dumps(records))
    return path


def _annotators(answer: str, rng: random.Random) -> list[str]:
    """Ten human answers: mostly the truth, sometimes one or two noisy ones (as in TextVQA)."""
    answers = [answer] * 10
    for slot in rng.sample(range(10), rng.choice([0, 0, 1, 2])):
        answers[slot] = rng.choice(["unanswerable", f"{answer} sign", answer.upper() + "!"])
    return answers


def write_textvqa(folder: Path, count: int, seed: int = 0, image_size: int = 128, small_text: bool = False) -> Path:
    """``llava_textvqa_val_v051_ocr.jsonl`` + ``TextVQA_0.5.1_val.json`` + ``train_images/``. The normal set has
    large and medium words and the OCR line; ``small_text`` has only small words and no OCR line (the model must
    read). One question per image: LLaVA's scorer joins on (image_id, question)."""
    rng = _rng(seed, "textvqa_small" if small_text else "textvqa")
    spec = SMALL_TEXT_SCENE if small_text else TEXTVQA_SCENE
    questions, data = [], []
    for index in range(count):
        scene = random_scene(rng, spec)
        qa = rng.choice([qa for qa in word_questions(scene, rng) if qa.category == "ocr"])
        image_id = f"{'small' if small_text else 'text'}{index:05d}"
        image = _save(scene, folder / "train_images", f"{image_id}.png", image_size)
        ocr_tokens = scene.ocr_tokens()
        text = textvqa_prompt(qa.question, None if small_text else ocr_tokens)
        questions.append({"question_id": image_id, "image": image, "text": text})
        data.append({"question_id": index, "image_id": image_id, "question": qa.question,
                     "answers": _annotators(qa.answer, rng), "ocr_tokens": ocr_tokens, "image_width": image_size,
                     "image_height": image_size, "set_name": "val"})  # fmt: skip
    (folder / "llava_textvqa_val_v051_ocr.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    annotations = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}
    (folder / "TextVQA_0.5.1_val.json").write_text(json.dumps(annotations))
    return folder


MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split"]  # fmt: skip
L2_CATEGORIES = {"color": "attribute_reasoning", "shape": "coarse_perception", "position": "fine-grained_perception",
                 "count": "fine-grained_perception", "ocr": "fine-grained_perception"}  # fmt: skip


def _png_base64(scene: Scene, image_size: int) -> str:
    buffer = io.BytesIO()
    render_scene(scene, image_size).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_mmbench(folder: Path, count: int, seed: int = 0, image_size: int = 128) -> Path:
    """``mmbench_dev_20230712.tsv``: ``count`` questions with 4 options each, followed by their 3 circular copies
    (options rotated by k, answer letter moved with them, index + k·1,000,000), as the official dev TSV ships."""
    rng = _rng(seed, "mmbench")
    main_rows, copies = [], []
    for index in range(count):
        scene = random_scene(rng, EVAL_SCENE)
        qa = pick_question(scene, rng)
        options, letter = multiple_choice(qa, rng)
        row = {"index": index, "question": qa.question, "hint": "", "category": qa.category,
               "image": _png_base64(scene, image_size), "source": "piip-llava-scenes",
               "l2-category": L2_CATEGORIES[qa.category], "comment": "", "split": "dev"}  # fmt: skip
        main_rows.append({**row, **dict(zip(LETTERS, options)), "answer": letter})
        for shift in range(1, len(options)):
            rotated = options[shift:] + options[:shift]
            copies.append({**row, **dict(zip(LETTERS, rotated)), "index": index + shift * CIRCULAR_STRIDE,
                           "answer": LETTERS[rotated.index(qa.answer)]})  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mmbench_dev_20230712.tsv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, MMBENCH_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(main_rows + copies)
    return path


POPE_CATEGORIES = ("random", "adversarial")


def write_pope(folder: Path, count: int, seed: int = 0, image_size: int = 128) -> Path:
    """``llava_pope_test.jsonl`` + ``coco/coco_pope_{random,adversarial}.json`` (JSONL with ``label``) +
    ``val2014/`` images; half yes, half no."""
    rng = _rng(seed, "pope")
    questions, labels = [], {category: [] for category in POPE_CATEGORIES}
    for index in range(count):
        category = POPE_CATEGORIES[index % len(POPE_CATEGORIES)]
        scene = random_scene(rng, EVAL_SCENE)
        qa = presence_question(scene, rng, adversarial=category == "adversarial")
        image = _save(scene, folder / "val2014", f"pope{index:05d}.png", image_size)
        text = f"{qa.question}\n{SHORT_ANSWER}"
        questions.append({"question_id": index, "image": image, "text": text, "category": category})
        labels[category].append({"question_id": index, "image": image, "text": qa.question,
                                 "label": qa.answer.lower()})  # fmt: skip
    (folder / "llava_pope_test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (folder / "coco").mkdir(exist_ok=True)
    for category, records in labels.items():
        (folder / "coco" / f"coco_pope_{category}.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def write_scene_sets(folder: str | Path, seed: int = 0, sizes: SceneSetSizes | None = None,
                     image_size: int = 128) -> dict[str, Path]:  # fmt: skip
    """Every set under ``folder``: ``pretrain.json``, ``instruct.json``, ``images/`` and ``eval/<benchmark>/``."""
    folder, sizes = Path(folder), sizes or SceneSetSizes()
    folder.mkdir(parents=True, exist_ok=True)
    evaluation = folder / "eval"
    return {
        "warmup": write_warmup(folder, sizes.warmup, seed),
        "pretrain": write_pretrain(folder, sizes.pretrain, seed, image_size),
        "instruct": write_instruct(folder, sizes.instruct, seed, image_size),
        "textvqa": write_textvqa(evaluation / "textvqa", sizes.textvqa, seed, image_size),
        "textvqa_small": write_textvqa(evaluation / "textvqa_small", sizes.textvqa_small, seed, image_size, True),
        "mmbench": write_mmbench(evaluation / "mmbench", sizes.mmbench, seed, image_size),
        "pope": write_pope(evaluation / "pope", sizes.pope, seed, image_size),
    }
