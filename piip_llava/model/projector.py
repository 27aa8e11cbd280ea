"""Projectors from vision features to the LLM width (docs/design.md#projector)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BranchProjector(nn.Module):
    """Per-position Linear → GroupNorm (over channels × positions of one image) → GELU → Linear."""

    def __init__(self, in_dim: int, out_dim: int, groups: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.norm = nn.GroupNorm(groups, out_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.linear_1(tokens)  # (B, N, D)
        hidden = self.norm(hidden.transpose(1, 2)).transpose(1, 2)  # GroupNorm wants (B, D, N)
        return self.linear_2(self.act(hidden))


class PiipProjector(nn.Module):
    """Merges N branch maps: upsample each to the highest-resolution grid (bilinear, fp32), project, sum.

    ``(B, D_j, H_j, W_j)`` per branch → ``(B, H·W, D_text)`` in row-major order of the last branch's grid.
    """

    def __init__(self, branch_dims: list[int], text_dim: int, groups: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList(BranchProjector(dim, text_dim, groups) for dim in branch_dims)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        height, width = features[-1].shape[-2:]
        merged = None
        for feature, projector in zip(features, self.branches):
            if feature.shape[-2:] != (height, width):
                upsampled = F.interpolate(feature.float(), size=(height, width), mode="bilinear", align_corners=False)
                feature = upsampled.to(feature.dtype)
            projected = projector(feature.flatten(2).transpose(1, 2))  # (B, D_j, H, W) -> (B, H·W, D_text)
            merged = projected if merged is None else merged + projected
        return merged


class MlpProjector(nn.Module):
    """LLaVA-1.5 ``mlp2x_gelu`` (Linear → GELU → Linear) or ``linear`` on a single branch's tokens."""

    def __init__(self, in_dim: int, text_dim: int, depth: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, text_dim)
        self.act = nn.GELU() if depth == 2 else nn.Identity()
        self.linear_2 = nn.Linear(text_dim, text_dim) if depth == 2 else nn.Identity()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        (feature,) = features
        return self.linear_2(self.act(self.linear_1(feature.flatten(2).transpose(1, 2))))


def build_projector(config) -> nn.Module:
    dims, text_dim = config.vision_config.output_dims, config.text_config.hidden_size
    if config.projector_type == "piip":
        return PiipProjector(dims, text_dim, config.projector_norm_groups)
    return MlpProjector(dims[0], text_dim, depth=2 if config.projector_type == "mlp2x_gelu" else 1)
