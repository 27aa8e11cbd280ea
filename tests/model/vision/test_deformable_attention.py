"""piip_llava/model/vision/deformable_attention.py"""

import math

import pytest
import torch

from piip_llava.model.vision import deformable_attention
from piip_llava.model.vision.deformable_attention import (
    DeformableCrossAttention,
    deformable_sample,
    deformable_sample_grid,
    reference_points,
)

SHAPES = [(2, 4, 5, 7, 4, 3, 4), (1, 16, 16, 50, 16, 24, 4), (2, 3, 8, 33, 2, 5, 2)]


def random_inputs(batch, height, width, queries, heads, head_dim, points, spread=1.6):
    value = torch.randn(batch, height * width, heads, head_dim, dtype=torch.float64)
    # Locations spill outside [0, 1] to exercise the zero padding.
    locations = torch.rand(batch, queries, heads, points, 2, dtype=torch.float64) * spread - (spread - 1) / 2
    weights = torch.rand(batch, queries, heads, points, dtype=torch.float64).softmax(-1)
    return value, locations, weights


@pytest.mark.parametrize("shape", SHAPES)
def test_gather_path_matches_grid_sample_formulation(shape):
    batch, height, width, queries, heads, head_dim, points = shape
    value, locations, weights = random_inputs(*shape)
    with torch.no_grad():  # forward-only calls take the gather path
        ours = deformable_sample(value.float(), (height, width), locations.float(), weights.float())
    reference = deformable_sample_grid(value, (height, width), locations, weights)
    assert ours.shape == (batch, queries, heads * head_dim)
    torch.testing.assert_close(ours.double(), reference, atol=2e-5, rtol=1e-5)


def test_gather_path_handles_many_query_chunks(monkeypatch):
    monkeypatch.setattr(deformable_attention, "POINTS_PER_CHUNK", 64)  # 2 queries per chunk here
    value, locations, weights = random_inputs(2, 4, 5, 9, 4, 3, 4)
    with torch.no_grad():
        ours = deformable_sample(value.float(), (4, 5), locations.float(), weights.float())
    torch.testing.assert_close(
        ours.double(), deformable_sample_grid(value, (4, 5), locations, weights), atol=2e-5, rtol=0
    )


def test_training_path_has_exact_gradients():
    value, locations, weights = (t.requires_grad_() for t in random_inputs(1, 3, 4, 5, 2, 3, 2, spread=1.0))
    assert torch.autograd.gradcheck(lambda v, loc, w: deformable_sample(v, (3, 4), loc, w), (value, locations, weights))
    # ... and it computes the same values as the forward-only path.
    with torch.no_grad():
        forward_only = deformable_sample(value.float(), (3, 4), locations.float(), weights.float())
    torch.testing.assert_close(
        deformable_sample(value, (3, 4), locations, weights).float(), forward_only, atol=1e-5, rtol=0
    )


def test_sampling_at_cell_centres_reads_the_cell():
    value = torch.arange(12.0).view(1, 12, 1, 1)
    centres = reference_points(3, 4).view(1, 12, 1, 1, 2)
    with torch.no_grad():
        out = deformable_sample(value, (3, 4), centres, torch.ones(1, 12, 1, 1))
    assert torch.equal(out.view(-1), torch.arange(12.0))


def test_reference_points_are_cell_centres_x_first():
    points = reference_points(2, 4)
    assert points.shape == (8, 2)
    torch.testing.assert_close(points[0], torch.tensor([0.125, 0.25]))
    torch.testing.assert_close(points[5], torch.tensor([0.375, 0.75]))  # row 1, column 1


def test_init_follows_deformable_detr():
    attention = DeformableCrossAttention(dim=64, num_heads=16, num_points=4, value_ratio=0.5)
    assert torch.count_nonzero(attention.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attention.attention_weights.weight) == 0
    assert torch.count_nonzero(attention.attention_weights.bias) == 0
    bias = attention.sampling_offsets.bias.view(16, 4, 2)
    # head 0 points along +x, head 4 along +y, scaled by (k + 1) with the max-abs component normalised to 1.
    torch.testing.assert_close(bias[0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(bias[0, :, 1], torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[4, 1], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[2, 0], torch.tensor([1.0, 1.0]), atol=1e-6, rtol=0)  # 45° → (1, 1)
    assert attention.value_proj.out_features == 32 and attention.output_proj.in_features == 32
    assert torch.count_nonzero(attention.value_proj.bias) == 0
    bound = math.sqrt(6 / (64 + 32))
    assert attention.value_proj.weight.abs().max() <= bound


def test_module_runs_in_bf16_with_fp32_sampling():
    attention = DeformableCrossAttention(dim=32, num_heads=4).to(torch.bfloat16)
    query = torch.randn(2, 12, 32, dtype=torch.bfloat16)
    features = torch.randn(2, 20, 32, dtype=torch.bfloat16)
    out = attention(query, reference_points(3, 4), features, (4, 5))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 12, 32) and torch.isfinite(out).all()


def test_value_width_must_divide_heads():
    with pytest.raises(ValueError, match="heads"):
        DeformableCrossAttention(dim=40, num_heads=16)
