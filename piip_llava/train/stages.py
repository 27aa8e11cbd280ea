"""Training stages are data: which parts of the model train (docs/design.md#training).

Stage 1 trains ``projector``; stage 2 trains ``projector,vision_branches,interactions,llm``. A part is a set of
module handles, never a name pattern.
"""

from __future__ import annotations

from torch import nn

from piip_llava.model import PiipLlavaForConditionalGeneration


def part_modules(model: PiipLlavaForConditionalGeneration) -> dict[str, list[nn.Module]]:
    tower = model.model.vision_tower
    return {
        "projector": [model.model.multi_modal_projector],
        "vision_branches": [tower.branches],
        "interactions": [tower.interactions],
        "llm": [model.model.language_model, model.lm_head],
    }


def apply_tunable_parts(model: PiipLlavaForConditionalGeneration, parts: list[str]) -> None:
    """Freeze everything, then unfreeze the named parts."""
    model.requires_grad_(False)
    modules = part_modules(model)
    for part in parts:
        for module in modules[part]:
            module.requires_grad_(True)


def parameter_counts(model: PiipLlavaForConditionalGeneration) -> dict[str, tuple[int, int]]:
    """``part -> (trainable, total)`` parameter counts."""
    counts = {}
    for part, modules in part_modules(model).items():
        parameters = {id(p): p for module in modules for p in module.parameters()}.values()
        counts[part] = (sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters))
    return counts
