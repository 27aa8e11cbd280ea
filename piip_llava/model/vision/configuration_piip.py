"""Typed configuration of the PIIP vision tower (docs/design.md#branches, docs/design.md#configuration-presets-loading).

A tower is a list of :class:`BranchConfig` ordered as in the paper: branch 1 is the *largest* model at the
*lowest* resolution, the last branch the smallest model at the highest resolution. Each branch wraps a
``transformers`` vision backbone whose config is stored as a plain dict, so ``config.json`` alone rebuilds
the tower.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedConfig

# Backbone configs by the name used in ``BranchConfig.backbone_type``. Imported on first use: this module is
# imported while ``transformers`` registers our config with ``AutoConfig`` (piip_llava/registration.py), when the
# backbones' configuration modules cannot be imported yet.
BACKBONE_CONFIG_CLASSES: dict[str, str] = {
    "clip": "CLIPVisionConfig",
    "siglip": "SiglipVisionConfig",
    "vit": "ViTConfig",
    "convnext": "ConvNextConfig",
}


def backbone_config_class(backbone_type: str) -> type[PreTrainedConfig]:
    """The ``transformers`` config class of a backbone type (``clip`` → ``CLIPVisionConfig``)."""
    return getattr(importlib.import_module("transformers"), BACKBONE_CONFIG_CLASSES[backbone_type])


@dataclass
class BranchConfig:
    """One branch of the pyramid.

    Args:
        name: short identifier used on the command line (``--branch-weights NAME=DIR``).
        backbone_type: one of ``clip`` (``CLIPVisionModel``), ``siglip`` (``SiglipVisionModel``), ``vit``
            (``ViTModel``), ``convnext`` (``ConvNextModel``).
        image_size: side of the square image this branch sees.
        interaction_ranges: inclusive ``[start, end]`` block ranges; interaction ``i`` runs after block ``end`` of
            range ``i``. ConvNeXt block lists include the downsample layers as blocks (docs/design.md#branches).
        backbone: keyword arguments of the backbone's ``transformers`` config. For ViTs ``image_size`` there is
            the *pretraining* size that fixes the position-embedding table.
        use_cls_token: ViTs only: keep the CLS token through the blocks (it never enters an interaction). SigLIP
            has none: it must be ``False`` there.
    """

    name: str
    backbone_type: str
    image_size: int
    interaction_ranges: list[list[int]]
    backbone: dict[str, Any] = field(default_factory=dict)
    use_cls_token: bool = True

    def __post_init__(self) -> None:
        if self.backbone_type not in BACKBONE_CONFIG_CLASSES:
            raise ValueError(
                f"branch '{self.name}': backbone_type={self.backbone_type!r} is not one of "
                f"{sorted(BACKBONE_CONFIG_CLASSES)}"
            )
        if self.backbone_type == "siglip" and self.use_cls_token:
            raise ValueError(f"branch '{self.name}': SigLIP has no CLS token, set use_cls_token=False")
        if self.image_size <= 0:
            raise ValueError(f"branch '{self.name}': image_size must be positive, got {self.image_size}")
        self.interaction_ranges = [list(r) for r in self.interaction_ranges]
        expected_start = 0
        for start, end in self.interaction_ranges:
            if start != expected_start or end < start:
                raise ValueError(
                    f"branch '{self.name}': interaction_ranges must be contiguous inclusive ranges starting at 0, "
                    f"got {self.interaction_ranges}"
                )
            expected_start = end + 1
        if expected_start != self.num_blocks:
            raise ValueError(
                f"branch '{self.name}': interaction_ranges cover {expected_start} blocks but the backbone has "
                f"{self.num_blocks}"
            )
        stride = self.block_strides[-1] if self.backbone_type == "convnext" else self.patch_size
        if self.image_size % stride:
            raise ValueError(f"branch '{self.name}': image_size {self.image_size} is not a multiple of {stride}")

    def hf_config(self) -> PreTrainedConfig:
        """A fresh ``transformers`` config of the backbone (attention defaults to ``sdpa``)."""
        config = backbone_config_class(self.backbone_type)(**self.backbone)
        if self.backbone_type != "convnext":
            config._attn_implementation = "sdpa"
        return config

    @functools.cached_property
    def _backbone_config(self) -> PreTrainedConfig:
        # Read-only view for the derived properties below (building a config is slow).
        return self.hf_config()

    @property
    def is_vit(self) -> bool:
        return self.backbone_type != "convnext"

    @property
    def patch_size(self) -> int:
        """Stride of the patch embedding (ConvNeXt: its stem)."""
        return self._backbone_config.patch_size

    @property
    def num_blocks(self) -> int:
        if self.backbone_type == "convnext":
            depths = self.convnext_depths()
            return sum(depths) + len(depths) - 1
        return self._backbone_config.num_hidden_layers

    def convnext_depths(self) -> list[int]:
        return list(self._backbone_config.depths)

    def convnext_dims(self) -> list[int]:
        return list(self._backbone_config.hidden_sizes)

    @property
    def block_dims(self) -> list[int]:
        """Channel width of each block's output."""
        if self.backbone_type != "convnext":
            return [self._backbone_config.hidden_size] * self.num_blocks
        dims: list[int] = []
        for stage, (depth, dim) in enumerate(zip(self.convnext_depths(), self.convnext_dims())):
            dims += [dim] * (depth + (stage > 0))  # a downsample block opens every stage but the first
        return dims

    @property
    def block_strides(self) -> list[int]:
        """Stride (w.r.t. the branch input) of each block's output: PIIP's ``downsample_ratios``."""
        if self.backbone_type != "convnext":
            return [self.patch_size] * self.num_blocks
        strides: list[int] = []
        for stage, depth in enumerate(self.convnext_depths()):
            strides += [self.patch_size * 2**stage] * (depth + (stage > 0))
        return strides

    @property
    def output_dim(self) -> int:
        return self.block_dims[-1]

    @property
    def output_grid(self) -> int:
        return self.image_size // self.block_strides[-1]

    def interaction_dims(self) -> list[int]:
        return [self.block_dims[end] for _, end in self.interaction_ranges]

    def interaction_strides(self) -> list[int]:
        return [self.block_strides[end] for _, end in self.interaction_ranges]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class PiipVisionConfig(PreTrainedConfig):
    """Configuration of :class:`~piip_llava.model.vision.PiipVisionModel`.

    Args:
        branches: the pyramid's branches, largest model / lowest resolution first (default: the
            ``piip-llava_clip-bl_512-256_7B`` tower).
        deform_num_heads, deform_num_points, deform_ratio: deformable cross-attention shape
            (docs/design.md#deformable-cross-attention).
        cffn_ratio: hidden width of the interaction ConvFFN as a fraction of the query width.
        interaction_drop_path_rate: DropPath on the interaction FFN path (constant for all interactions).
        interaction_layer_norm_eps: eps of the interaction LayerNorms.
        feature_layer: single-branch towers only: the block whose output is the feature, ``-1`` the last,
            ``-2`` the penultimate (LLaVA-1.5's ``mm_vision_select_layer``). Later blocks are not run.
    """

    model_type = "piip_vision"

    branches: list | None = None
    deform_num_heads: int = 16
    deform_num_points: int = 4
    deform_ratio: float = 0.5
    cffn_ratio: float = 0.25
    interaction_drop_path_rate: float = 0.4
    interaction_layer_norm_eps: float = 1e-6
    feature_layer: int = -1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.branches is None:  # like every transformers config, a default one: PIIP-LLaVA's CLIP-B/L 512-256
            from .presets import get_tower_config

            self.branches = get_tower_config("piip-llava_clip-bl_512-256_7B").branches
        if not self.branches:
            raise ValueError("branches: a PIIP tower needs at least one branch")
        self.branches = [b if isinstance(b, BranchConfig) else BranchConfig(**b) for b in self.branches]
        names = [b.name for b in self.branches]
        if len(set(names)) != len(names):
            raise ValueError(f"branches: names must be unique, got {names}")
        counts = {b.name: len(b.interaction_ranges) for b in self.branches}
        if len(self.branches) > 1 and len(set(counts.values())) != 1:
            raise ValueError(f"branches: every branch needs the same number of interaction ranges, got {counts}")
        sizes = [b.image_size for b in self.branches]
        if sizes != sorted(sizes):
            raise ValueError(f"branches: image sizes must not decrease from branch 1 to the last, got {sizes}")
        if self.feature_layer != -1:
            branch = self.branches[0]
            if len(self.branches) > 1 or not branch.is_vit or not -branch.num_blocks <= self.feature_layer < 0:
                raise ValueError(
                    f"feature_layer={self.feature_layer}: only a single-branch ViT tower may pick an earlier block "
                    f"(-1 … -{branch.num_blocks}); a ConvNeXt's grid would change"
                )
        if self.deform_num_heads <= 0 or self.deform_num_points <= 0:
            raise ValueError("deform_num_heads and deform_num_points must be positive")
        for b in self.branches:
            for dim in b.interaction_dims():
                value_dim = int(dim * self.deform_ratio)
                if len(self.branches) > 1 and value_dim % self.deform_num_heads:
                    raise ValueError(
                        f"deform_ratio: branch '{b.name}' value width {value_dim} is not divisible by "
                        f"deform_num_heads={self.deform_num_heads}"
                    )

    @property
    def num_interactions(self) -> int:
        return len(self.branches[0].interaction_ranges) if len(self.branches) > 1 else 0

    @property
    def image_size(self) -> int:
        """Input resolution: the highest-resolution (last) branch's size."""
        return self.branches[-1].image_size

    @property
    def output_dims(self) -> list[int]:
        return [b.output_dim for b in self.branches]

    @property
    def output_grids(self) -> list[int]:
        return [b.output_grid for b in self.branches]

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["branches"] = [b.to_dict() if isinstance(b, BranchConfig) else b for b in self.branches]
        return output
