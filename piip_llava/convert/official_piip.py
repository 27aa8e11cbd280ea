"""Official PIIP-LLaVA checkpoints (OpenGVLab/PIIP ``llava/``) → ours (docs/design.md#checkpoint-formats).

Three inputs:

- a stage-2 checkpoint directory in LLaVA's layout (``llava.py``), with the tower under
  ``model.vision_tower.vision_tower.*`` and the two-branch projector under ``model.mm_projector.*``;
- a stage-1 ``mm_projector.bin`` (the projector alone), to start a stage-2 run from;
- a tower state dict and a projector state dict without those prefixes (``--tower-only``).

The tower's shape comes from a preset or from the official config (the ``model`` dict of ``llava/configs/*.py`` as
JSON), whose branches take their architecture from Hugging Face configs (:func:`official_vision_config`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from piip_llava.model.projector import PiipProjector
from piip_llava.model.vision.configuration_piip import BranchConfig, PiipVisionConfig
from piip_llava.model.vision.modeling_piip import PiipVisionModel

from .common import (
    KeyMap,
    Rule,
    StateDict,
    branch_key_map,
    convert_state,
    expected_shapes,
    hf_backbone_config,
    load_source,
    map_keys,
    save_weights_file,
    split_prefix,
    write_report,
)
from .llava import PROJECTOR_PREFIX, TOWER_PREFIX, LlavaCheckpoint, save_llava_layout

OFFICIAL_BACKBONES = {"clip_hf": "clip", "convnext_timm": "convnext"}
MODEL_CLASSES = {"2branch_v1": ("clip_hf", "clip_hf"), "2branch_mix": ("clip_hf", "convnext_timm")}
MODULE_NAMES = {"clip": "clip_model", "convnext": "convnext_model"}  # the official branch wrapper's attribute
# Settings of the official code that this port implements; a config asking for others is refused.
SUPPORTED_SETTINGS = {"with_cffn": True, "interact_attn_type": "deform", "use_branch_merging": False}
SUPPORTED_PROJECTOR = {"type": "separate_2branch_v1", "norm": "gn"}
OFFICIAL_NORM_GROUPS = 32  # TwoBranchMLP: GroupNorm(32, D_llm)
STAGE1_PROJECTOR = "mm_projector.bin"
PROJECTOR_FILE = "mm_projector.safetensors"
OUR_PROJECTOR_PREFIX = "model.multi_modal_projector."

_UNIT = r"interactions\.(\d+)\.interaction_units_12\."
# branch2to1_*: branch 2 projected to branch 1's width, updating branch 1 (the larger model); branch1to2_*: reverse.
_DIRECTIONS = {"branch2to1": ("small_to_large", "update_large"), "branch1to2": ("large_to_small", "update_small")}
_INJECTOR_PARTS = {
    "ca_weight": "attention_gate", "cffn_weight": "ffn_gate", "query_norm": "query_norm", "feat_norm": "feature_norm",
    "attn.sampling_offsets": "attention.sampling_offsets", "attn.attention_weights": "attention.attention_weights",
    "attn.value_proj": "attention.value_proj", "attn.output_proj": "attention.output_proj", "ffn.fc1": "ffn.fc1",
    "ffn.dwconv.dwconv": "ffn.dwconv", "ffn.fc2": "ffn.fc2", "ffn_norm": "ffn_norm",
}  # fmt: skip
INTERACTION_RULES = [
    Rule(rf"{_UNIT}{direction}_proj\.(weight|bias)", rf"interactions.\1.0.{projection}.\2")
    for direction, (projection, _) in _DIRECTIONS.items()
] + [
    Rule(
        rf"{_UNIT}{direction}_injector\.{re.escape(official)}(\.weight|\.bias)?",
        rf"interactions.\1.0.{update}.{ours}\2",
    )
    for direction, (_, update) in _DIRECTIONS.items()
    for official, ours in _INJECTOR_PARTS.items()
]
# A TwoBranchMLP branch is nn.Sequential(permute, Linear, permute, GroupNorm, GELU, permute, Linear).
_PROJECTOR_LAYERS = {"1": "linear_1", "3": "norm", "6": "linear_2"}


def _field(mapping: Mapping, key: str, where: str):
    if key not in mapping:
        raise ValueError(f"official config: {where} has no {key!r}")
    return mapping[key]


def official_vision_config(
    model: Mapping, branch_configs: Mapping[str, str | Path | Mapping] | None = None
) -> PiipVisionConfig:
    """The tower of an official config.

    Args:
        model: the ``model`` dict of an official ``llava/configs/*.py`` (a dict holding it under ``model`` works too).
        branch_configs: per branch (``branch1``, ``branch2``), where its Hugging Face config is: a local directory,
            a ``config.json`` file, or the config as a dict. Default: the branch's ``pretrained`` entry, which must
            then be a local directory.
    """
    model = model.get("model", model)
    backbone = _field(model, "backbone", "model")
    for key, value in SUPPORTED_SETTINGS.items():
        if backbone.get(key, value) != value:
            raise ValueError(f"official config: backbone.{key}={backbone[key]!r} is not supported (only {value!r})")
    for key, value in SUPPORTED_PROJECTOR.items():
        if model.get("projector", SUPPORTED_PROJECTOR).get(key) != value:
            raise ValueError(f"official config: projector.{key} must be {value!r}, got {model['projector']}")
    model_cls = _field(backbone, "model_cls", "backbone")
    if model_cls not in MODEL_CLASSES:
        raise ValueError(f"official config: backbone.model_cls={model_cls!r} is not one of {sorted(MODEL_CLASSES)}")
    branches = []
    for index, official_type in enumerate(MODEL_CLASSES[model_cls], start=1):
        name = f"branch{index}"
        branch = _field(backbone, name, "backbone")
        if branch.get("model_type") != official_type:
            raise ValueError(f"official config: {name}.model_type must be {official_type!r} for {model_cls}")
        source = (branch_configs or {}).get(name, branch.get("pretrained"))
        branches.append(_official_branch(name, branch, OFFICIAL_BACKBONES[official_type], source))
    return PiipVisionConfig(
        branches=branches,
        deform_num_heads=_field(backbone, "deform_num_heads", "backbone"),
        deform_num_points=_field(backbone, "n_points", "backbone"),
        deform_ratio=_field(backbone, "deform_ratio", "backbone"),
        cffn_ratio=_field(backbone, "cffn_ratio", "backbone"),
        interaction_drop_path_rate=_field(backbone, "interaction_drop_path_rate", "backbone"),
    )


def _official_branch(name: str, branch: Mapping, backbone_type: str, hf_source) -> BranchConfig:
    if hf_source is None:
        raise ValueError(f"official config: {name} has no 'pretrained'; give the branch's HF config")
    config = BranchConfig(
        name,
        backbone_type,
        _field(branch, "img_size", name),
        _field(branch, "interaction_indexes", name),
        hf_backbone_config(backbone_type, hf_source, name),
        use_cls_token=branch.get("use_cls_token", True),  # every released config keeps the CLS token
    )
    if backbone_type == "clip":
        for key in ("patch_size", "pretrain_patch_size"):
            if branch.get(key, config.patch_size) != config.patch_size:
                raise ValueError(
                    f"official config: {name}.{key}={branch[key]} but the HF config has patch_size "
                    f"{config.patch_size} (patch-kernel resizing is not supported)"
                )
    elif list(branch.get("downsample_ratios", config.block_strides)) != config.block_strides:
        raise ValueError(
            f"official config: {name}.downsample_ratios={branch['downsample_ratios']} do not match the ConvNeXt "
            f"block strides {config.block_strides} of its HF config"
        )
    return config


def tower_key_map(config: PiipVisionConfig, keys: Iterable[str]) -> KeyMap:
    """Official tower keys (without ``model.vision_tower.vision_tower.``) → ``PiipVisionModel`` names."""
    if len(config.branches) != 2:
        raise ValueError(f"official PIIP-LLaVA towers have two branches; this config has {len(config.branches)}")
    key_map, rest = KeyMap(), list(keys)
    for index, branch in enumerate(config.branches):
        prefix = f"branch{index + 1}.{MODULE_NAMES[branch.backbone_type]}."
        inside, rest = split_prefix(rest, prefix)
        key_map.update(branch_key_map(branch, inside), prefix, f"branches.{index}.")
    key_map.update(map_keys(rest, INTERACTION_RULES))
    return key_map


def projector_key_map(config: PiipVisionConfig, keys: Iterable[str]) -> KeyMap:
    """Official ``TwoBranchMLP`` keys (without ``model.mm_projector.``) → ``PiipProjector`` names."""
    rules = [
        Rule(rf"branch{index + 1}\.{layer}\.(weight|bias)", rf"branches.{index}.{name}.\1")
        for index in range(len(config.branches))
        for layer, name in _PROJECTOR_LAYERS.items()
    ]
    return map_keys(keys, rules)


def convert_projector_state(state: StateDict, config: PiipVisionConfig, what: str) -> tuple[StateDict, KeyMap]:
    """Official projector tensors, with or without ``model.mm_projector.`` (all or none) → ``PiipProjector`` names."""
    prefix = PROJECTOR_PREFIX if any(key.startswith(PROJECTOR_PREFIX) for key in state) else ""
    keys, others = split_prefix(state, prefix)
    key_map = KeyMap(unexpected=others)
    key_map.update(projector_key_map(config, keys), prefix)
    first_linear = f"{prefix}branch1.1.weight"
    if first_linear not in state:
        raise ValueError(f"{what}: no {first_linear!r}; is it a PIIP-LLaVA (TwoBranchMLP) projector?")
    with torch.device("meta"):
        projector = PiipProjector(config.output_dims, state[first_linear].shape[0], OFFICIAL_NORM_GROUPS)
    return convert_state(state, key_map, expected_shapes(projector), what), key_map


def _save_projector(state: StateDict, dst: Path) -> None:
    """Our names under ``model.multi_modal_projector.``, as in a whole checkpoint: ``build --projector FILE`` and
    ``train --pretrain_projector FILE`` read it."""
    save_weights_file({OUR_PROJECTOR_PREFIX + key: value for key, value in state.items()}, dst / PROJECTOR_FILE)


def convert_piip_official(
    src: str | Path, dst: str | Path, vision_config: PiipVisionConfig, template: str = "vicuna_v1"
) -> KeyMap:
    """A stage-2 official checkpoint directory → a ``from_pretrained`` PIIP-LLaVA directory."""
    checkpoint = LlavaCheckpoint.read(src)
    tower_keys, rest = split_prefix(checkpoint.state, TOWER_PREFIX)
    projector_keys, _ = split_prefix(rest, PROJECTOR_PREFIX)
    multimodal = KeyMap()
    multimodal.update(tower_key_map(vision_config, tower_keys), TOWER_PREFIX, "model.vision_tower.")
    multimodal.update(projector_key_map(vision_config, projector_keys), PROJECTOR_PREFIX, OUR_PROJECTOR_PREFIX)
    config_kwargs = dict(vision_config=vision_config, projector_type="piip", projector_norm_groups=OFFICIAL_NORM_GROUPS)
    return save_llava_layout(checkpoint, dst, multimodal, config_kwargs, template)


def convert_official_projector(src: str | Path, dst: str | Path, vision_config: PiipVisionConfig) -> KeyMap:
    """A stage-1 ``mm_projector.bin`` (the file or its directory) → ``DST/mm_projector.safetensors``."""
    path = Path(src)
    path = path / STAGE1_PROJECTOR if path.is_dir() else path
    state, key_map = convert_projector_state(load_source(path), vision_config, str(path))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    _save_projector(state, dst)
    write_report(dst, str(path), key_map)
    return key_map


def convert_official_tower(
    tower: str | Path | Mapping[str, torch.Tensor],
    dst: str | Path,
    vision_config: PiipVisionConfig,
    projector: str | Path | Mapping[str, torch.Tensor] | None = None,
) -> KeyMap:
    """A tower state dict (and a projector state dict) → a ``PiipVisionModel.from_pretrained`` directory (and
    ``DST/mm_projector.safetensors``). The state dicts are files, checkpoint directories or in-memory dicts."""
    state = load_source(tower)
    key_map = tower_key_map(vision_config, state)
    with torch.device("meta"):
        model = PiipVisionModel(vision_config)
    converted = convert_state(state, key_map, expected_shapes(model), "the tower state dict")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    vision_config.save_pretrained(dst)
    save_weights_file(converted, dst / PiipVisionModel.WEIGHTS_NAME)
    if projector is not None:
        projector_state, projector_map = convert_projector_state(
            load_source(projector), vision_config, "the projector state dict"
        )
        _save_projector(projector_state, dst)
        key_map.update(projector_map, "projector:")
    write_report(dst, str(tower) if not isinstance(tower, Mapping) else "a state dict", key_map)
    return key_map
