"""Scorers for TextVQA, GQA, POPE, ScienceQA and SEED-Bench, each joining answers to the official annotations the
way LLaVA's own scorer does (``docs/evaluation.md``) and counting answered / expected.

Each takes :class:`~piip_llava.eval.records.Answer` lines (ours or LLaVA's answer files), the official annotation
file or folder, the question file where LLaVA's scorer needs it (POPE), and ``allow_partial``. A complete answer set
scores exactly as LLaVA's script; otherwise :class:`~piip_llava.eval.records.IncompleteAnswers` is raised, or with
``allow_partial`` the score is over the answered questions only.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from .normalize import vqa_accuracy
from .records import Answer, field_of, finish, load_json, match_answers, numbered_jsonl

SCIENCEQA_OPTIONS = ("A", "B", "C", "D", "E")


def _percent(hits: float, total: int) -> float:
    return 100.0 * hits / max(total, 1)


# --- TextVQA -----------------------------------------------------------------------------------------------------


def textvqa_question(prompt: str) -> str:
    """The question inside a LLaVA TextVQA prompt, lower-cased (``eval_textvqa.prompt_processor``)."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if match is None:
            raise ValueError(f"unrecognised TextVQA prompt: {prompt[:80]!r}")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"unrecognised TextVQA prompt: {prompt[:80]!r}")
    return question.lower()


def score_textvqa(answers: list[Answer], annotations, questions=None, allow_partial: bool = False) -> dict:
    """Join on (image id, question) as ``eval_textvqa``: the answer's ``question_id`` is TextVQA's ``image_id``."""
    truth, expected = {}, Counter()
    for entry in load_json(annotations)["data"]:
        key = (str(entry["image_id"]), entry["question"].lower())
        truth[key] = entry["answers"]  # a repeated (image, question) keeps the last entry, as eval_textvqa's dict
        expected[key] += 1
    kept, coverage = match_answers(
        answers, lambda record: (str(record["question_id"]), textvqa_question(record["prompt"])), expected
    )
    scores = [vqa_accuracy(answer.text, truth[key]) for key, group in kept.items() for answer in group]
    return finish({"accuracy": _percent(sum(scores), len(scores)), "samples": len(scores)}, coverage, allow_partial)


# --- GQA, POPE -----------------------------------------------------------------------------------------------------


def score_gqa(answers: list[Answer], annotations, questions=None, allow_partial: bool = False) -> dict:
    """``testdev_balanced_questions.json``: ``text.rstrip('.').lower()`` (``convert_gqa_for_eval``) equal to
    ``answer`` (GQA's ``eval.py``), over every question of the file."""
    truth = load_json(annotations)
    kept, coverage = match_answers(answers, lambda record: str(record["question_id"]), Counter(map(str, truth)))
    hits = [answer.text.rstrip(".").lower() == truth[key]["answer"] for key, group in kept.items() for answer in group]
    return finish({"accuracy": _percent(sum(hits), len(hits)), "samples": len(hits)}, coverage, allow_partial)


