"""piip_llava/model/vision/weights.py"""

import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, ConvNextModel, ViTModel

from piip_llava.model.vision.weights import (
    convert_timm_convnext,
    load_branch_weights,
    load_tower_weights,
    parse_branch_weights,
)
from tests.conftest import build_tiny_tower


def to_timm_names(hf_state):
    """The test's own inverse map: ConvNextModel names → timm ConvNeXt names (+ a timm head)."""
    timm = {}
    block = {"dwconv": "conv_dw", "layernorm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
    for key, value in hf_state.items():
        if key.startswith("layernorm."):
            timm[key.replace("layernorm.", "head.norm.")] = value
            continue
        key = key.replace("embeddings.patch_embeddings.", "stem.0.").replace("embeddings.layernorm.", "stem.1.")
        key = re.sub(r"encoder\.stages\.(\d+)\.downsampling_layer\.", r"stages.\1.downsample.", key)
        match = re.match(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(\w+)(.*)", key)
        if match:
            stage, index, name, rest = match.groups()
            name = "gamma" if name == "layer_scale_parameter" else block[name]
            key = f"stages.{stage}.blocks.{index}.{name}{rest}"
        timm[key] = value
    timm["head.fc.weight"] = torch.zeros(10, hf_state["layernorm.weight"].shape[0])
    return timm


def test_timm_convnext_state_dict_loads_into_branch(tmp_path):
    tower = build_tiny_tower("tiny-convnext-clip")
    branch_config = tower.config.branches[1]
    reference = ConvNextModel(branch_config.hf_config()).eval()
    timm_state = to_timm_names(reference.state_dict())
    assert "stages.0.blocks.0.conv_dw.weight" in timm_state and "stem.0.weight" in timm_state
    save_file({k: v.contiguous() for k, v in timm_state.items()}, tmp_path / "model.safetensors")
    load_branch_weights(tower.branches[1], branch_config, tmp_path)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        state = tower.branches[1].run_blocks(tower.branches[1].embed(pixel_values), 0, branch_config.num_blocks - 1)
        assert torch.equal(state.hidden, reference(pixel_values).last_hidden_state)


def test_convert_timm_convnext_names():
    converted = convert_timm_convnext(
        {"stem.0.weight": 1, "stages.2.downsample.1.bias": 2, "stages.1.blocks.2.gamma": 3, "head.fc.weight": 4}
    )
    assert converted == {
        "embeddings.patch_embeddings.weight": 1,
        "encoder.stages.2.downsampling_layer.1.bias": 2,
        "encoder.stages.1.layers.2.layer_scale_parameter": 3,
    }


def test_full_clip_model_directory_and_tower_loader(tmp_path):
    tower = build_tiny_tower("tiny-clip-2branch")
    large, small = tower.config.branches
    clip = CLIPModel(
        CLIPConfig(
            vision_config=large.hf_config().to_dict(),
            text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    load_tower_weights(tower, parse_branch_weights([f"clip-large={tmp_path / 'clip'}"]))
    torch.testing.assert_close(
        tower.branches[0].layers[0].mlp.fc1.weight, clip.vision_model.encoder.layers[0].mlp.fc1.weight
    )


def test_vit_directory_loads(tmp_path):
    tower = build_tiny_tower("tiny-vit-3branch")
    config = tower.config.branches[0]
    reference = ViTModel(config.hf_config(), add_pooling_layer=False).eval()
    reference.save_pretrained(tmp_path)
    load_branch_weights(tower.branches[0], config, tmp_path)
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        state = tower.branches[0].run_blocks(tower.branches[0].embed(pixel_values), 0, config.num_blocks - 1)
        expected = reference(pixel_values).last_hidden_state
    # ViTModel applies a final LayerNorm that PIIP does not use: apply it to the branch output to compare.
    torch.testing.assert_close(reference.layernorm(state.hidden), expected, rtol=1e-5, atol=1e-5)


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    tower = build_tiny_tower("tiny-clip-2branch")
    other = tower.config.branches[1].hf_config()
    other.hidden_size, other.intermediate_size = 48, 96
    from transformers import CLIPVisionModel

    CLIPVisionModel(other).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="other shapes"):
        load_branch_weights(tower.branches[1], tower.config.branches[1], tmp_path)
    with pytest.raises(ValueError, match="unknown branch names"):
        load_tower_weights(tower, {"clip-xl": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_branch_weights(tower.branches[1], tower.config.branches[1], tmp_path / "missing")
    with pytest.raises(ValueError, match="NAME=DIR"):
        parse_branch_weights(["clip-large"])
