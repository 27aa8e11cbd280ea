"""FLOPs of a vision tower, counted the way the PIIP paper does (docs/design.md#flops).

The tower runs once on the ``meta`` device (shapes only, no weights) with forward hooks that count
multiply-accumulates like the mmcv-style counter PIIP used: ``nn.Linear`` input elements × output width
(no bias), ``nn.Conv2d`` kernel MACs + bias, plain ``nn.LayerNorm`` / ``nn.GroupNorm`` 2 × elements (exact type
match, so ConvNeXt's LayerNorm subclass is not counted, as timm's was not). Added analytically: self-attention
``2·N²·C`` per ViT layer (N patch tokens, CLS excluded) and deformable attention ``5·N_q·K·C`` per direction of
every interaction unit. The numbers are MACs, labelled "FLOPs" as in the paper.

PIIP's script evaluated the deformable term of a ConvNeXt branch on the grid of its *first* interaction for
every interaction; ``vision_gflops`` reproduces that convention (it is how the README's 598G / 1037G were
obtained) and ``vision_gflops_exact`` uses each interaction's true grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .configuration_piip import PiipVisionConfig
from .modeling_piip import PiipVisionModel


def _linear_macs(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> int:
    return inputs[0].numel() * output.shape[-1]


def _conv_macs(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> int:
    kernel = module.kernel_size[0] * module.kernel_size[1]
    positions = output.shape[0] * output.shape[2] * output.shape[3]
    macs = kernel * module.in_channels * (module.out_channels // module.groups) * positions
    return macs + (module.out_channels * positions if module.bias is not None else 0)


def _norm_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    affine = getattr(module, "elementwise_affine", False) or getattr(module, "affine", False)
    return inputs[0].numel() * (2 if affine else 1)


MODULE_COUNTERS = {nn.Linear: _linear_macs, nn.Conv2d: _conv_macs, nn.LayerNorm: _norm_macs, nn.GroupNorm: _norm_macs}


def count_module_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of the counted module types in one forward of ``model(*inputs)``."""
    total = 0

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += MODULE_COUNTERS[type(module)](module, args, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) in MODULE_COUNTERS]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def self_attention_macs(config: PiipVisionConfig) -> int:
    """``2·N²·C`` per layer of every ViT branch (N patch tokens)."""
    total = 0
    for branch in config.branches:
        if branch.is_vit:
            tokens = (branch.image_size // branch.patch_size) ** 2
            total += 2 * tokens * tokens * branch.output_dim * branch.num_blocks
    return total


def deformable_macs(config: PiipVisionConfig, first_interaction_grid: bool) -> int:
    """``5·N_q·K·C`` for both directions of every interaction unit.

    Args:
        first_interaction_grid: evaluate each branch's query count on its first interaction's grid (PIIP's
            script) instead of the interaction's own grid.
    """
    total = 0
    points = config.deform_num_points
    for k in range(len(config.branches) - 1):
        pair = config.branches[k : k + 2]
        for i in range(config.num_interactions):
            for branch in pair:
                stride = branch.interaction_strides()[0 if first_interaction_grid else i]
                queries = (branch.image_size // stride) ** 2
                total += 5 * queries * points * branch.interaction_dims()[i]
    return total


@dataclass
class FlopsReport:
    """Vision-tower cost of one image at the tower's input size."""

    preset: str
    image_size: int
    vision_gflops: float
    vision_gflops_exact: float
    vision_params_m: float
    interaction_params_m: float
    module_gflops: float
    self_attention_gflops: float
    deformable_gflops: float
    branch_params_m: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def count_tower_flops(config: PiipVisionConfig, preset: str = "") -> FlopsReport:
    """Build the tower on ``meta`` and count its FLOPs (MACs) and parameters."""
    with torch.device("meta"):
        model = PiipVisionModel(config)
        pixel_values = torch.empty(1, 3, config.image_size, config.image_size)
    modules = count_module_macs(model, pixel_values)
    attention = self_attention_macs(config)
    deformable_paper = deformable_macs(config, first_interaction_grid=True)
    deformable_exact = deformable_macs(config, first_interaction_grid=False)
    giga, mega = 1e9, 1e6
    return FlopsReport(
        preset=preset,
        image_size=config.image_size,
        vision_gflops=(modules + attention + deformable_paper) / giga,
        vision_gflops_exact=(modules + attention + deformable_exact) / giga,
        vision_params_m=sum(p.numel() for p in model.parameters()) / mega,
        interaction_params_m=sum(p.numel() for p in model.interactions.parameters()) / mega,
        module_gflops=modules / giga,
        self_attention_gflops=attention / giga,
        deformable_gflops=deformable_paper / giga,
        branch_params_m={
            branch_config.name: sum(p.numel() for p in branch.parameters()) / mega
            for branch_config, branch in zip(config.branches, model.branches)
        },
    )
