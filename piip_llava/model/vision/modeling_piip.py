"""The Parameter-Inverted Image Pyramid vision tower (docs/design.md#architecture).

Branch 1 is the largest model at the lowest resolution. The input is the highest-resolution image; the
other branches get a bilinear scale-factor resize of it (fp32). Blocks run group by group; after every group
each adjacent pair of branches exchanges information, from the high-resolution end down (3 branches:
(2↔3) then (1↔2) with the updated branch 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_NAME

from .branches import BranchState, build_branch
from .configuration_piip import PiipVisionConfig
from .deformable_attention import gathered_for_init
from .interaction import BidirectionalInteraction, InteractionUpdate, init_interaction_weights


class PiipVisionPreTrainedModel(PreTrainedModel):
    """Weight init and the ``transformers`` plumbing (save/load/shard, ``AutoModel``) of the PIIP tower."""

    config_class = PiipVisionConfig
    base_model_prefix = "vision_tower"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # The branches run their backbones' SDPA attention whatever the parent model asks for.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Interaction modules get PIIP's init (docs/design.md#initialisation), everything else the generic one.
        # ``transformers`` calls this only on modules that hold parameters of their own, children before parents:
        # an ``InteractionUpdate`` comes after its deformable attention's layers, so it re-initialises that
        # attention last. Weights loaded by ``from_pretrained`` are flagged and left alone.
        if id(module) not in self._interaction_module_ids:
            super()._init_weights(module)
            return
        with gathered_for_init(module.parameters(recurse=False)):
            init_interaction_weights(module)
        if isinstance(module, InteractionUpdate):
            module.attention.reset_parameters()


class PiipVisionModel(PiipVisionPreTrainedModel):
    """PIIP tower: ``pixel_values (B, 3, S, S)`` at the last branch's size (non-square inputs work too, as in the
    official code) → one ``(B, D_j, H_j, W_j)`` per branch.

    A one-branch config is a plain single-backbone tower with the same interface (the LLaVA-1.5 baseline). Saved
    and loaded with ``save_pretrained`` / ``from_pretrained`` (or ``AutoModel``) like any ``transformers`` model.
    """

    WEIGHTS_NAME = SAFE_WEIGHTS_NAME

    def __init__(self, config: PiipVisionConfig) -> None:
        super().__init__(config)
        self.branches = nn.ModuleList(build_branch(branch) for branch in config.branches)
        update_kwargs = dict(
            num_heads=config.deform_num_heads,
            num_points=config.deform_num_points,
            value_ratio=config.deform_ratio,
            ffn_ratio=config.cffn_ratio,
            drop_path_rate=config.interaction_drop_path_rate,
            eps=config.interaction_layer_norm_eps,
        )
        # interactions[i][k] joins branch k and k+1 after block group i, with the widths of the blocks that
        # end that group (ConvNeXt widths change from group to group).
        dims = [branch.interaction_dims() for branch in config.branches]
        self.interactions = nn.ModuleList(
            nn.ModuleList(
                BidirectionalInteraction(dims[k][i], dims[k + 1][i], **update_kwargs)
                for k in range(len(config.branches) - 1)
            )
            for i in range(config.num_interactions)
        )
        self._interaction_module_ids = {id(module) for module in self.interactions.modules()}
        self.gradient_checkpointing = False
        self.post_init()

    def build_pyramid(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """One image per branch: bilinear resize by scale factor ``S_j / S_last`` in fp32 (docs/design.md#the-pyramid).

        Like the official PIIP code, any ``(B, 3, H, W)`` input works, square or not: each branch sees the image
        scaled by its factor and its token grid is ``(h // patch, w // patch)`` (positions interpolated to it).
        """
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        top_size = self.config.image_size
        images = []
        for branch in self.config.branches:
            scale = branch.image_size / top_size
            if scale < 1:
                images.append(
                    F.interpolate(pixel_values.float(), scale_factor=scale, mode="bilinear", align_corners=False)
                )
            else:
                images.append(pixel_values)
        for branch, image in zip(self.config.branches, images):
            if min(image.shape[-2:]) < branch.patch_size:
                raise ValueError(
                    f"pixel_values {tuple(pixel_values.shape[-2:])} give branch {branch.name!r} a "
                    f"{tuple(image.shape[-2:])} image, smaller than its {branch.patch_size}-pixel patch; this tower "
                    f"expects about {top_size} x {top_size}"
                )
        return [image.to(self.dtype) for image in images]

    def _run_group(self, index: int, states: list[BranchState]) -> list[BranchState]:
        """Block group ``index`` of every branch, then the interaction after it."""
        states = [
            branch.run_blocks(state, *config.interaction_ranges[index])
            for branch, config, state in zip(self.branches, self.config.branches, states)
        ]
        if index >= len(self.interactions):
            return states
        tokens = [branch.tokens(state) for branch, state in zip(self.branches, states)]
        grids = [(state.height, state.width) for state in states]
        for k in reversed(range(len(self.interactions[index]))):
            tokens[k], tokens[k + 1] = self.interactions[index][k](tokens[k], grids[k], tokens[k + 1], grids[k + 1])
        return [branch.with_tokens(state, t) for branch, state, t in zip(self.branches, states, tokens)]

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        images = self.build_pyramid(pixel_values)
        states = [branch.embed(image) for branch, image in zip(self.branches, images)]
        if self.config.feature_layer != -1:  # a single branch stopping early (LLaVA-1.5's select_layer -2)
            last = self.config.branches[0].num_blocks + self.config.feature_layer
            return [self.branches[0].feature_map(self.branches[0].run_blocks(states[0], 0, last))]
        for index in range(len(self.config.branches[0].interaction_ranges)):
            if self.gradient_checkpointing and self.training:
                # Non-reentrant checkpointing takes and returns the BranchState structures as they are.
                states = checkpoint(self._run_group, index, states, use_reentrant=False)
            else:
                states = self._run_group(index, states)
        return [branch.feature_map(state) for branch, state in zip(self.branches, states)]
