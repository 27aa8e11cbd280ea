"""LLaVA-1.5 benchmarks from local files: questions, prompts and scorers (spec ``llava-ecosystem.md`` §2).

Each benchmark reads the official LLaVA eval files, builds the LLaVA-1.5 prompt (with its suffix), and scores an
answers JSONL (``{"question_id", "prompt", "text", ...}`` per line) against the official annotations.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .mmbench import CIRCULAR_STRIDE, circular_eval, mmbench_prompt, mmbench_rounds
from .normalize import vqa_accuracy

SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."
csv.field_size_limit(2**31 - 1)  # MMBench TSV cells hold base64 images


@dataclass
class Question:
    """One generation request: ``text`` is the user turn without the ``<image>`` marker."""

    question_id: str
    text: str
    image: Callable[[], Image.Image] | None
    metadata: dict = field(default_factory=dict)


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def image_loader(folder: str | Path | None, name: str) -> Callable[[], Image.Image]:
    path = Path(folder or ".") / name
    return lambda: Image.open(path).convert("RGB")


def llava_question_file(path, image_folder) -> list[Question]:
    """LLaVA's ``model_vqa_loader`` format: JSONL of ``{question_id, image, text, ...}``; text is used as is."""
    questions = []
    for record in read_jsonl(path):
        extra = {k: v for k, v in record.items() if k not in ("question_id", "image", "text")}
        questions.append(
            Question(str(record["question_id"]), record["text"], image_loader(image_folder, record["image"]), extra)
        )
    return questions


def answers_by_id(predictions: str | Path) -> dict[str, dict]:
    return {str(r["question_id"]): r for r in read_jsonl(predictions)}


def _percent(hits: float, total: int) -> float:
    return 100.0 * hits / max(total, 1)


# --- TextVQA -----------------------------------------------------------------------------------------------------


def textvqa_question(prompt: str) -> str:
    """The question inside a LLaVA TextVQA prompt (``eval_textvqa.prompt_processor``), lower-cased."""
    if prompt.startswith("OCR tokens: "):
        match = re.match(r"OCR tokens: (.*?) Question: (.*) Short answer:", prompt, re.S)
        question = match.group(2)
    elif "Reference OCR token: " in prompt and len(prompt.split("\n")) == 3:
        question = prompt.split("\n")[0]
    elif len(prompt.split("\n")) == 2:
        question = prompt.split("\n")[0]
    else:
        raise ValueError(f"unrecognised TextVQA prompt: {prompt[:80]!r}")
    return question.lower()


def score_textvqa(predictions, annotations) -> dict:
    """Join by (image_id, question) as LLaVA's ``eval_textvqa``; the answers' question_id is TextVQA's image_id."""
    data = json.loads(Path(annotations).read_text())["data"]
    truth = {(a["image_id"], a["question"].lower()): a["answers"] for a in data}
    scores = []
    for record in answers_by_id(predictions).values():
        key = (str(record["question_id"]), textvqa_question(record["prompt"]))
        scores.append(vqa_accuracy(record["text"], truth[key]))
    return {"accuracy": _percent(sum(scores), len(scores)), "samples": len(scores)}


# --- GQA, POPE, MME (yes/no and short answers) ---------------------------------------------------------------------


def score_gqa(predictions, annotations) -> dict:
    """Exact match of ``text.rstrip('.').lower()`` (``convert_gqa_for_eval``) against ``answer``."""
    truth = json.loads(Path(annotations).read_text())
    hits = [
        r["text"].rstrip(".").lower() == truth[qid]["answer"].lower() for qid, r in answers_by_id(predictions).items()
    ]
    return {"accuracy": _percent(sum(hits), len(hits)), "samples": len(hits)}


