"""Bidirectional interaction unit between two adjacent branches (docs/design.md#interaction-unit; its init:
docs/design.md#initialisation)."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init

from .deformable_attention import DeformableCrossAttention, gathered_for_init, reference_points


class DropPath(nn.Module):
    """Per-sample stochastic depth: drops the whole residual branch of a sample with probability ``rate``."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return hidden
        keep = 1.0 - self.rate
        mask = hidden.new_empty((hidden.shape[0],) + (1,) * (hidden.ndim - 1)).bernoulli_(keep)
        return hidden * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class ConvFFN(nn.Module):
    """Linear → depthwise 3×3 conv on the token grid → GELU → Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        hidden = self.fc1(tokens)
        batch, _, channels = hidden.shape
        grid = hidden.transpose(1, 2).reshape(batch, channels, height, width)  # (B, N, C) -> (B, C, H, W)
        hidden = self.dwconv(grid).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, C)
        return self.fc2(self.act(hidden))


class InteractionUpdate(nn.Module):
    """Updates one branch's tokens from the other branch's (already width-projected) tokens.

    ``x ← x + γ ⊙ DeformAttn(LN(x), LN(f))`` then ``x ← x + τ ⊙ DropPath(ConvFFN(LN(x)))`` with γ, τ zero at init.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_points: int,
        value_ratio: float,
        ffn_ratio: float,
        drop_path_rate: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=eps)
        self.feature_norm = nn.LayerNorm(dim, eps=eps)
        self.attention = DeformableCrossAttention(dim, num_heads, num_points, value_ratio)
        self.attention_gate = nn.Parameter(torch.zeros(dim))
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = ConvFFN(dim, int(dim * ffn_ratio))
        self.drop_path = DropPath(drop_path_rate)
        self.ffn_gate = nn.Parameter(torch.zeros(dim))

    def forward(
        self,
        tokens: torch.Tensor,
        grid: tuple[int, int],
        features: torch.Tensor,
        feature_grid: tuple[int, int],
    ) -> torch.Tensor:
        references = reference_points(*grid, device=tokens.device)
        attended = self.attention(self.query_norm(tokens), references, self.feature_norm(features), feature_grid)
        tokens = tokens + self.attention_gate * attended
        return tokens + self.ffn_gate * self.drop_path(self.ffn(self.ffn_norm(tokens), *grid))


class BidirectionalInteraction(nn.Module):
    """Exchange between a larger-model branch (``large``, lower resolution) and the next smaller one (``small``).

    Both directions read the *pre-update* tokens of the other branch.
    """

    def __init__(self, large_dim: int, small_dim: int, **update_kwargs) -> None:
        super().__init__()
        self.small_to_large = nn.Linear(small_dim, large_dim)
        self.large_to_small = nn.Linear(large_dim, small_dim)
        self.update_large = InteractionUpdate(large_dim, **update_kwargs)
        self.update_small = InteractionUpdate(small_dim, **update_kwargs)

    def forward(
        self,
        large: torch.Tensor,
        large_grid: tuple[int, int],
        small: torch.Tensor,
        small_grid: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``large``: ``(B, H_l·W_l, D_l)``, ``small``: ``(B, H_s·W_s, D_s)``; returns both updated, same shapes."""
        features_for_large = self.small_to_large(small)
        features_for_small = self.large_to_small(large)
        new_large = self.update_large(large, large_grid, features_for_large, small_grid)
        new_small = self.update_small(small, small_grid, features_for_small, large_grid)
        return new_large, new_small


@torch.no_grad()
def init_interaction_weights(module: nn.Module) -> None:
    """Generic init of interaction modules and zero gates (docs/design.md#initialisation).

    Applied with ``interactions.apply(init_interaction_weights)``. Uses ``transformers.initialization``, which
    equals ``torch.nn.init`` except that it leaves weights already loaded by ``from_pretrained`` alone.
    """
    if isinstance(module, nn.Linear):
        init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, InteractionUpdate):
        init.zeros_(module.attention_gate)
        init.zeros_(module.ffn_gate)


def reset_interaction_parameters(interactions: nn.Module) -> None:
    """Full interaction init: generic init everywhere, then every deformable attention re-initialised."""
    with gathered_for_init(interactions.parameters()):
        interactions.apply(init_interaction_weights)
    for module in interactions.modules():
        if isinstance(module, DeformableCrossAttention):
            module.reset_parameters()
