"""--dry_run: full-size model on meta, whole data file validated, parameters per part, nothing trained."""

import json

from transformers import LlamaConfig

from piip_llava.model import PiipLlavaConfig
from piip_llava.model.tiny import save_tiny_model
from piip_llava.model.vision import get_tower_config
from piip_llava.train.train import train
from tests.conftest import write_llava_data


def test_dry_run_reports_data_and_parameters_of_a_full_size_model(tmp_path, capsys):
    # A 7B-shaped config with the tiny tokenizer/processor: only config.json is read for the model.
    save_tiny_model(tmp_path / "model")
    vicuna = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         vocab_size=32064)  # fmt: skip
    config = PiipLlavaConfig.from_pretrained(tmp_path / "model")
    full = PiipLlavaConfig(vision_config=get_tower_config("piip-llava_clip-bl_512-256_7B"), text_config=vicuna,
                           image_token_id=config.image_token_id)  # fmt: skip
    full.save_pretrained(tmp_path / "model")
    data = write_llava_data(tmp_path / "data", bad=True)
    code = train(["--model_name_or_path", str(tmp_path / "model"), "--data_path", str(data), "--image_folder",
                  str(data.parent / "images"), "--tunable_parts", "projector", "--dry_run", "--output_dir",
                  str(tmp_path / "out"), "--model_max_length", "4096", "--use_cpu", "--report_to", "none"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{\n") :])  # after anything imports printed (DeepSpeed's accelerator banner)
    assert report["samples"] == 16 and report["usable"] == 13 and report["text_only"] == 1 and report["images"] == 12
    assert {p["reason"].split(" ")[0] for p in report["problems"]} == {"corrupt", "missing", "record"}
    assert report["longest_tokens"] > 1024  # 1024 visual tokens of the full-size tower
    parameters = report["parameters"]
    assert parameters["projector"]["trainable"] == parameters["projector"]["total"] == 40_927_232
    assert parameters["llm"]["trainable"] == 0 and parameters["llm"]["total"] > 6_500_000_000
    assert not (tmp_path / "out").exists()
