"""piip_llava/model/vision/presets.py and configuration_piip.py"""

import pytest
import torch

from piip_llava.model.vision import PiipVisionConfig, PiipVisionModel, get_tower_config
from piip_llava.model.vision.configuration_piip import BranchConfig
from piip_llava.model.vision.presets import CONVNEXT_B, TINY_CLIP, TOWER_PRESETS

RELEASED = [name for name in TOWER_PRESETS if name.startswith("piip-llava")]


@pytest.mark.parametrize("name", list(TOWER_PRESETS))
def test_every_preset_builds_and_runs_on_meta(name):
    config = get_tower_config(name)
    with torch.device("meta"):
        tower = PiipVisionModel(config)
        outputs = tower(torch.empty(1, 3, config.image_size, config.image_size))
    assert [tuple(o.shape[1:]) for o in outputs] == [(d, g, g) for d, g in zip(config.output_dims, config.output_grids)]


def test_released_presets_cover_spec_table():
    assert len(RELEASED) == 9  # the 8 official configs, with the 512-448 config released for 7B and 13B
    visual_tokens = {name: get_tower_config(name).output_grids[-1] ** 2 for name in RELEASED}
    assert visual_tokens["piip-llava_convnext-b_clip-l_640-224_7B"] == 400
    assert all(count == 1024 for name, count in visual_tokens.items() if "640-224" not in name)


def test_convnext_block_list_geometry():
    branch = get_tower_config("piip-llava_convnext-b_clip-l_1024-336_7B").branches[1]
    assert branch.num_blocks == 39
    assert branch.block_strides == [4] * 3 + [8] * 4 + [16] * 28 + [32] * 4
    assert branch.interaction_strides() == [4, 8] + [16] * 9 + [32]
    assert branch.interaction_dims() == [128, 256] + [512] * 9 + [1024]
    tiny = BranchConfig("t", "convnext", 64, [[0, 20]], dict(CONVNEXT_B, depths=[3, 3, 9, 3]))
    assert tiny.num_blocks == 21


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="piip-llava_clip-bl_512-256_7B"):
        get_tower_config("clip-bl")


def test_config_round_trip(tmp_path):
    config = get_tower_config("tiny-convnext-clip")
    config.save_pretrained(tmp_path)
    loaded = PiipVisionConfig.from_pretrained(tmp_path)
    assert loaded.branches == config.branches and loaded.deform_num_heads == config.deform_num_heads
    tower = PiipVisionModel(config)
    rebuilt = PiipVisionModel(loaded)
    rebuilt.load_state_dict(tower.state_dict())  # same parameter names and shapes


@pytest.mark.parametrize(
    "branch_kwargs, match",
    [
        (dict(interaction_ranges=[[0, 1], [3, 3]]), "contiguous"),
        (dict(interaction_ranges=[[0, 1]]), "cover 2 blocks"),
        (dict(backbone_type="resnet"), "backbone_type"),
        (dict(image_size=36), "multiple of 8"),
        (dict(backbone_type="siglip"), "no CLS token"),
    ],
)
def test_bad_branch_config_names_the_field(branch_kwargs, match):
    kwargs = dict(
        name="b", backbone_type="clip", image_size=32, interaction_ranges=[[0, 1], [2, 3]], backbone=TINY_CLIP
    )
    kwargs.update(branch_kwargs)
    with pytest.raises(ValueError, match=match):
        BranchConfig(**kwargs)


def test_bad_tower_config_names_the_field():
    large = dict(name="a", backbone_type="clip", image_size=64, interaction_ranges=[[0, 3]], backbone=TINY_CLIP)
    small = dict(large, name="b", image_size=32, interaction_ranges=[[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="same number of interaction ranges"):
        PiipVisionConfig(branches=[large, small], deform_num_heads=4)
    with pytest.raises(ValueError, match="must not decrease"):
        PiipVisionConfig(branches=[large, dict(small, interaction_ranges=[[0, 3]])], deform_num_heads=4)
    with pytest.raises(ValueError, match="unique"):
        PiipVisionConfig(branches=[large, dict(large, image_size=64)], deform_num_heads=4)
    with pytest.raises(ValueError, match="at least one branch"):
        PiipVisionConfig(branches=[])
    assert PiipVisionConfig().branches == get_tower_config("piip-llava_clip-bl_512-256_7B").branches
    with pytest.raises(ValueError, match="single-branch ViT"):
        PiipVisionConfig(branches=[large, dict(large, name="c", image_size=64)], feature_layer=-2, deform_num_heads=4)
    convnext = dict(
        name="cn", backbone_type="convnext", image_size=64, interaction_ranges=[[0, 7]], backbone=CONVNEXT_B
    )
    with pytest.raises(ValueError, match="ConvNeXt"):
        PiipVisionConfig(branches=[dict(convnext, backbone=dict(CONVNEXT_B, depths=[1, 1, 2, 1]))], feature_layer=-2)
    assert PiipVisionConfig(branches=[large], feature_layer=-2).feature_layer == -2
