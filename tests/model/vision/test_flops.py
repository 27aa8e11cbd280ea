"""piip_llava/model/vision/flops.py"""

import pytest
import torch
from torch import nn

from piip_llava.model.vision import get_tower_config
from piip_llava.model.vision.flops import count_module_macs, count_tower_flops

# README vision FLOPs and the spec's analytic interaction parameters (7B presets).
TARGETS = {
    "piip-llava_clip-bl_512-256_7B": (193, 8.8),
    "piip-llava_clip-bl_512-448_7B": (422, 52.8),
    "piip-llava_convnext-b_clip-l_640-224_7B": (191, 9.0),
    "piip-llava_convnext-b_clip-l_1024-336_7B": (598, 40.2),
    "piip-llava_convnext-l_clip-l_1024-336_7B": (1037, 53.5),
    "llava-1.5_clip-l_336": (191, 0.0),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_released_presets_match_paper_flops_and_interaction_params(name):
    gflops, interaction_params = TARGETS[name]
    report = count_tower_flops(get_tower_config(name), name)
    assert abs(report.vision_gflops - gflops) / gflops < 0.01
    assert abs(report.interaction_params_m - interaction_params) <= 0.02 * max(interaction_params, 1e-9)


def test_exact_grid_differs_only_for_convnext():
    vit = count_tower_flops(get_tower_config("piip-llava_clip-bl_512-448_7B"))
    assert vit.vision_gflops == vit.vision_gflops_exact
    mix = count_tower_flops(get_tower_config("piip-llava_convnext-b_clip-l_1024-336_7B"))
    assert mix.vision_gflops_exact < mix.vision_gflops
    assert abs(mix.vision_gflops_exact - 591) / 591 < 0.01  # an independent analytic derivation


def test_module_counter_counts_like_mmcv():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(2), nn.LayerNorm(16), nn.Linear(16, 5))
    macs = count_module_macs(model, torch.empty(2, 3, 4, 4))
    conv = 2 * 16 * (9 * 3 * 8) + 2 * 16 * 8  # kernel MACs + bias
    norm = 2 * (2 * 8 * 16)
    linear = (2 * 8 * 16) * 5
    assert macs == conv + norm + linear


def test_parameter_counts_add_up():
    report = count_tower_flops(get_tower_config("piip-llava_clip-bl_512-256_7B"))
    assert report.vision_params_m == pytest.approx(sum(report.branch_params_m.values()) + report.interaction_params_m)
    assert report.branch_params_m["clip-b"] == pytest.approx(85.8, abs=0.2)  # CLIP-B/16 without post-LN/projection
