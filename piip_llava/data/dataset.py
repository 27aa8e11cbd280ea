"""LLaVA-format supervised data: JSON array or JSONL of ``{id, image?, conversations: [{from, value}]}``.

Images are paths relative to ``image_folder`` (``image`` may be a string or a list) and load lazily. A sample that
cannot be used (malformed record, missing or corrupt image, too long) is replaced by the next good one, so a
batch keeps its size, and the failure travels with the batch (``skipped``) to the trainer, which counts it and
reports every path and reason at the end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .preprocess import IGNORE_INDEX, SampleError, tokenize_conversation

logger = logging.getLogger(__name__)
# How many following records a bad one may be replaced by before giving up (then the data is mostly broken).
MAX_REPLACEMENTS = 64


def read_records(path: str | Path) -> list:
    """All records of a ``.json`` array or a ``.jsonl`` file (a bad JSONL line becomes a malformed record)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} not found")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    records.append({"_malformed": f"line {number}: {error}"})
        return records
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON array of samples")
    return records


@dataclass
class DataConfig:
    """What the dataset needs from the model and the run."""

    template: str
    image_seq_length: int
    max_length: int
    image_folder: str | None = None


class LlavaDataset(Dataset):
    def __init__(self, data_path: str | Path, tokenizer, image_processor, config: DataConfig) -> None:
        self.records = read_records(data_path)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config
        self.image_folder = Path(config.image_folder) if config.image_folder else Path(data_path).parent

    def __len__(self) -> int:
        return len(self.records)

    def image_paths(self, record: dict) -> list[Path]:
        images = record.get("image")
        if images is None:
            return []
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise SampleError("'image' must be a path or a list of paths")
        return [self.image_folder / image for image in images]

    def modality_lengths(self) -> list[int]:
        """Approximate length per sample, negative for text-only ones (LLaVA's grouping convention)."""
        lengths = []
        for record in self.records:
            try:
                words = sum(len(turn["value"].split()) for turn in record["conversations"])
                images = len(self.image_paths(record))
            except (KeyError, TypeError, AttributeError, SampleError):
                lengths.append(1)  # malformed: will be skipped when read
                continue
            lengths.append(words + images * self.config.image_seq_length if images else -words)
        return lengths

    def load_sample(self, index: int) -> dict:
        record = self.records[index]
        if not isinstance(record, dict) or "_malformed" in record or "conversations" not in record:
            reason = record.get("_malformed") if isinstance(record, dict) else None
            raise SampleError(reason or "record has no 'conversations'")
        paths = self.image_paths(record)
        images = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except FileNotFoundError:
                raise SampleError(f"missing image {path}") from None
            except (UnidentifiedImageError, OSError) as error:
                raise SampleError(f"corrupt image {path}: {error}") from None
        tokenized = tokenize_conversation(
            record["conversations"],
            self.tokenizer,
            self.config.template,
            self.config.image_seq_length,
            len(images),
            self.config.max_length,
        )
        sample = {"input_ids": tokenized.input_ids, "labels": tokenized.labels}
        if images:
            sample["pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
        return sample

    def __getitem__(self, index: int) -> dict:
        skipped = []
        for attempt in range(MAX_REPLACEMENTS):
            current = (index + attempt) % len(self.records)
            try:
                sample = self.load_sample(current)
            except SampleError as error:
                record = self.records[current]
                sample_id = record.get("id", current) if isinstance(record, dict) else current
                skipped.append({"index": current, "id": sample_id, "reason": str(error)})
                continue
            sample["skipped"] = skipped
            return sample
        raise RuntimeError(f"{MAX_REPLACEMENTS} consecutive bad samples from index {index}: {skipped[-3:]}")


@dataclass
class LlavaCollator:
    """Right-pads a batch (training); concatenates the images of all samples in order."""

    pad_token_id: int

    def __call__(self, samples: list[dict]) -> dict:
        length = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            size = len(sample["input_ids"])
            input_ids[row, :size] = sample["input_ids"]
            labels[row, :size] = sample["labels"]
            attention_mask[row, :size] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [s["pixel_values"] for s in samples if "pixel_values" in s]
        if images:
            batch["pixel_values"] = torch.cat(images)
        batch["skipped"] = [entry for s in samples for entry in s.get("skipped", [])]
        return batch
