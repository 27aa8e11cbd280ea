"""piip_llava/data/dataset.py"""

import torch

from piip_llava.data import DataConfig, LlavaCollator, LlavaDataset
from tests.conftest import write_llava_data


def make_dataset(tiny_llava, path, template="vicuna_v1"):
    model, processor = tiny_llava
    config = DataConfig(template=template, image_seq_length=model.config.image_seq_length, max_length=512,
                        image_folder=str(path.parent / "images"))  # fmt: skip
    return LlavaDataset(path, processor.tokenizer, processor.image_processor, config)


def test_bad_samples_are_replaced_and_reported(tiny_llava, tmp_path):
    dataset = make_dataset(tiny_llava, write_llava_data(tmp_path, bad=True))
    samples = [dataset[i] for i in range(len(dataset))]
    assert len(samples) == len(dataset)  # every index yields a usable sample
    skipped = {entry["id"]: entry["reason"] for s in samples for entry in s["skipped"]}
    assert set(skipped) == {"corrupt", "missing", "malformed"}
    assert "corrupt image" in skipped["corrupt"] and "missing image" in skipped["missing"]
    assert "conversations" in skipped["malformed"]


def test_jsonl_with_a_broken_line(tiny_llava, tmp_path):
    dataset = make_dataset(tiny_llava, write_llava_data(tmp_path, suffix=".jsonl"))
    reasons = [e["reason"] for i in range(len(dataset)) for e in dataset[i]["skipped"]]
    assert len(dataset) == 14 and len(reasons) == 1 and reasons[0].startswith("line 14")


def test_collator_pads_right_and_keeps_images_in_order(tiny_llava, tmp_path):
    model, processor = tiny_llava
    dataset = make_dataset(tiny_llava, write_llava_data(tmp_path))
    samples = [dataset[0], dataset[12], dataset[1]]  # image, text-only, image
    batch = LlavaCollator(processor.tokenizer.pad_token_id)(samples)
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert torch.equal(batch["pixel_values"][1], samples[2]["pixel_values"][0])
    lengths = [len(s["input_ids"]) for s in samples]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][1, lengths[1] :] == -100).all()
    with torch.no_grad():
        loss = model(**{k: v for k, v in batch.items() if k != "skipped"}).loss
    assert torch.isfinite(loss)


def test_modality_lengths_mark_text_only_negative(tiny_llava, tmp_path):
    dataset = make_dataset(tiny_llava, write_llava_data(tmp_path))
    lengths = dataset.modality_lengths()
    assert lengths[-1] < 0 and all(length > 64 for length in lengths[:-1])