def pope_yes(text: str) -> bool:
    """``eval_pope``: the text before the first period, commas dropped; "no" if a word is No, not or no."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return not any(word in ("No", "not", "no") for word in words)


def pope_positions(question_file) -> tuple[dict[str, tuple[str, int]], dict[tuple[str, int], str]]:
    """``question_id -> (category, k)``: the k-th question of its category in ``llava_pope_test.jsonl`` is line k
    of ``coco_pope_<category>.json`` (each label file numbers its questions from 1; ``eval_pope`` pairs by order).
    Also ``(category, k) -> image``, to check the pairing."""
    positions, images, counts = {}, {}, Counter()
    for number, record in numbered_jsonl(question_file):
        where = f"{question_file}:{number}"
        question_id, category = str(field_of(record, "question_id", where)), field_of(record, "category", where)
        if question_id in positions:
            raise ValueError(f"{where}: question_id {question_id} repeats an earlier line")
        positions[question_id] = (category, counts[category])
        images[positions[question_id]] = record.get("image")
        counts[category] += 1
    return positions, images


def pope_labels(folder, images: dict[tuple[str, int], str]) -> dict[tuple[str, int], bool]:
    """``(category, k) -> label is yes`` from ``coco_pope_<category>.json``; a line whose image differs from the
    question it pairs with raises (label files from another POPE version)."""
    labels = {}
    for path in sorted(Path(folder).glob("coco_pope_*.json")):
        category = path.stem.removeprefix("coco_pope_")
        for k, (number, record) in enumerate(numbered_jsonl(path)):
            where = f"{path}:{number}"
            if (category, k) in images and record.get("image") != images[(category, k)]:
                raise ValueError(f"{where}: image {record.get('image')} but question {k + 1} of category "
                                 f"{category!r} in the question file shows {images[(category, k)]}")  # fmt: skip
            labels[(category, k)] = field_of(record, "label", where) == "yes"
    if not labels:
        raise ValueError(f"{folder}: no coco_pope_*.json label files")
    return labels


def score_pope(answers: list[Answer], annotations, questions=None, allow_partial: bool = False) -> dict:
    """Annotations: the folder of ``coco_pope_{adversarial,popular,random}.json`` (JSONL with ``label``); questions:
    ``llava_pope_test.jsonl``, which gives each answer its category, as ``eval_pope --question-file``."""
    if questions is None:
        raise ValueError("POPE needs the question file (llava_pope_test.jsonl) to give each answer its category")
    positions, images = pope_positions(questions)
    labels = pope_labels(annotations, images)
    unplaced = ("unknown", None)
    kept, coverage = match_answers(
        answers, lambda record: positions.get(str(record["question_id"]), unplaced), Counter(labels.keys())
    )
    counts = defaultdict(Counter)
    for key, group in kept.items():
        for answer in group:
            predicted, actual = pope_yes(answer.text), labels[key]
            counts[key[0]][("t" if predicted == actual else "f") + ("p" if predicted else "n")] += 1
    results = {}
    for category, c in sorted(counts.items()):
        total = sum(c.values())
        precision, recall = c["tp"] / max(c["tp"] + c["fp"], 1), c["tp"] / max(c["tp"] + c["fn"], 1)
        results[category] = {"accuracy": _percent(c["tp"] + c["tn"], total), "precision": 100 * precision,
                             "recall": 100 * recall, "yes_ratio": _percent(c["tp"] + c["fp"], total),
                             "f1": 100 * (2 * precision * recall / max(precision + recall, 1e-12)),
                             "samples": total}  # fmt: skip
    mean = {name: sum(r[name] for r in results.values()) / max(len(results), 1) for name in ("accuracy", "f1")}
    return finish({**mean, "categories": results}, coverage, allow_partial)


# --- Multiple choice: ScienceQA, SEED ----------------------------------------------------------------------------


def scienceqa_choice(text: str, choice_count: int) -> int:
    """The chosen index as ``eval_science_qa``: the bare letter, "B. …", or one "The answer is B." match; -1 if
    none or out of range."""
    if text in SCIENCEQA_OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = re.findall(r"The answer is ([A-Z]).", text)
        letter = found[0] if len(found) == 1 else "FAILED"
    return SCIENCEQA_OPTIONS.index(letter) if letter in SCIENCEQA_OPTIONS[:choice_count] else -1


def score_scienceqa(answers: list[Answer], annotations, questions=None, allow_partial: bool = False) -> dict:
    """Annotations: ScienceQA's ``problems.json`` (or its folder) with ``pid_splits.json`` next to it. Expected:
    every test problem, or only those with an image when no text-only problem was answered (an IMG-only run).
    ``img_accuracy`` is ScienceQA-IMG, the number LLaVA-1.5 reports."""
    path = Path(annotations)
    path = path / "problems.json" if path.is_dir() else path
    problems, test = load_json(path), load_json(path.parent / "pid_splits.json")["test"]
    answered_ids = {str(answer.record.get("question_id")) for answer in answers}
    text_only = any(not problems[pid].get("image") for pid in test if pid in answered_ids)
    expected = Counter(pid for pid in test if text_only or problems[pid].get("image"))
    kept, coverage = match_answers(answers, lambda record: str(record["question_id"]), expected)
    hits = {key: scienceqa_choice(group[0].text, len(problems[key]["choices"])) == problems[key]["answer"]
            for key, group in kept.items()}  # fmt: skip
    image_hits = [hit for key, hit in hits.items() if problems[key].get("image")]
    result = {"accuracy": _percent(sum(hits.values()), len(hits)), "samples": len(hits),
              "img_accuracy": _percent(sum(image_hits), len(image_hits)), "img_samples": len(image_hits),
              "split": "all" if text_only else "img"}  # fmt: skip
    return finish(result, coverage, allow_partial)


def score_seed(answers: list[Answer], annotations, questions=None, allow_partial: bool = False) -> dict:
    """Annotations: ``SEED-Bench.json``. An answer is right when its text equals the answer letter
    (``convert_seed_for_submission``). Expected: every image question, and every video question once any is
    answered. ``accuracy`` is the image split (SEED-IMG, as the PIIP paper reports); ``all`` adds video."""
    data = load_json(annotations)
    truth = {str(q["question_id"]): q for q in data["questions"]}
    answered_ids = {str(answer.record.get("question_id")) for answer in answers}
    video = any(truth[qid]["data_type"] == "video" for qid in answered_ids if qid in truth)
    expected = Counter(qid for qid, q in truth.items() if video or q["data_type"] == "image")
    kept, coverage = match_answers(answers, lambda record: str(record["question_id"]), expected)
    type_names = {type_id: name for name, type_id in data.get("question_type", {}).items()}
    by_split, by_type = defaultdict(list), defaultdict(list)
    for key, group in kept.items():
        question = truth[key]
        hit = group[0].text == question["answer"]
        by_split[question["data_type"]].append(hit)
        by_type[type_names.get(question["question_type_id"], str(question["question_type_id"]))].append(hit)
    every = [hit for hits in by_split.values() for hit in hits]
    result = {"accuracy": _percent(sum(by_split["image"]), len(by_split["image"])), "samples": len(by_split["image"]),
              "all": _percent(sum(every), len(every)), "video": _percent(sum(by_split["video"]), len(by_split["video"]))
              if video else None, "types": {name: _percent(sum(v), len(v)) for name, v in by_type.items()}}  # fmt: skip
    return finish(result, coverage, allow_partial)
