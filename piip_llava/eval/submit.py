"""Submission files for evaluation servers, as LLaVA's ``scripts/convert_*_for_submission.py`` write them
(``docs/evaluation.md``). MME's file for its own ``calculation.py`` is :func:`piip_llava.eval.mme.write_mme_results`."""

from __future__ import annotations

import json
from pathlib import Path

from .mmbench import read_tsv
from .normalize import normalize_answer
from .records import read_answers, read_jsonl

MMBENCH_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")


def mmbench_xlsx(predictions, questions_tsv, output) -> Path:
    """OpenCompass upload: the TSV without hint/category/source/image/comment/l2-category, plus ``prediction``
    (the raw answer of round 0 per ``index``; LLaVA's answer format: ``question_id`` is the index)."""
    from openpyxl import Workbook

    answers = {str(a.record["question_id"]): a.text for a in read_answers(predictions) if a.record["round_id"] == 0}
    workbook = Workbook()
    sheet = workbook.active
    rows = read_tsv(questions_tsv)
    columns = [c for c in rows[0] if c not in MMBENCH_DROPPED]
    sheet.append([*columns, "prediction"])
    for row in rows:
        sheet.append([row[c] for c in columns] + [answers.get(row["index"], "")])
    workbook.save(output)
    return Path(output)


def vqav2_json(predictions, questions_file, output) -> Path:
    """EvalAI VQAv2: ``[{question_id, answer}]`` for every test question, answers normalised, "" when missing."""
    answers = {str(answer.record["question_id"]): answer.record for answer in read_answers(predictions)}
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
    rows = [{"questionId": str(a.record["question_id"]), "prediction": a.text.rstrip(".").lower()}
            for a in read_answers(predictions)]  # fmt: skip
    Path(output).write_text(json.dumps(rows))
    return Path(output)
