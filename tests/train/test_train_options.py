"""Single-process checks of train options: --pretrain_projector, gradient checkpointing, multi-image samples."""

import json

import torch

import piip_llava.model  # noqa: F401
from piip_llava.data import DataConfig, LlavaDataset
from piip_llava.model import PiipLlavaForConditionalGeneration
from piip_llava.model.tiny import save_tiny_model
from piip_llava.train.train import train
from tests.conftest import write_llava_data


def run(tmp_path, *extra):
    data = write_llava_data(tmp_path / "data")
    args = ["--data_path", str(data), "--image_folder", str(data.parent / "images"), "--max_steps", "2", "--use_cpu",
            "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no", *extra]  # fmt: skip
    assert train(args) == 0


def test_stage2_loads_the_stage1_projector(tmp_path):
    save_tiny_model(tmp_path / "base")
    run(tmp_path, "--model_name_or_path", str(tmp_path / "base"), "--tunable_parts", "projector",
        "--learning_rate", "1e-2", "--output_dir", str(tmp_path / "stage1"))  # fmt: skip
    save_tiny_model(tmp_path / "other", seed=5)  # another model: only its projector should be replaced
    run(tmp_path, "--model_name_or_path", str(tmp_path / "other"), "--pretrain_projector", str(tmp_path / "stage1"),
        "--tunable_parts", "llm", "--learning_rate", "1e-3", "--output_dir", str(tmp_path / "stage2"))  # fmt: skip
    stage1 = PiipLlavaForConditionalGeneration.from_pretrained(tmp_path / "stage1")
    stage2 = PiipLlavaForConditionalGeneration.from_pretrained(tmp_path / "stage2")
    for a, b in zip(stage1.multi_modal_projector.parameters(), stage2.multi_modal_projector.parameters()):
        assert torch.equal(a, b)  # loaded from stage 1, then frozen in this stage


def test_gradient_checkpointing_trains(tmp_path, monkeypatch):
    import piip_llava.train.train as entry

    seen = []

    class Probe(entry.JsonlLogCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append(
                (model.model.vision_tower.gradient_checkpointing, model.model.language_model.gradient_checkpointing)
            )

    monkeypatch.setattr(entry, "JsonlLogCallback", Probe)
    save_tiny_model(tmp_path / "base")
    run(tmp_path, "--model_name_or_path", str(tmp_path / "base"), "--gradient_checkpointing", "True",
        "--tunable_parts", "projector,vision_branches,interactions,llm", "--output_dir", str(tmp_path / "out"),
        "--logging_steps", "1")  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in records) == 2
    assert seen == [(True, True), (True, True)]  # the PIIP tower and the LLM both checkpoint


def test_multi_image_sample(tiny_llava, tmp_path):
    model, processor = tiny_llava
    data = write_llava_data(tmp_path / "data", count=2)
    records = json.loads(data.read_text())
    records.append({"id": "two", "image": ["0.png", "1.png"], "conversations": [
        {"from": "human", "value": "<image>\nand <image>\nsame color?"}, {"from": "gpt", "value": "no"}]})  # fmt: skip
    data.write_text(json.dumps(records))
    config = DataConfig("vicuna_v1", model.config.image_seq_length, 1024, str(data.parent / "images"))
    sample = LlavaDataset(data, processor.tokenizer, processor.image_processor, config)[3]
    assert sample["skipped"] == [] and sample["pixel_values"].shape[0] == 2
    assert int((sample["input_ids"] == model.config.image_token_id).sum()) == 2 * model.config.image_seq_length


def test_a_stage_records_its_template_and_image_mode_in_the_model(tmp_path):
    """config.json is the one source of truth: the next stage, `eval run` and the server read it."""
    from transformers import AutoProcessor

    from piip_llava.model.conversation import chat_template
    from piip_llava.model.loading import load_for_inference

    save_tiny_model(tmp_path / "base")
    run(tmp_path, "--model_name_or_path", str(tmp_path / "base"), "--template", "plain", "--image_aspect_ratio",
        "square", "--output_dir", str(tmp_path / "stage1"))  # fmt: skip
    config = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert (config["template"], config["image_aspect_ratio"]) == ("plain", "square")
    saved = AutoProcessor.from_pretrained(tmp_path / "stage1")
    assert saved.image_processor.aspect_ratio == "square"
    assert saved.chat_template == chat_template("plain") != chat_template("vicuna_v1")
    # No flags: the stage takes the model's own (here stage 1's) template and mode.
    run(tmp_path, "--model_name_or_path", str(tmp_path / "stage1"), "--output_dir", str(tmp_path / "again"))
    model, processor = load_for_inference(tmp_path / "again")
    assert (model.config.template, processor.image_processor.aspect_ratio) == ("plain", "square")
