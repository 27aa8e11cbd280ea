"""Branch wrappers on ``transformers`` backbones (docs/design.md#branches).

Every branch exposes the same small interface to the tower: ``embed`` an image into a :class:`BranchState`,
``run_blocks`` over an inclusive block range, read and write the patch ``tokens`` that interactions see,
and the final ``feature_map``. Parameter names follow the Hugging Face checkpoints so loading is a key map
(``piip_llava/model/vision/weights.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPVisionEmbeddings
from transformers.models.convnext.modeling_convnext import ConvNextEmbeddings, ConvNextLayer, ConvNextLayerNorm
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer, SiglipVisionEmbeddings
from transformers.models.vit.modeling_vit import ViTLayer, ViTPatchEmbeddings

from .configuration_piip import BranchConfig


@dataclass
class BranchState:
    """A branch between block groups: ViTs keep ``(B, 1+N, D)`` with CLS first (or ``(B, N, D)``), ConvNeXt
    keeps ``(B, C, H, W)``; ``height``/``width`` is the current token grid."""

    hidden: torch.Tensor
    height: int
    width: int


def interpolate_position_table(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize (fp32, ``align_corners=False``) of a square ``(G·G, D)`` table to ``(height·width, D)``."""
    side = int(round(table.shape[0] ** 0.5))
    if side * side != table.shape[0]:
        raise ValueError(f"position table of {table.shape[0]} entries is not a square grid")
    if (side, side) == (height, width):
        return table
    grid = table.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, G, G)
    grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(height * width, -1).to(table.dtype)


class VitBranch(nn.Module):
    """Shared logic of ViT branches: CLS kept through the blocks, excluded from interactions and output.

    Subclasses name the ``transformers`` embedding and encoder-layer classes they are built from.
    """

    embeddings_class: type[nn.Module]
    layer_class: type[nn.Module]

    def __init__(self, config: BranchConfig) -> None:
        super().__init__()
        self.config = config
        self.use_cls_token = config.use_cls_token
        hf_config = config.hf_config()
        self.embeddings = self.embeddings_class(hf_config)
        self.layers = nn.ModuleList(self.layer_class(hf_config) for _ in range(hf_config.num_hidden_layers))

    def patch_embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, D, S/P, S/P)`` (CLIP and SigLIP keep their conv at ``embeddings.patch_embedding``)."""
        weight = self.embeddings.patch_embedding.weight
        return self.embeddings.patch_embedding(pixel_values.to(weight.dtype))

    def position_tables(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(cls_position (D,) or None, patch_positions (G·G, D))`` of the pretrained table."""
        raise NotImplementedError

    def class_embedding(self) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, hidden: torch.Tensor) -> torch.Tensor:
        """Applied once after position embedding (CLIP's pre-LayerNorm)."""
        return hidden

    def embed(self, pixel_values: torch.Tensor) -> BranchState:
        patches = self.patch_embed(pixel_values)  # (B, D, H, W)
        batch, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)  # (B, D, H, W) -> (B, N, D)
        cls_position, patch_positions = self.position_tables()
        hidden = patches + interpolate_position_table(patch_positions, height, width)
        if self.use_cls_token:
            cls_token = (self.class_embedding() + cls_position).to(hidden.dtype).expand(batch, 1, -1)
            hidden = torch.cat([cls_token, hidden], dim=1)
        return BranchState(self.prepare(hidden), height, width)

    def run_blocks(self, state: BranchState, start: int, end: int) -> BranchState:
        hidden = state.hidden
        for layer in self.layers[start : end + 1]:
            hidden = layer(hidden, None)
        return BranchState(hidden, state.height, state.width)

    def tokens(self, state: BranchState) -> torch.Tensor:
        """Patch tokens ``(B, N, D)`` that interactions read (CLS excluded)."""
        return state.hidden[:, 1:] if self.use_cls_token else state.hidden

    def with_tokens(self, state: BranchState, tokens: torch.Tensor) -> BranchState:
        hidden = torch.cat([state.hidden[:, :1], tokens], dim=1) if self.use_cls_token else tokens
        return BranchState(hidden, state.height, state.width)

    def feature_map(self, state: BranchState) -> torch.Tensor:
        tokens = self.tokens(state)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, state.height, state.width)


