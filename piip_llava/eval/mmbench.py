"""MMBench: LLaVA's prompt and answer format, circular rounds, offline answer extraction and CircularEval
(``docs/evaluation.md``; LLaVA's ``model_vqa_mmbench.py``, MMBench's evaluator as lmms-eval ports it).

A question may run once per option with the option *texts* rotated by one each round while the letters stay
A, B, C… (LLaVA's ``--all-rounds``); a TSV that ships the circular copies itself (index + k·1,000,000) runs each row
once, the copies being the rounds. A question counts as correct only if every round is answered correctly. Answers are
matched to options offline (``can_infer_option`` then ``can_infer_text``, as MMBench's evaluator before its GPT
fallback); an answer that matches nothing is wrong. Answers in LLaVA's format (``question_id`` = the TSV ``index``,
``round_id``) are scored against the TSV given as annotations.
"""

from __future__ import annotations

import base64
import csv
import io
from collections import Counter, defaultdict

from PIL import Image

from .questions import LETTER_ANSWER, Question
from .records import Answer, finish, match_answers

LETTERS = "ABCDE"
CIRCULAR_STRIDE = 1_000_000  # a shipped circular copy k of question i has index i + k·1,000,000 (MMBench's TSVs)
csv.field_size_limit(2**31 - 1)  # MMBench TSV cells hold base64 images


def _present(value) -> bool:
    return value is not None and str(value).strip().lower() not in ("", "nan", "none")


def row_options(row: dict) -> list[str]:
    """Consecutive non-empty option columns from A (``model_vqa_mmbench.get_options``)."""
    options = []
    for letter in LETTERS:
        if not _present(row.get(letter)):
            break
        options.append(str(row[letter]))
    return options


def mmbench_rounds(row: dict, all_rounds: bool) -> list[tuple[str, list[str]]]:
    """``(question text with options, option texts)`` per round."""
    options = row_options(row)
    question = row["question"]
    if _present(row.get("hint")):
        question = f"{row['hint']}\n{question}"
    rounds = []
    for shift in range(len(options) if all_rounds else 1):
        rotated = options[shift:] + options[:shift]
        text = question + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, rotated))
        rounds.append((text, rotated))
    return rounds


def mmbench_prompt(text: str) -> str:
    return f"{text}\n{LETTER_ANSWER}"


def read_tsv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for number, row in enumerate(rows, 2):
        if not str(row.get("index", "")).strip().isdigit():
            raise ValueError(f"{path}:{number}: MMBench rows need an integer 'index', got {row.get('index')!r}")
    return rows


def ships_copies(rows: list[dict]) -> bool:
    return any(int(row["index"]) >= CIRCULAR_STRIDE for row in rows)


def mmbench_questions(path, image_folder=None, all_rounds: bool = True) -> list[Question]:
    """``mmbench_dev_20230712.tsv`` (base64 images). With ``all_rounds`` each question runs once per option."""
    rows = read_tsv(path)
    rotate = all_rounds and not ships_copies(rows)
    questions = []
    for row in rows:
        image_bytes = base64.b64decode(row["image"])
        image = lambda data=image_bytes: Image.open(io.BytesIO(data)).convert("RGB")  # noqa: E731
        letters = LETTERS[: len(row_options(row))]
        for round_id, (text, options) in enumerate(mmbench_rounds(row, rotate)):
            fields = {"round_id": round_id, "options": options,
                      "option_char": list(letters[round_id:] + letters[:round_id])}  # fmt: skip
            meta = {"index": row["index"], "answer": row.get("answer"), "category": row.get("category"),
                    "l2_category": row.get("l2-category")}  # fmt: skip
            questions.append(Question(int(row["index"]), mmbench_prompt(text), image, meta, text, fields))
    return questions


def can_infer_option(answer: str, letters: str) -> str | None:
    """A single option letter standing alone in the answer (punctuation around it ignored)."""
    cleaned = answer
    for char in ".()[],:;!*#{}":
        cleaned = cleaned.replace(char, " ")
    tokens = cleaned.split()
    found = [letter for letter in letters if letter in tokens]
    if len(found) != 1:
        return None
    if found[0] == "A" and len(tokens) > 3:  # "A" in a sentence is the article, not an option
        return None
    return found[0]


def can_infer_text(answer: str, options: list[str], letters: str) -> str | None:
    """The letter of the only option whose text appears in the answer (case-insensitive)."""
    hits = [letter for letter, option in zip(letters, options) if option.lower() in answer.lower()]
    return hits[0] if len(hits) == 1 else None


def extract_choice(answer: str, options: list[str]) -> str | None:
    letters = LETTERS[: len(options)]
    return can_infer_option(answer, letters) or can_infer_text(answer, options, letters)


def round_correct(row: dict, round_id: int, text: str, where: str) -> bool:
    """Whether ``text`` picks the TSV answer in round ``round_id`` (option texts rotated by ``round_id``)."""
    options = row_options(row)
    if not 0 <= round_id < len(options):
        raise ValueError(f"{where}: round_id {round_id} but index {row['index']} has {len(options)} options")
    if row.get("answer") not in LETTERS[: len(options)]:
        raise ValueError(f"index {row['index']}: answer {row.get('answer')!r} is not one of its option letters")
    rotated = options[round_id:] + options[:round_id]
    expected = LETTERS[(LETTERS.index(row["answer"]) - round_id) % len(options)]
    return extract_choice(text, rotated) == expected


def score_mmbench(answers: list[Answer], annotations, questions=None, allow_partial: bool = False) -> dict:
    """Annotations: the TSV the questions came from. Expected: every row once, or every circular round of every
    row when the answers hold rounds beyond 0 (``--all-rounds``). Accuracy is CircularEval over questions
    (a row and its shipped copies, or its rounds), per ``category`` and ``l2-category`` of the question's row."""
    if annotations is None:
        raise ValueError("MMBench needs --annotations: the TSV the questions came from (mmbench_dev_20230712.tsv)")
    rows = {int(row["index"]): row for row in read_tsv(annotations)}
    rotate = not ships_copies(list(rows.values())) and any(a.record.get("round_id", 0) for a in answers)
    expected = Counter({(index, r): 1 for index, row in rows.items()
                        for r in range(len(row_options(row)) if rotate else 1)})  # fmt: skip
    kept, coverage = match_answers(answers, lambda rec: (int(rec["question_id"]), int(rec["round_id"])), expected)
    correct = defaultdict(lambda: True)
    for (index, round_id), group in kept.items():
        correct[index % CIRCULAR_STRIDE] &= round_correct(rows[index], round_id, group[0].text, group[0].where)
    per_category, per_l2 = defaultdict(list), defaultdict(list)
    for question, right in correct.items():
        row = rows.get(question) or next(r for i, r in rows.items() if i % CIRCULAR_STRIDE == question)
        per_category[str(row.get("category"))].append(right)
        per_l2[str(row.get("l2-category"))].append(right)

    def percent(values):
        return 100.0 * sum(values) / max(len(values), 1)

    result = {"accuracy": percent(list(correct.values())), "questions": len(correct),
              "categories": {k: percent(v) for k, v in per_category.items()},
              "l2_categories": {k: percent(v) for k, v in per_l2.items()}}  # fmt: skip
    return finish(result, coverage, allow_partial)
