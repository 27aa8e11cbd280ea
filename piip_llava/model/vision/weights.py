"""Loading pretrained branch weights from local Hugging Face directories (docs/design.md#branches).

A branch directory is what ``save_pretrained`` writes (``model.safetensors``, sharded safetensors with an
index, or ``pytorch_model.bin``) for ``CLIPVisionModel`` / ``CLIPModel``, ``ViTModel``, ``ConvNextModel`` /
``ConvNextForImageClassification``, or a timm ConvNeXt state dict (``stem.0.weight`` …), which is converted.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, CLIPVisionModel, ConvNextModel, SiglipVisionModel, ViTModel

from .configuration_piip import BranchConfig

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def read_state_dict(directory: str | Path, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint directory (single file or sharded index) or of a single weights file.

    With ``prefixes``, only keys starting with one of them are read when a file holds any (only the shards that
    hold them, and only those tensors of a safetensors file), else everything: a stage-1 projector is found in a
    sharded 7B checkpoint without reading the LLM.
    """
    path = Path(directory)
    if path.is_file():
        return _read_file(path, prefixes)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            wanted = [key for key in weight_map if prefixes and key.startswith(prefixes)]
            shards = sorted({weight_map[key] for key in wanted} if wanted else set(weight_map.values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_file(path / shard, prefixes if wanted else None))
            return state
    for name in WEIGHT_FILES:
        if (path / name).exists():
            return _read_file(path / name, prefixes)
    raise FileNotFoundError(f"no weights in {path}: expected one of {', '.join(WEIGHT_FILES)} or a sharded index")


def _read_file(path: Path, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            if prefixes and any(key.startswith(prefixes) for key in keys):
                keys = [key for key in keys if key.startswith(prefixes)]
            return {key: handle.get_tensor(key) for key in keys}
    state = torch.load(path, map_location="cpu", weights_only=True)
    if prefixes and any(key.startswith(prefixes) for key in state):
        state = {key: value for key, value in state.items() if key.startswith(prefixes)}
    return state


def convert_timm_convnext(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt names → ``ConvNextModel`` names (``head.*`` and ``norm_pre`` dropped).

    ``stem.0/1`` → ``embeddings.patch_embeddings/layernorm``; ``stages.S.downsample.0/1`` →
    ``encoder.stages.S.downsampling_layer.0/1``; block ``conv_dw / norm / mlp.fc1 / mlp.fc2 / gamma`` →
    ``dwconv / layernorm / pwconv1 / pwconv2 / layer_scale_parameter`` (PIIP's patched ``weight`` too).
    """
    block_names = {"conv_dw": "dwconv", "norm": "layernorm", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2"}
    converted = {}
    for key, tensor in state.items():
        if key.startswith(("head.", "norm_pre.")):
            continue
        new_key = key.replace("stem.0.", "embeddings.patch_embeddings.").replace("stem.1.", "embeddings.layernorm.")
        new_key = re.sub(r"^stages\.(\d+)\.downsample\.", r"encoder.stages.\1.downsampling_layer.", new_key)
        match = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$", new_key)
        if match:
            stage, block, rest = match.groups()
            if rest in ("gamma", "weight"):
                rest = "layer_scale_parameter"
            else:
                for old, new in block_names.items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old) :]
                        break
            new_key = f"encoder.stages.{stage}.layers.{block}.{rest}"
        if new_key == key:
            raise ValueError(f"unexpected key {key!r} in a timm ConvNeXt state dict")
        converted[new_key] = tensor
    return converted


def _strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        if any(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    return state


def hf_to_branch_keys(branch: BranchConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face (or timm ConvNeXt) state dict onto the branch module's parameter names.

    Keys of unused modules (CLIP ``post_layernorm``, ViT ``layernorm``/``pooler``, ConvNeXt final ``layernorm``,
    text towers, heads) are dropped.
    """
    if branch.backbone_type == "convnext":
        if "stem.0.weight" in state:
            state = convert_timm_convnext(state)
        state = _strip_prefix(state, ("convnext.", "model."))
        block_index = _convnext_block_index(branch)
        mapped = {}
        for key, value in state.items():
            if key.startswith("embeddings."):
                mapped[key] = value
                continue
            match = re.match(r"^encoder\.stages\.(\d+)\.(downsampling_layer|layers)\.(\d+)\.(.+)$", key)
            if not match:
                continue
            stage, kind, position, rest = int(match[1]), match[2], int(match[3]), match[4]
            if kind == "downsampling_layer":
                mapped[f"blocks.{block_index[(stage, 'down')]}.{position}.{rest}"] = value
            else:
                mapped[f"blocks.{block_index[(stage, position)]}.{rest}"] = value
        return mapped
    prefix = ("vision_model.",) if branch.backbone_type in ("clip", "siglip") else ("vit.", "deit.", "model.")
    state = _strip_prefix(state, prefix)
    mapped = {}
    for key, value in state.items():
        if key.startswith("embeddings.") or key.startswith("pre_layrnorm."):
            mapped[key] = value
        elif key.startswith(("encoder.layers.", "encoder.layer.")):  # transformers 4 layout
            mapped["layers." + key.split(".", 2)[2]] = value
        elif key.startswith("layers."):  # transformers 5 layout
            mapped[key] = value
    return mapped


def _convnext_block_index(branch: BranchConfig) -> dict[tuple[int, int | str], int]:
    index: dict[tuple[int, int | str], int] = {}
    position = 0
    for stage, depth in enumerate(branch.convnext_depths()):
        if stage > 0:
            index[(stage, "down")] = position
            position += 1
        for block in range(depth):
            index[(stage, block)] = position
            position += 1
    return index


HF_MODEL_CLASSES = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel, "vit": ViTModel, "convnext": ConvNextModel}
HF_MODEL_TYPES = {
    "clip": ("clip", "clip_vision_model"),
    "siglip": ("siglip", "siglip_vision_model"),
    "vit": ("vit", "deit"),
    "convnext": ("convnext",),
}


def read_branch_state(branch: BranchConfig, directory: str | Path) -> dict[str, torch.Tensor]:
    """A branch's weights from a local directory, under the branch module's parameter names.

    A Hugging Face directory (``config.json`` of a matching ``model_type``) goes through ``from_pretrained``,
    so its own key conversions, shards and dtypes apply; anything else (a timm ConvNeXt, a bare weights file)
    is read as a raw state dict.
    """
    path = Path(directory)
    config_file = path / "config.json"
    if path.is_dir() and config_file.exists():
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type in HF_MODEL_TYPES[branch.backbone_type]:
            config = AutoConfig.from_pretrained(path)
            if model_type in ("clip", "siglip"):  # a full image-text checkpoint: take its vision tower
                config = config.vision_config
            extra = {"add_pooling_layer": False} if branch.backbone_type == "vit" else {}
            model = HF_MODEL_CLASSES[branch.backbone_type].from_pretrained(path, config=config, **extra)
            return hf_to_branch_keys(branch, model.state_dict())
    return hf_to_branch_keys(branch, read_state_dict(path))


def load_branch_weights(branch_module: nn.Module, branch: BranchConfig, directory: str | Path) -> None:
    """Load a local checkpoint into one branch; every branch parameter must be present with its shape."""
    state = read_branch_state(branch, directory)
    expected = branch_module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(
            f"branch '{branch.name}': {directory} lacks {len(missing)} weights (first: {missing[:3]}); "
            f"is it a {branch.backbone_type} checkpoint of this shape?"
        )
    mismatched = [k for k in expected if expected[k].shape != state[k].shape]
    if mismatched:
        key = mismatched[0]
        raise ValueError(
            f"branch '{branch.name}': {len(mismatched)} weights in {directory} have other shapes, e.g. {key}: "
            f"checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        )
    branch_module.load_state_dict({k: state[k] for k in expected}, strict=True)
    logger.info("loaded branch '%s' from %s", branch.name, directory)


def load_tower_weights(tower: nn.Module, branch_dirs: dict[str, str | Path]) -> None:
    """``branch_dirs`` maps branch names (as in the config) to local checkpoint directories."""
    branches = {config.name: (module, config) for module, config in zip(tower.branches, tower.config.branches)}
    unknown = sorted(set(branch_dirs) - set(branches))
    if unknown:
        raise ValueError(f"unknown branch names {unknown}; this tower has branches {list(branches)}")
    for name, directory in branch_dirs.items():
        module, config = branches[name]
        load_branch_weights(module, config, directory)


def parse_branch_weights(specs: list[str]) -> dict[str, str]:
    """``["clip-l=/ckpt/a", "clip-b=/ckpt/b"]`` → ``{"clip-l": "/ckpt/a", ...}``."""
    parsed = {}
    for spec in specs:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise ValueError(f"--branch-weights expects NAME=DIR, got {spec!r}")
        parsed[name] = directory
    return parsed