def pope_yes(text: str) -> bool:
    """LLaVA's ``eval_pope``: the text before the first period, commas dropped; "no" if it says No/not/no."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return not any(word in ("No", "not", "no") for word in words)


def score_pope(predictions, annotations) -> dict:
    """Per category (annotation files ``coco_pope_{category}.json``, JSONL with ``label``) and averaged."""
    answers = answers_by_id(predictions)
    results = {}
    for path in sorted(Path(annotations).glob("coco_pope_*.json")):
        category = path.stem.replace("coco_pope_", "")
        labels = [r for r in read_jsonl(path) if str(r["question_id"]) in answers]
        if not labels:
            continue
        tp = fp = tn = fn = 0
        for label in labels:
            predicted, actual = pope_yes(answers[str(label["question_id"])]["text"]), label["label"] == "yes"
            tp, fp = tp + (predicted and actual), fp + (predicted and not actual)
            tn, fn = tn + (not predicted and not actual), fn + (not predicted and actual)
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        results[category] = {
            "accuracy": _percent(tp + tn, len(labels)),
            "precision": 100 * precision,
            "recall": 100 * recall,
            "f1": 100 * (2 * precision * recall / max(precision + recall, 1e-12)),
            "yes_ratio": _percent(tp + fp, len(labels)),
            "samples": len(labels),
        }
    f1 = [r["f1"] for r in results.values()]
    return {"accuracy": sum(r["accuracy"] for r in results.values()) / max(len(results), 1),
            "f1": sum(f1) / max(len(f1), 1), "categories": results}  # fmt: skip


MME_PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR"]  # fmt: skip
MME_COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]


def mme_answer(text: str) -> str:
    text = text.strip().lower()
    return "yes" if text.startswith("yes") else "no" if text.startswith("no") else "other"


def score_mme(predictions, annotations) -> dict:
    """MME's calculation: per category accuracy + accuracy+ (both questions of an image right), ×100, summed into
    perception (10 categories) and cognition (4). Annotations: JSONL of ``{question_id, category, image, answer}``."""
    answers = answers_by_id(predictions)
    per_image = defaultdict(list)
    for record in read_jsonl(annotations):
        if str(record["question_id"]) in answers:
            right = mme_answer(answers[str(record["question_id"])]["text"]) == record["answer"].lower()
            per_image[(record["category"], record["image"])].append(right)
    categories = defaultdict(lambda: [0, 0, 0, 0])  # right, questions, images all right, images
    for (category, _), rights in per_image.items():
        counts = categories[category]
        counts[0] += sum(rights)
        counts[1] += len(rights)
        counts[2] += all(rights)
        counts[3] += 1
    scores = {c: 100 * (r / q + a / i) for c, (r, q, a, i) in categories.items()}
    return {"perception": sum(scores.get(c, 0.0) for c in MME_PERCEPTION),
            "cognition": sum(scores.get(c, 0.0) for c in MME_COGNITION), "categories": scores}  # fmt: skip


# --- Multiple choice: ScienceQA, SEED, MMBench ------------------------------------------------------------------


def option_letter(text: str, letters: str = "ABCDE") -> str | None:
    """A letter answer: the bare letter, "B.", "(B)", "B: …", or "The answer is B"."""
    text = text.strip()
    match = re.match(rf"^\(?([{letters}])(?:[.):]|\s|$)", text)
    if match:
        return match.group(1)
    match = re.search(rf"[Tt]he answer is \(?([{letters}])\)?", text)
    return match.group(1) if match else None


def scienceqa_questions(path, image_folder) -> list[Question]:
    """``llava_test_CQM-A.json`` (LLaVA conversation records); ``--single-pred-prompt`` suffix added."""
    questions = []
    for record in json.loads(Path(path).read_text()):
        text = record["conversations"][0]["value"].replace("<image>", "").strip()
        image = image_loader(image_folder, record["image"]) if record.get("image") else None
        questions.append(Question(str(record["id"]), f"{text}\n{LETTER_ANSWER}", image))
    return questions


def score_scienceqa(predictions, annotations) -> dict:
    """Annotations: ScienceQA ``problems.json`` (``answer`` is the index of the right choice)."""
    problems = json.loads(Path(annotations).read_text())
    hits = []
    for qid, record in answers_by_id(predictions).items():
        letter = option_letter(record["text"], "ABCDEFG")
        hits.append(letter is not None and "ABCDEFG".index(letter) == problems[qid]["answer"])
    return {"accuracy": _percent(sum(hits), len(hits)), "samples": len(hits)}


def score_seed(predictions, annotations) -> dict:
    """Annotations: ``SEED-Bench.json`` (``questions`` with ``question_id``, ``answer`` letter, type)."""
    truth = {str(q["question_id"]): q for q in json.loads(Path(annotations).read_text())["questions"]}
    per_type = defaultdict(list)
    for qid, record in answers_by_id(predictions).items():
        question = truth[qid]
        per_type[question.get("question_type_id", "all")].append(option_letter(record["text"]) == question["answer"])
    hits = [h for values in per_type.values() for h in values]
    return {"accuracy": _percent(sum(hits), len(hits)), "samples": len(hits),
            "types": {str(t): _percent(sum(v), len(v)) for t, v in per_type.items()}}  # fmt: skip


def mmbench_questions(path, image_folder=None, all_rounds: bool = True) -> list[Question]:
    """``mmbench_dev_20230712.tsv`` (base64 images). With ``all_rounds`` each question runs once per option with
    the option texts rotated (LLaVA's ``--all-rounds``), for CircularEval. A TSV that ships the circular copies
    itself (rows with index ≥ 1,000,000) runs every row once: the copies are the rounds."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    ships_copies = any(int(row["index"]) >= CIRCULAR_STRIDE for row in rows)
    questions = []
    for row in rows:
        image_bytes = base64.b64decode(row["image"])
        image = lambda data=image_bytes: Image.open(io.BytesIO(data)).convert("RGB")  # noqa: E731
        for round_id, (text, options) in enumerate(mmbench_rounds(row, all_rounds and not ships_copies)):
            meta = {"index": row["index"], "round_id": round_id, "options": options,
                    "answer": row.get("answer"), "category": row.get("category"),
                    "l2_category": row.get("l2-category")}  # fmt: skip
            questions.append(Question(f"{row['index']}-{round_id}", mmbench_prompt(text), image, meta))
    return questions


def score_mmbench(predictions, annotations=None) -> dict:
    return circular_eval(list(answers_by_id(predictions).values()))


@dataclass(frozen=True)
class Benchmark:
    load: Callable[..., list[Question]]
    score: Callable[..., dict]
    max_new_tokens: int = 128


BENCHMARKS: dict[str, Benchmark] = {
    "textvqa": Benchmark(llava_question_file, score_textvqa),
    "gqa": Benchmark(llava_question_file, score_gqa),
    "pope": Benchmark(llava_question_file, score_pope),
    "mme": Benchmark(llava_question_file, score_mme),
    "seed": Benchmark(llava_question_file, score_seed),
    "scienceqa": Benchmark(scienceqa_questions, score_scienceqa),
    "mmbench": Benchmark(mmbench_questions, score_mmbench, max_new_tokens=1024),
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
