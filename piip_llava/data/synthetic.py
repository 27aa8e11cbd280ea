"""A tiny synthetic LLaVA-format dataset (solid-colour images, questions about their colour), for tests,
benchmarks and trying the training commands without downloads."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def write_color_dataset(folder: str | Path, count: int = 12, bad: bool = False, suffix: str = ".json") -> Path:
    """``count`` image samples plus one text-only sample; ``bad`` adds a corrupt image, a missing image and a
    malformed record (and a ``.jsonl`` file gets a broken last line). Returns the data file's path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    question = [{"from": "human", "value": "<image>\nWhat color is the image?"}]
    records = []
    for i in range(count):
        name = list(COLORS)[i % 3]
        Image.new("RGB", (48 + 8 * (i % 4), 40), COLORS[name]).save(folder / "images" / f"{i}.png")
        answer = [{"from": "gpt", "value": f"The image is {name}."}]
        records.append({"id": f"s{i}", "image": f"{i}.png", "conversations": question + answer})
    text_only = [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]
    records.append({"id": "text", "conversations": text_only})
    if bad:
        (folder / "images" / "corrupt.png").write_bytes(b"not a png at all")
        records.insert(2, {"id": "corrupt", "image": "corrupt.png", "conversations": records[0]["conversations"]})
        records.insert(5, {"id": "missing", "image": "nowhere.png", "conversations": records[0]["conversations"]})
        records.insert(7, {"id": "malformed", "conversation": "oops"})
    path = folder / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    else:
        path.write_text(json.dumps(records))
    return path


def write_textvqa_set(folder: str | Path, count: int = 8) -> tuple[Path, Path, Path]:
    """A TextVQA-format set: LLaVA's question JSONL (with the "Reference OCR token" line), the official annotation
    JSON (10 answers each) and the images. Returns ``(questions, annotations, image_folder)``."""
    folder = Path(folder)
    images = folder / "train_images"
    images.mkdir(parents=True, exist_ok=True)
    questions, data = [], []
    for i in range(count):
        name = list(COLORS)[i % 3]
        image_id = f"img{i:04d}"
        Image.new("RGB", (40 + 4 * i, 32), COLORS[name]).save(images / f"{image_id}.jpg")
        question = "What color is the image?" if i % 2 == 0 else "What is the main color here?"
        text = f"{question}\nReference OCR token: {name}\nAnswer the question using a single word or phrase."
        questions.append({"question_id": image_id, "image": f"{image_id}.jpg", "text": text})
        data.append({"image_id": image_id, "question": question, "answers": [name] * 7 + ["colour"] * 3})
    question_file = folder / "llava_textvqa_val_v051_ocr.jsonl"
    question_file.write_text("\n".join(json.dumps(q) for q in questions) + "\n")
    annotations = folder / "TextVQA_0.5.1_val.json"
    annotations.write_text(json.dumps({"data": data}))
    return question_file, annotations, images