class ClipBranch(VitBranch):
    """``CLIPVisionModel`` without ``post_layernorm`` (unused by PIIP): embeddings, pre-LN, encoder layers."""

    embeddings_class = CLIPVisionEmbeddings
    layer_class = CLIPEncoderLayer

    def __init__(self, config: BranchConfig) -> None:
        super().__init__(config)
        hf_config = config.hf_config()
        self.pre_layrnorm = nn.LayerNorm(hf_config.hidden_size, eps=hf_config.layer_norm_eps)

    def position_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.embeddings.position_embedding.weight
        return table[0], table[1:]

    def class_embedding(self) -> torch.Tensor:
        return self.embeddings.class_embedding

    def prepare(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.pre_layrnorm(hidden)


class SiglipBranch(VitBranch):
    """``SiglipVisionModel`` without ``post_layernorm`` and the pooling head: no CLS token, no pre-LayerNorm."""

    embeddings_class = SiglipVisionEmbeddings
    layer_class = SiglipEncoderLayer

    def position_tables(self) -> tuple[None, torch.Tensor]:
        return None, self.embeddings.position_embedding.weight


class ViTEmbeddingTables(nn.Module):
    """The parameters of ``ViTEmbeddings`` under their Hugging Face names (dropout and mask token unused)."""

    def __init__(self, hf_config) -> None:
        super().__init__()
        self.patch_embeddings = ViTPatchEmbeddings(hf_config)
        num_patches = self.patch_embeddings.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hf_config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches + 1, hf_config.hidden_size))
        nn.init.trunc_normal_(self.cls_token, std=hf_config.initializer_range)
        nn.init.trunc_normal_(self.position_embeddings, std=hf_config.initializer_range)


class HfVitBranch(VitBranch):
    """``ViTModel`` (DeiT / AugReg-style plain ViT) without its final LayerNorm and pooler."""

    embeddings_class = ViTEmbeddingTables
    layer_class = ViTLayer

    def patch_embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        projection = self.embeddings.patch_embeddings.projection
        return projection(pixel_values.to(projection.weight.dtype))

    def position_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.embeddings.position_embeddings[0]
        return table[0], table[1:]

    def class_embedding(self) -> torch.Tensor:
        return self.embeddings.cls_token[0, 0]


class ConvNextBranch(nn.Module):
    """``ConvNextModel`` flattened into one block list with the downsample layers as blocks (docs/design.md#branches).

    ConvNeXt-B/L (depths 3,3,27,3) give 39 blocks: 0–2 stage 1, 3 downsample, 4–6, 7 downsample, 8–34,
    35 downsample, 36–38. The stem is the patch embedding; the final LayerNorm is unused.
    """

    def __init__(self, config: BranchConfig) -> None:
        super().__init__()
        self.config = config
        hf_config = config.hf_config()
        self.embeddings = ConvNextEmbeddings(hf_config)
        blocks: list[nn.Module] = []
        previous = hf_config.hidden_sizes[0]
        for stage, (depth, dim) in enumerate(zip(hf_config.depths, hf_config.hidden_sizes)):
            if stage > 0:
                blocks.append(
                    nn.Sequential(
                        ConvNextLayerNorm(previous, eps=1e-6, data_format="channels_first"),
                        nn.Conv2d(previous, dim, kernel_size=2, stride=2),
                    )
                )
            blocks += [ConvNextLayer(hf_config, dim=dim) for _ in range(depth)]
            previous = dim
        self.blocks = nn.ModuleList(blocks)

    def embed(self, pixel_values: torch.Tensor) -> BranchState:
        weight = self.embeddings.patch_embeddings.weight
        hidden = self.embeddings(pixel_values.to(weight.dtype))
        return BranchState(hidden, hidden.shape[2], hidden.shape[3])

    def run_blocks(self, state: BranchState, start: int, end: int) -> BranchState:
        hidden = state.hidden
        for block in self.blocks[start : end + 1]:
            hidden = block(hidden)
        return BranchState(hidden, hidden.shape[2], hidden.shape[3])

    def tokens(self, state: BranchState) -> torch.Tensor:
        return state.hidden.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, C)

    def with_tokens(self, state: BranchState, tokens: torch.Tensor) -> BranchState:
        hidden = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, state.height, state.width)
        return BranchState(hidden, state.height, state.width)

    def feature_map(self, state: BranchState) -> torch.Tensor:
        return state.hidden


BRANCH_CLASSES: dict[str, type[nn.Module]] = {
    "clip": ClipBranch,
    "siglip": SiglipBranch,
    "vit": HfVitBranch,
    "convnext": ConvNextBranch,
}


def build_branch(config: BranchConfig) -> nn.Module:
    return BRANCH_CLASSES[config.backbone_type](config)
