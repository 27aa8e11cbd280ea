"""Question files in LLaVA's formats (``docs/evaluation.md``; LLaVA's ``model_vqa_loader.py``,
``model_vqa_science.py``): each question keeps the fields LLaVA's answer files record, so our answer files and LLaVA's
are read by the same scorers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .records import field_of, load_json, numbered_jsonl

SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."


@dataclass
class Question:
    """One generation request.

    ``text`` is the user turn without the ``<image>`` marker; ``prompt`` is what the answer file records as
    ``prompt`` (LLaVA's ``cur_prompt``: the question file's text; ScienceQA adds ``<image>\\n``, MMBench leaves out
    the suffix); ``fields`` are further answer-file fields (MMBench's round). ``question_id`` keeps the file's type
    (POPE and MMBench use ints), as LLaVA's answer files do.
    """

    question_id: str | int
    text: str
    image: Callable[[], Image.Image] | None
    metadata: dict = field(default_factory=dict)
    prompt: str | None = None
    fields: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The answer record without the answer: ``{"question_id", "prompt", **fields}``."""
        return {"question_id": self.question_id, "prompt": self.text if self.prompt is None else self.prompt,
                **self.fields}  # fmt: skip


def image_loader(folder: str | Path | None, name: str) -> Callable[[], Image.Image]:
    path = Path(folder or ".") / name
    return lambda: Image.open(path).convert("RGB")


def llava_question_file(path, image_folder) -> list[Question]:
    """LLaVA's ``model_vqa_loader`` format: JSONL of ``{question_id, image, text, ...}``; text is used as is."""
    questions = []
    for number, record in numbered_jsonl(path):
        where = f"{path}:{number}"
        question_id, image, text = (field_of(record, name, where) for name in ("question_id", "image", "text"))
        extra = {k: v for k, v in record.items() if k not in ("question_id", "image", "text")}
        questions.append(Question(question_id, text, image_loader(image_folder, image), extra))
    return questions


def scienceqa_questions(path, image_folder) -> list[Question]:
    """``llava_test_CQM-A.json`` (LLaVA conversation records), as ``model_vqa_science --single-pred-prompt``."""
    questions = []
    for number, record in enumerate(load_json(path)):
        where = f"{path}: record {number}"
        turn = field_of(record, "conversations", where)[0]["value"].replace("<image>", "").strip()
        text = f"{turn}\n{LETTER_ANSWER}"
        image = image_loader(image_folder, record["image"]) if "image" in record else None
        prompt = f"<image>\n{text}" if image else text
        questions.append(Question(field_of(record, "id", where), text, image, prompt=prompt))
    return questions
