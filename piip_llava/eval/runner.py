"""Batched, resumable benchmark generation (LLaVA's ``model_vqa_loader`` protocol, batched).

Answers are appended to a JSONL one batch at a time and flushed, so a killed run restarts where it stopped: ids
already in the file are skipped, and a line cut by the kill is dropped. ``num_chunks``/``chunk_idx`` split the
questions like LLaVA's scripts (ceil split); :func:`merge_answers` joins the chunk files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from tqdm import tqdm

from piip_llava.model.generation import chat_prompt, generate_answers

from .benchmarks import Question

logger = logging.getLogger(__name__)


def chunk(questions: list[Question], num_chunks: int, chunk_idx: int) -> list[Question]:
    if not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"chunk_idx {chunk_idx} is not in [0, {num_chunks})")
    size = math.ceil(len(questions) / num_chunks)
    return questions[chunk_idx * size : (chunk_idx + 1) * size]


def completed_ids(answers_file: Path) -> set[str]:
    """Ids already answered; a partial last line (the run was killed while writing) is cut off the file."""
    if not answers_file.exists():
        return set()
    done, keep = set(), 0
    with open(answers_file, "rb") as handle:
        for line in handle:
            try:
                done.add(str(json.loads(line)["question_id"]))
            except (json.JSONDecodeError, KeyError):
                break
            keep += len(line)
    if keep != answers_file.stat().st_size:
        logger.warning("dropping a partial last line of %s", answers_file)
        with open(answers_file, "r+b") as handle:
            handle.truncate(keep)
    return done


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
    done = completed_ids(answers_file)
    todo = [q for q in questions if q.question_id not in done]
    if done:
        logger.info("resuming: %d of %d questions already answered", len(questions) - len(todo), len(questions))
    # Similar prompt lengths in a batch waste less padding.
    todo.sort(key=lambda q: len(q.text))
    with open(answers_file, "a") as handle, tqdm(total=len(questions), initial=len(questions) - len(todo)) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            texts = answer_batch(model, processor, batch, template, max_new_tokens, temperature)
            for question, text in zip(batch, texts):
                record = {"question_id": question.question_id, "prompt": question.text, "text": text,
                          "model_id": model_id, "metadata": question.metadata}  # fmt: skip
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
    return answers_file


def merge_answers(chunk_files: list[str | Path], output: str | Path) -> Path:
    """Concatenate chunk answer files, keeping the first answer per question id."""
    seen, lines = set(), []
    for path in chunk_files:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                question_id = str(json.loads(line)["question_id"])
                if question_id not in seen:
                    seen.add(question_id)
                    lines.append(line)
    Path(output).write_text("\n".join(lines) + "\n")
    return Path(output)
