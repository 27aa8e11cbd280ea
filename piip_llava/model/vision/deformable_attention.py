"""Single-level deformable cross-attention (docs/design.md#deformable-cross-attention), in plain PyTorch.

Two exact formulations of the sampling, chosen per call:

- forward only (inference, a frozen tower): the four bilinear corner weights of every point are folded into
  its attention weight and one ``F.embedding_bag(mode="sum")`` gathers and sums the ``4·P`` value rows of
  each (query, head), in cache-sized chunks of queries, with no transposed copy of the values and no
  ``(B·heads, C, Nq, P)`` intermediate;
- when gradients are needed: Deformable-DETR's ``grid_sample`` formulation, whose fused backward kernel is
  several times faster on CPU than any gather-based backward (``docs/benchmarks.md``).

The sampling math (locations, corner weights, the weighted sum) runs in fp32 whatever the input dtype.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

# Sampling points handled per chunk of queries: the dozen temporaries per point then stay cache-sized
# instead of streaming hundreds of MB (ConvNeXt stride-4 maps have 65k queries x 16 heads x 4 points).
POINTS_PER_CHUNK = 1 << 16


def deformable_sample(
    value: torch.Tensor,
    spatial_shape: tuple[int, int],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinearly sample ``value`` at the given locations and sum with the attention weights.

    Equivalent to ``grid_sample(value, 2·loc − 1, mode="bilinear", padding_mode="zeros", align_corners=False)``
    followed by a weighted sum over the points (that is what runs when autograd needs gradients here).

    Args:
        value: ``(B, Nk, heads, C)`` values on the key grid, row-major over ``spatial_shape``.
        spatial_shape: ``(Hk, Wk)`` of the key grid.
        sampling_locations: ``(B, Nq, heads, P, 2)`` normalised ``(x, y)`` in ``[0, 1]`` (pixel-centre convention).
        attention_weights: ``(B, Nq, heads, P)``.

    Returns:
        ``(B, Nq, heads·C)`` in fp32.
    """
    batch, num_keys, num_heads, head_dim = value.shape
    height, width = spatial_shape
    num_queries, num_points = sampling_locations.shape[1], sampling_locations.shape[3]
    if num_keys != height * width:
        raise ValueError(f"value has {num_keys} keys but spatial_shape {spatial_shape} has {height * width}")
    if value.is_meta:  # shape-only runs (FLOPs counting): meta ops go through slow Python references
        return value.new_empty(batch, num_queries, num_heads * head_dim, dtype=torch.float32)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (value, sampling_locations, attention_weights)):
        value, sampling_locations, attention_weights = map(
            _at_least_fp32, (value, sampling_locations, attention_weights)
        )
        return deformable_sample_grid(value, spatial_shape, sampling_locations, attention_weights)
    table = _at_least_fp32(value).reshape(-1, head_dim)  # row (batch·Nk + key)·heads + head
    head_rows = torch.arange(num_heads, device=value.device).view(1, 1, num_heads, 1)
    head_rows = head_rows + torch.arange(batch, device=value.device).view(batch, 1, 1, 1) * (num_keys * num_heads)
    step = max(1, POINTS_PER_CHUNK // (batch * num_heads * num_points))
    outputs = [
        _sample_chunk(
            table,
            head_rows,
            spatial_shape,
            sampling_locations[:, start : start + step],
            attention_weights[:, start : start + step],
        )  # fmt: skip
        for start in range(0, num_queries, step)
    ]
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    return output.view(batch, num_queries, num_heads * head_dim)


def _at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _sample_chunk(
    table: torch.Tensor,
    head_rows: torch.Tensor,
    spatial_shape: tuple[int, int],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """:func:`deformable_sample` for a slice of queries; returns ``(B, Nq_chunk, heads, C)``."""
    height, width = spatial_shape
    batch, num_queries, num_heads, num_points = attention_weights.shape
    locations = _at_least_fp32(sampling_locations)
    # Pixel coordinates clamped one pixel outside the map: there every in-map corner weight is 0, as with
    # grid_sample's zero padding, so clamping farther points changes nothing.
    x = locations[..., 0].mul(width).sub_(0.5).clamp_(-1, width)  # (B, Nq, heads, P)
    y = locations[..., 1].mul(height).sub_(0.5).clamp_(-1, height)
    x0 = x.detach().floor().clamp_(max=width - 1)
    y0 = y.detach().floor().clamp_(max=height - 1)
    fx, fy = x - x0, y - y0
    attention = _at_least_fp32(attention_weights)
    # Corner weights with the attention weight folded in; corners outside the map get 0.
    bottom = fy * attention
    top = (attention - bottom).mul_(y0 >= 0)
    bottom = bottom.mul_(y0 <= height - 2)
    left = (1 - fx).mul_(x0 >= 0)
    right = fx.mul(x0 <= width - 2)
    weights = torch.stack([top * left, top * right, bottom * left, bottom * right], dim=-2)  # (…, 4, P)
    column0, column1 = x0.clamp(min=0), (x0 + 1).clamp_(max=width - 1)
    line0, line1 = y0.clamp(min=0).mul_(width), (y0 + 1).clamp_(max=height - 1).mul_(width)
    keys = torch.stack([line0 + column0, line0 + column1, line1 + column0, line1 + column1], dim=-2).long()
    rows = keys.mul_(num_heads).add_(head_rows.unsqueeze(-1))
    # One bag of 4 corners x P points per (query, head): gather the value rows and sum them weighted.
    output = F.embedding_bag(
        rows.view(-1, 4 * num_points), table, per_sample_weights=weights.view(-1, 4 * num_points), mode="sum"
    )
    return output.view(batch, num_queries, num_heads, -1)


def gathered_for_init(parameters: Iterable[nn.Parameter]):
    """Context in which ZeRO-3-partitioned parameters are whole (gathered, written on rank 0, re-partitioned);
    a no-op otherwise. Needed by inits that run inside ``deepspeed.zero.Init``."""
    parameters = list(parameters)
    if any(hasattr(p, "ds_id") for p in parameters):
        # Imported by name: ``transformers``' remote-code check (piip_llava/convert/remote_code.py) requires every
        # module an ``import`` statement names, and deepspeed is optional.
        deepspeed = importlib.import_module("deepspeed")

        return deepspeed.zero.GatheredParameters(parameters, modifier_rank=0)
    return contextlib.nullcontext()


def reference_points(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Cell centres of an ``height×width`` grid as normalised ``(x, y)``, row-major: ``(H·W, 2)``."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


class DeformableCrossAttention(nn.Module):
    """MSDeformAttn with one feature level, a value-width ratio and a separate feature input width.

    Args:
        dim: query width (and output width).
        num_heads: attention heads (16 in every released config).
        num_points: sampling points per head (4).
        value_ratio: value width as a fraction of ``dim`` (0.5).
        feature_dim: width of the key/value input (defaults to ``dim``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 16,
        num_points: int = 4,
        value_ratio: float = 0.5,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        value_dim = int(dim * value_ratio)
        if value_dim % num_heads:
            raise ValueError(
                f"value width {value_dim} (dim {dim} x ratio {value_ratio}) must divide by {num_heads} heads"
            )
        self.num_heads = num_heads
        self.num_points = num_points
        self.value_dim = value_dim
        self.sampling_offsets = nn.Linear(dim, num_heads * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_points)
        self.value_proj = nn.Linear(feature_dim or dim, value_dim)
        self.output_proj = nn.Linear(value_dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable-DETR init: zero offset weights with a radial bias pattern, uniform attention
        (docs/design.md#initialisation)."""
        with gathered_for_init(self.parameters()):
            init.zeros_(self.sampling_offsets.weight)
            angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
            directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (heads, 2)
            directions = directions / directions.abs().max(dim=-1, keepdim=True).values
            scale = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, -1, 1)
            bias = (directions[:, None, :] * scale).flatten()
            init.copy_(self.sampling_offsets.bias, bias.to(self.sampling_offsets.bias.device))
            init.zeros_(self.attention_weights.weight)
            init.zeros_(self.attention_weights.bias)
            init.xavier_uniform_(self.value_proj.weight)
            init.zeros_(self.value_proj.bias)
            init.xavier_uniform_(self.output_proj.weight)
            init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        query_reference: torch.Tensor,
        features: torch.Tensor,
        feature_shape: tuple[int, int],
    ) -> torch.Tensor:
        """
        Args:
            query: ``(B, Nq, dim)``.
            query_reference: ``(Nq, 2)`` normalised ``(x, y)`` reference point of each query.
            features: ``(B, Hk·Wk, feature_dim)`` keys/values.
            feature_shape: ``(Hk, Wk)``.

        Returns:
            ``(B, Nq, dim)`` in the query's dtype.
        """
        batch, num_queries, _ = query.shape
        height, width = feature_shape
        value = self.value_proj(features).view(batch, -1, self.num_heads, self.value_dim // self.num_heads)
        offsets = self.sampling_offsets(query).view(batch, num_queries, self.num_heads, self.num_points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, self.num_heads, self.num_points)
        weights = weights.float().softmax(dim=-1)
        normaliser = torch.tensor([width, height], dtype=torch.float32, device=query.device)
        locations = query_reference.float().view(1, num_queries, 1, 1, 2) + offsets.float() / normaliser
        sampled = deformable_sample(value, feature_shape, locations, weights)  # (B, Nq, value_dim) fp32
        return self.output_proj(sampled.to(query.dtype))


def deformable_sample_grid(
    value: torch.Tensor,
    spatial_shape: tuple[int, int],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The textbook formulation (Deformable-DETR's PyTorch reference, one level): ``grid_sample`` per head,
    then a weighted sum over points. Same arguments and result as :func:`deformable_sample`; used by it when
    gradients are needed, and as the baseline the gather path is tested and timed against."""
    batch, _, num_heads, head_dim = value.shape
    height, width = spatial_shape
    num_queries, num_points = sampling_locations.shape[1], sampling_locations.shape[3]
    value_maps = value.flatten(2).transpose(1, 2).reshape(batch * num_heads, head_dim, height, width)
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)  # (B·heads, Nq, P, 2)
    sampled = F.grid_sample(value_maps, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = attention_weights.transpose(1, 2).reshape(batch * num_heads, 1, num_queries, num_points)
    output = (sampled * weights).sum(-1).view(batch, num_heads * head_dim, num_queries)
    return output.transpose(1, 2).contiguous()
