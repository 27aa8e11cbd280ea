"""Registry of vision-tower presets: the released PIIP-LLaVA towers (the official configs), the perception backbones
TSB / SBL / TSBL (the PIIP paper's detection models), the LLaVA-1.5 single-branch baseline, and tiny towers for
tests.

``get_tower_config(name)`` raises with the list of valid names for an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable

from .configuration_piip import BranchConfig, PiipVisionConfig

# Backbone shapes (kwargs of the transformers configs).
CLIP_L16 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                patch_size=16, hidden_act="quick_gelu", layer_norm_eps=1e-5)  # fmt: skip
CLIP_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                patch_size=16, image_size=224, hidden_act="quick_gelu", layer_norm_eps=1e-5)  # fmt: skip
CLIP_L14_336 = dict(CLIP_L16, patch_size=14, image_size=336)
CONVNEXT_B = dict(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3], layer_scale_init_value=1e-6)
CONVNEXT_L = dict(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3], layer_scale_init_value=1e-6)
DEIT = {  # plain ViT (DeiT / DeiT-III shapes), pretrained at 224
    "T": dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3),
    "S": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
    "B": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "L": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
}


def singles(count: int) -> list[list[int]]:
    """``[[0,0],[1,1],…]``: an interaction after every block."""
    return [[i, i] for i in range(count)]


def pairs(count: int) -> list[list[int]]:
    """``[[0,1],[2,3],…]``: an interaction after every second block."""
    return [[2 * i, 2 * i + 1] for i in range(count)]


CONVNEXT_IDX12 = [[0, 2], [3, 6], [7, 10], [11, 13], [14, 16], [17, 19], [20, 22], [23, 25], [26, 28], [29, 31],
                  [32, 34], [35, 38]]  # fmt: skip
CONVNEXT_IDX24 = [[0, 1], [2, 2], [3, 4], [5, 6], [7, 9], [10, 10], [11, 12], [13, 13], [14, 15], [16, 16],
                  [17, 18], [19, 19], [20, 21], [22, 22], [23, 24], [25, 25], [26, 27], [28, 28], [29, 30],
                  [31, 31], [32, 33], [34, 34], [35, 36], [37, 38]]  # fmt: skip


def clip_l16(image_size: int, ranges: list[list[int]], pretrained_size: int) -> BranchConfig:
    return BranchConfig("clip-l", "clip", image_size, ranges, dict(CLIP_L16, image_size=pretrained_size))


def clip_b16(image_size: int, ranges: list[list[int]]) -> BranchConfig:
    return BranchConfig("clip-b", "clip", image_size, ranges, dict(CLIP_B16))


def convnext(size: str, image_size: int, ranges: list[list[int]]) -> BranchConfig:
    shape = CONVNEXT_B if size == "b" else CONVNEXT_L
    return BranchConfig(f"convnext-{size}", "convnext", image_size, ranges, dict(shape))


def deit(size: str, image_size: int, ranges: list[list[int]]) -> BranchConfig:
    return BranchConfig(f"vit-{size.lower()}", "vit", image_size, ranges,
                        dict(DEIT[size], patch_size=16, image_size=224, layer_norm_eps=1e-6))  # fmt: skip


def _clip_bl_512_256() -> PiipVisionConfig:
    return PiipVisionConfig(branches=[clip_l16(256, [[0, 11], [12, 23]], 224), clip_b16(512, [[0, 5], [6, 11]])])


def _clip_bl_512_448() -> PiipVisionConfig:
    return PiipVisionConfig(branches=[clip_l16(448, pairs(12), 336), clip_b16(512, singles(12))])


def _convnext_clip_l(size: str, image_size: int, clip_size: int, interactions: int) -> Callable[[], PiipVisionConfig]:
    def build() -> PiipVisionConfig:
        if interactions == 2:
            clip_ranges, convnext_ranges = [[0, 11], [12, 23]], [[0, 19], [20, 38]]
        elif interactions == 12:
            clip_ranges, convnext_ranges = pairs(12), CONVNEXT_IDX12
        else:
            clip_ranges, convnext_ranges = singles(24), CONVNEXT_IDX24
        clip = clip_l16(clip_size, clip_ranges, 224 if clip_size == 224 else 336)
        return PiipVisionConfig(branches=[clip, convnext(size, image_size, convnext_ranges)])

    return build


def _perception(sizes: str, resolutions: list[int]) -> Callable[[], PiipVisionConfig]:
    """TSB / SBL / TSBL: branch 1 is the largest ViT; ViT-L branches interact after every second block."""

    def build() -> PiipVisionConfig:
        branches = []
        for size, resolution in zip(reversed(sizes), resolutions):  # "TSB" lists small to large
            ranges = pairs(12) if size == "L" else singles(12)
            branches.append(deit(size, resolution, ranges))
        return PiipVisionConfig(branches=branches)

    return build


def _single(branch: BranchConfig) -> Callable[[], PiipVisionConfig]:
    return lambda: PiipVisionConfig(branches=[branch])


# Tiny towers (random weights) for tests and the synthetic quickstart.
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, patch_size=8,
                 image_size=32, hidden_act="quick_gelu")  # fmt: skip
TINY_CLIP_SMALL = dict(TINY_CLIP, hidden_size=32, num_hidden_layers=2)
TINY_CONVNEXT = dict(hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 2, 1], layer_scale_init_value=1e-6)
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                image_size=32)  # fmt: skip


def _tiny_clip_2branch() -> PiipVisionConfig:
    return PiipVisionConfig(
        branches=[
            BranchConfig("clip-large", "clip", 32, [[0, 1], [2, 3]], TINY_CLIP),
            BranchConfig("clip-small", "clip", 64, [[0, 0], [1, 1]], TINY_CLIP_SMALL),
        ],
        deform_num_heads=4,
    )


def _tiny_convnext_clip() -> PiipVisionConfig:
    return PiipVisionConfig(
        branches=[
            BranchConfig("clip-large", "clip", 32, [[0, 1], [2, 3]], TINY_CLIP),
            BranchConfig("convnext", "convnext", 64, [[0, 2], [3, 7]], TINY_CONVNEXT),
        ],
        deform_num_heads=4,
    )


def _tiny_clip_siglip() -> PiipVisionConfig:
    siglip = dict(TINY_CLIP_SMALL, hidden_act="gelu_pytorch_tanh")
    return PiipVisionConfig(
        branches=[
            BranchConfig("clip-large", "clip", 32, [[0, 1], [2, 3]], TINY_CLIP),
            BranchConfig("siglip", "siglip", 64, [[0, 0], [1, 1]], siglip, use_cls_token=False),
        ],
        deform_num_heads=4,
    )


def _tiny_multi(count: int) -> Callable[[], PiipVisionConfig]:
    def build() -> PiipVisionConfig:
        widths = [48, 32, 32, 16][4 - count :]
        branches = [
            BranchConfig(f"vit-{j + 1}", "vit", 16 * (j + 2), [[0, 0], [1, 1]], dict(TINY_VIT, hidden_size=width))
            for j, width in enumerate(widths)
        ]
        return PiipVisionConfig(branches=branches, deform_num_heads=4)

    return build


# Quickstart towers (random weights, trained from scratch on the synthetic scenes): branch 1 a CLIP-shaped ViT
# at 64 pixels, branch 2 a three-stage ConvNeXt at 128 (stride-4 stem, so it sees full-resolution detail), both
# ending on an 8×8 grid (64 visual tokens). ``demo-clip_96`` is that ViT alone at the highest resolution whose
# FLOPs are at least the pyramid's (the pyramid-vs-single experiment, docs/pyramid_vs_single.md).
DEMO_CLIP = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, patch_size=8,
                 image_size=64, hidden_act="quick_gelu")  # fmt: skip
DEMO_CONVNEXT = dict(hidden_sizes=[16, 32, 64], depths=[1, 1, 2], layer_scale_init_value=1.0)


def _demo_convnext_clip() -> PiipVisionConfig:
    return PiipVisionConfig(
        branches=[
            BranchConfig("clip", "clip", 64, [[0, 1], [2, 3]], DEMO_CLIP),
            BranchConfig("convnext", "convnext", 128, [[0, 2], [3, 5]], DEMO_CONVNEXT),
        ],
        deform_num_heads=4,
    )


TOWER_PRESETS: dict[str, Callable[[], PiipVisionConfig]] = {
    # Released PIIP-LLaVA towers (the 7B/13B suffix names the LLM the tower was trained with).
    "piip-llava_clip-bl_512-256_7B": _clip_bl_512_256,
    "piip-llava_clip-bl_512-448_7B": _clip_bl_512_448,
    "piip-llava_clip-bl_512-448_13B": _clip_bl_512_448,
    "piip-llava_convnext-b_clip-l_640-224_7B": _convnext_clip_l("b", 640, 224, 2),
    "piip-llava_convnext-b_clip-l_1024-336_7B": _convnext_clip_l("b", 1024, 336, 12),
    "piip-llava_convnext-b_clip-l_1024-336_13B": _convnext_clip_l("b", 1024, 336, 24),
    "piip-llava_convnext-l_clip-l_1024-336_7B": _convnext_clip_l("l", 1024, 336, 12),
    "piip-llava_convnext-l_clip-l_1024-336_13B": _convnext_clip_l("l", 1024, 336, 24),
    "piip-llava-plus_convnext-l_clip-l_1024-336_7B": _convnext_clip_l("l", 1024, 336, 12),
    # LLaVA-1.5 baseline: one CLIP-L/14 branch at 336.
    "llava-1.5_clip-l_336": _single(BranchConfig("clip-l", "clip", 336, [[0, 23]], dict(CLIP_L14_336))),
    # Perception backbones (plain-ViT branches, global attention), resolutions largest image first.
    "piip-tsb_1120-896-448": _perception("TSB", [448, 896, 1120]),
    "piip-tsb_1568-1120-672": _perception("TSB", [672, 1120, 1568]),
    "piip-sbl_1120-672-448": _perception("SBL", [448, 672, 1120]),
    "piip-sbl_1568-896-672": _perception("SBL", [672, 896, 1568]),
    "piip-tsbl_1344-896-672-448": _perception("TSBL", [448, 672, 896, 1344]),
    "piip-tsbl_1792-1568-1120-448": _perception("TSBL", [448, 1120, 1568, 1792]),
    # Tiny towers for tests.
    "tiny-clip-2branch": _tiny_clip_2branch,
    "tiny-convnext-clip": _tiny_convnext_clip,
    "tiny-siglip-clip": _tiny_clip_siglip,
    "tiny-vit-3branch": _tiny_multi(3),
    "tiny-vit-4branch": _tiny_multi(4),
    # Quickstart towers.
    "demo-convnext-clip_128-64": _demo_convnext_clip,
    "demo-clip_96": _single(BranchConfig("clip", "clip", 96, [[0, 3]], DEMO_CLIP)),
}


def get_tower_config(name: str) -> PiipVisionConfig:
    """A fresh config for the preset ``name``."""
    if name not in TOWER_PRESETS:
        raise ValueError(f"unknown tower preset {name!r}; valid presets: {', '.join(TOWER_PRESETS)}")
    return TOWER_PRESETS[name]()
