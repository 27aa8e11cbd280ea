"""``PiipVisionModel`` as a ``transformers`` model: init that survives every way of building it, save / load / shard
through ``AutoModel`` (piip_llava/model/vision/modeling_piip.py)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel

import piip_llava  # noqa: F401  (registers the Auto classes)
from piip_llava.model.vision import PiipVisionModel, get_tower_config
from piip_llava.model.vision.deformable_attention import DeformableCrossAttention
from tests.conftest import randomize_gates, tower_input


def assert_interaction_init(tower) -> None:
    """PIIP's interaction init: zero gates, unit LayerNorms, and each deformable attention exactly as a standalone
    ``DeformableCrossAttention`` initialises itself (zero offset weights + radial bias, uniform attention)."""
    config = tower.config
    attentions = [m for m in tower.interactions.modules() if isinstance(m, DeformableCrossAttention)]
    assert len(attentions) == 2 * config.num_interactions * (len(config.branches) - 1)
    for name, parameter in tower.interactions.named_parameters():
        if name.endswith("_gate"):
            assert torch.count_nonzero(parameter) == 0, name
        elif "norm" in name:
            expected = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(parameter == expected), name
    for attention in attentions:
        reference = DeformableCrossAttention(
            attention.value_proj.in_features, config.deform_num_heads, config.deform_num_points, config.deform_ratio
        )
        for part in ("sampling_offsets", "attention_weights"):
            for kind in ("weight", "bias"):
                actual, expected = getattr(getattr(attention, part), kind), getattr(getattr(reference, part), kind)
                torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=f"{part}.{kind}")
        assert torch.count_nonzero(attention.sampling_offsets.bias) > 0


def test_interaction_init_survives_init_and_from_config():
    config = get_tower_config("tiny-vit-3branch")
    assert_interaction_init(PiipVisionModel(config))
    assert_interaction_init(AutoModel.from_config(config))


def test_interaction_init_survives_the_whole_model_from_config(tiny_llava):
    from piip_llava.model import PiipLlavaForConditionalGeneration

    model, _ = tiny_llava
    assert_interaction_init(PiipLlavaForConditionalGeneration(model.config).vision_tower)
    assert_interaction_init(PiipLlavaForConditionalGeneration._from_config(model.config).vision_tower)


def test_from_pretrained_keeps_trained_interactions_and_shards(tmp_path):
    tower = PiipVisionModel(get_tower_config("tiny-clip-2branch")).eval()
    randomize_gates(tower)
    with torch.no_grad():
        for attention in (m for m in tower.modules() if isinstance(m, DeformableCrossAttention)):
            attention.sampling_offsets.weight.normal_()
    tower.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert set(index["weight_map"]) == set(tower.state_dict())  # the key names of `piip-llava build --tower`
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is PiipVisionModel
    for (name, expected), actual in zip(tower.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(actual, expected), name
    pixel_values = tower_input(tower)
    with torch.no_grad():
        for expected, actual in zip(tower(pixel_values), loaded(pixel_values)):
            assert torch.equal(actual, expected)


def test_whole_model_from_pretrained_keeps_trained_interactions(tiny_llava, tmp_path):
    from piip_llava.model import PiipLlavaForConditionalGeneration

    model, _ = tiny_llava
    trained = PiipLlavaForConditionalGeneration(model.config)
    randomize_gates(trained.vision_tower)
    trained.save_pretrained(tmp_path)
    loaded = PiipLlavaForConditionalGeneration.from_pretrained(tmp_path)
    for name, expected in trained.vision_tower.interactions.state_dict().items():
        assert torch.equal(loaded.vision_tower.interactions.state_dict()[name], expected), name


def test_missing_weights_are_a_clear_error(tmp_path):
    get_tower_config("tiny-clip-2branch").save_pretrained(tmp_path)
    with pytest.raises(OSError, match="model.safetensors|pytorch_model.bin"):
        PiipVisionModel.from_pretrained(tmp_path)
