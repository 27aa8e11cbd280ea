"""piip_llava/model/vision/interaction.py"""

import math

import torch

from piip_llava.model.vision.interaction import BidirectionalInteraction, reset_interaction_parameters

KWARGS = dict(num_heads=4, num_points=4, value_ratio=0.5, ffn_ratio=0.25, drop_path_rate=0.4, eps=1e-6)


def make_unit(large_dim=48, small_dim=32):
    unit = BidirectionalInteraction(large_dim, small_dim, **KWARGS)
    reset_interaction_parameters(unit)
    return unit.eval()


def inputs():
    return torch.randn(2, 12, 48), (3, 4), torch.randn(2, 30, 32), (5, 6)


def test_zero_gates_leave_both_branches_unchanged_bitwise():
    unit = make_unit()
    large, large_grid, small, small_grid = inputs()
    new_large, new_small = unit(large, large_grid, small, small_grid)
    assert torch.equal(new_large, large) and torch.equal(new_small, small)


def test_nonzero_gates_change_both_branches_and_reach_every_parameter():
    unit = make_unit()
    with torch.no_grad():
        for name, parameter in unit.named_parameters():
            if name.endswith("_gate"):
                parameter.fill_(0.5)
            # At init the query steers nothing (zero offset/attention weights, so LN_q gets no gradient at
            # step 0); after the first steps these weights are non-zero, which is the state tested here.
            elif "sampling_offsets.weight" in name or "attention_weights.weight" in name:
                parameter.normal_(0, 0.02)
    large, large_grid, small, small_grid = inputs()
    new_large, new_small = unit(large, large_grid, small, small_grid)
    assert not torch.allclose(new_large, large) and not torch.allclose(new_small, small)
    (new_large.square().sum() + new_small.square().sum()).backward()
    for name, parameter in unit.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_both_directions_read_pre_update_features():
    unit = make_unit()
    with torch.no_grad():
        for name, parameter in unit.named_parameters():
            if name.endswith("_gate"):
                parameter.fill_(1.0)
    large, large_grid, small, small_grid = inputs()
    new_large, new_small = unit(large, large_grid, small, small_grid)
    # The small branch's update, computed by hand from the *old* large tokens, must match.
    expected_small = unit.update_small(small, small_grid, unit.large_to_small(large), large_grid)
    expected_large = unit.update_large(large, large_grid, unit.small_to_large(small), small_grid)
    assert torch.equal(new_small, expected_small) and torch.equal(new_large, expected_large)


def test_drop_path_only_on_ffn_path():
    unit = make_unit()
    update = unit.update_small
    assert update.drop_path.rate == 0.4
    # DropPath sits between the FFN and its gate, not on the attention path.
    names = [name for name, _ in update.named_children()]
    assert names.index("drop_path") > names.index("ffn") > names.index("attention")


def test_generic_init():
    unit = make_unit(large_dim=256, small_dim=128)
    projection = unit.small_to_large
    assert abs(projection.weight.std().item() - 0.02) < 0.002  # timm-style trunc_normal_: cut at ±2 (absolute)
    assert torch.count_nonzero(projection.bias) == 0
    update = unit.update_large
    assert torch.equal(update.query_norm.weight, torch.ones(256)) and torch.count_nonzero(update.query_norm.bias) == 0
    conv = update.ffn.dwconv
    assert conv.groups == conv.in_channels == 64 and conv.kernel_size == (3, 3)
    assert abs(conv.weight.std().item() - math.sqrt(2 / 9)) < 0.06
    assert torch.count_nonzero(update.attention_gate) == 0 and torch.count_nonzero(update.ffn_gate) == 0
    assert update.ffn.fc1.out_features == 64  # cffn_ratio 0.25
