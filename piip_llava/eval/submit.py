"""Submission files for evaluation servers (spec ``llava-ecosystem.md`` §2.3–2.4)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .benchmarks import answers_by_id, read_jsonl
from .normalize import normalize_answer

MMBENCH_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")


def mmbench_xlsx(predictions, questions_tsv, output) -> Path:
    """OpenCompass upload: the TSV without hint/category/source/image/comment/l2-category, plus ``prediction``
    (the raw answer of round 0 per ``index``)."""
    from openpyxl import Workbook

    answers = {r["metadata"]["index"]: r["text"] for r in read_jsonl(predictions) if r["metadata"]["round_id"] == 0}
    workbook = Workbook()
    sheet = workbook.active
    with open(questions_tsv, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = [c for c in reader.fieldnames if c not in MMBENCH_DROPPED]
        sheet.append([*columns, "prediction"])
        for row in reader:
            sheet.append([row[c] for c in columns] + [answers.get(row["index"], "")])
    workbook.save(output)
    return Path(output)


def vqav2_json(predictions, questions_file, output) -> Path:
    """EvalAI VQAv2: ``[{question_id, answer}]`` for every test question, answers normalised, "" when missing."""
    answers = answers_by_id(predictions)
    rows = []
    for record in read_jsonl(questions_file):
        answer = answers.get(str(record["question_id"]))
        rows.append(
            {"question_id": record["question_id"], "answer": normalize_answer(answer["text"]) if answer else ""}
        )
    Path(output).write_text(json.dumps(rows))
    return Path(output)


def gqa_json(predictions, output) -> Path:
    """GQA's official ``eval.py`` input: ``[{questionId, prediction}]`` with ``text.rstrip('.').lower()``."""
    rows = [
        {"questionId": qid, "prediction": r["text"].rstrip(".").lower()}
        for qid, r in answers_by_id(predictions).items()
    ]
    Path(output).write_text(json.dumps(rows))
    return Path(output)


WRITERS = {"mmbench": "xlsx for the OpenCompass server", "vqav2": "EvalAI JSON", "gqa": "official eval.py JSON"}
