"""Batched, resumable benchmark generation (LLaVA's ``model_vqa_loader`` protocol, batched).

Answers are appended to a JSONL one batch at a time and flushed, so a killed run restarts where it stopped: the
questions already answered (by identity, :func:`~piip_llava.eval.records.identity`, counted as a multiset) are
skipped, and a line cut by the kill is dropped. A finished file is rewritten in question order, as LLaVA's files are
(its POPE and MME scorers pair answers by position). ``num_chunks``/``chunk_idx`` split the questions like LLaVA's
scripts (ceil split); :func:`merge_answers` joins the chunk files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from piip_llava.model.generation import chat_prompt, generate_answers

from .questions import Question
from .records import Answer, identity, match_answers, numbered_jsonl, read_answers

logger = logging.getLogger(__name__)


def chunk(questions: list[Question], num_chunks: int, chunk_idx: int) -> list[Question]:
    if not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"chunk_idx {chunk_idx} is not in [0, {num_chunks})")
    size = math.ceil(len(questions) / num_chunks)
    return questions[chunk_idx * size : (chunk_idx + 1) * size]


def completed_answers(answers_file: Path) -> list[Answer]:
    """The answers already written; a partial last line (the run was killed while writing) is cut off the file."""
    if not answers_file.exists():
        return []
    keep = 0
    with open(answers_file, "rb") as handle:
        for line in handle:
            try:
                json.loads(line)
            except json.JSONDecodeError:
                break
            keep += len(line)
    if keep != answers_file.stat().st_size:
        logger.warning("dropping a partial last line of %s", answers_file)
        with open(answers_file, "r+b") as handle:
            handle.truncate(keep)
    return read_answers(answers_file)


def remaining(questions: list[Question], answers_file: Path) -> list[Question]:
    """The questions not yet in ``answers_file``; an answer to none of ``questions`` raises (a different question
    file or chunking wrote it)."""
    expected = Counter(identity(q.record()) for q in questions)
    _, coverage = match_answers(completed_answers(answers_file), identity, expected)
    if coverage.unknown or coverage.conflicting or coverage.duplicates:
        raise ValueError(f"{answers_file} holds answers that are not this run's questions ({coverage.problems()}, "
                         f"{coverage.duplicates} duplicates): another --question-file or --num-chunks/--chunk-idx "
                         "wrote it; use a new --answers-file")  # fmt: skip
    done = expected - Counter(coverage.missing)
    todo = []
    for question in questions:
        key = identity(question.record())
        if done[key]:
            done[key] -= 1
        else:
            todo.append(question)
    return todo


def answer_batch(model, processor, questions: list[Question], template: str, max_new_tokens: int,
                 temperature: float = 0.0) -> list[str]:  # fmt: skip
    prompts = [chat_prompt(q.text, template, image_count=int(q.image is not None)) for q in questions]
    images = [q.image() for q in questions if q.image is not None]
    return generate_answers(model, processor, prompts, images, max_new_tokens, temperature)


def run_questions(
    model,
    processor,
    questions: list[Question],
    answers_file: str | Path,
    template: str = "vicuna_v1",
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    model_id: str = "piip-llava",
) -> Path:
    answers_file = Path(answers_file)
    answers_file.parent.mkdir(parents=True, exist_ok=True)
    todo = remaining(questions, answers_file)
    if len(todo) < len(questions):
        logger.info("resuming: %d of %d questions already answered", len(questions) - len(todo), len(questions))
    # Similar prompt lengths in a batch waste less padding.
    todo.sort(key=lambda q: len(q.text))
    with open(answers_file, "a") as handle, tqdm(total=len(questions), initial=len(questions) - len(todo)) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            texts = answer_batch(model, processor, batch, template, max_new_tokens, temperature)
            for question, text in zip(batch, texts):
                record = {**question.record(), "text": text, "model_id": model_id, "metadata": question.metadata}
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
    write_in_order(answers_file, questions)
    return answers_file


def write_in_order(answers_file: Path, questions: list[Question]) -> None:
    """Rewrite a finished answers file in question order (atomically: a kill leaves the old file)."""
    lines = {}
    for number, record in numbered_jsonl(answers_file):
        lines.setdefault(identity(record, f"{answers_file}:{number}"), []).append(json.dumps(record))
    ordered = [lines[identity(q.record())].pop(0) for q in questions]
    temporary = answers_file.with_suffix(answers_file.suffix + ".tmp")
    temporary.write_text("".join(line + "\n" for line in ordered))
    os.replace(temporary, answers_file)


def merge_answers(chunk_files: list[str | Path], output: str | Path) -> Path:
    """Concatenate chunk answer files in the order given (chunks are consecutive slices of the question file).

    A question (identity) answered in two files is kept once when both answers agree (a chunk passed twice); when
    they differ it raises, naming both lines. Repeats within one file are kept: they are repeated questions.
    """
    first_file, lines = {}, []
    for position, path in enumerate(chunk_files):
        for answer in read_answers(path):
            key = identity(answer.record, answer.where)
            earlier = first_file.setdefault(key, (position, answer))
            if earlier[0] != position:
                if earlier[1].text != answer.text:
                    raise ValueError(f"question {key[:2]} answered differently at {earlier[1].where} and "
                                     f"{answer.where}; which run is right?")  # fmt: skip
                continue
            lines.append(json.dumps(answer.record))
    Path(output).write_text("".join(line + "\n" for line in lines))
    logger.info("merged %d answers from %d files", len(lines), len(chunk_files))
    return Path(output)
