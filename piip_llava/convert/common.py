"""Strict key mapping shared by the converters: every source key is renamed onto one of ours or dropped for a
stated reason; an unaccounted key, a missing key or a wrong shape is a ``ValueError`` that names them."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import save_file
from torch import nn

from piip_llava.model.vision.configuration_piip import BranchConfig, backbone_config_class
from piip_llava.model.vision.weights import HF_MODEL_TYPES, hf_to_branch_keys, read_state_dict

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
REPORT_NAME = "conversion.json"
NAMES_SHOWN = 20


@dataclass(frozen=True)
class Rule:
    """``pattern`` (a regex matched against the whole key) → ``target`` (an ``re`` template, ``\\1`` for groups).

    ``target=None`` drops the key; ``reason`` then says why the tensor is not needed.
    """

    pattern: str
    target: str | None
    reason: str = ""


@dataclass
class KeyMap:
    """Where each source key goes: ``renamed[source] = ours``, ``dropped[source] = reason``, or ``unexpected``."""

    renamed: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)

    def update(self, other: KeyMap, source_prefix: str = "", target_prefix: str = "") -> None:
        """Add ``other``'s keys, prefixing its source and target names."""
        self.renamed.update({source_prefix + s: target_prefix + t for s, t in other.renamed.items()})
        self.dropped.update({source_prefix + s: reason for s, reason in other.dropped.items()})
        self.unexpected += [source_prefix + s for s in other.unexpected]


def map_keys(keys: Iterable[str], rules: Sequence[Rule]) -> KeyMap:
    """The first rule whose pattern matches a key decides; keys that no rule matches are ``unexpected``."""
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    key_map = KeyMap()
    for key in keys:
        for pattern, rule in compiled:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            if rule.target is None:
                key_map.dropped[key] = rule.reason
            else:
                key_map.renamed[key] = match.expand(rule.target)
            break
        else:
            key_map.unexpected.append(key)
    return key_map


def split_prefix(keys: Iterable[str], prefix: str) -> tuple[list[str], list[str]]:
    """``(keys under prefix, with it removed; the other keys)``."""
    inside, outside = [], []
    for key in keys:
        (inside if key.startswith(prefix) else outside).append(key)
    return [key[len(prefix) :] for key in inside], outside


BRANCH_DROPS = [
    Rule(r"(vision_model\.)?post_layernorm\.(weight|bias)", None, "CLIP post_layernorm (features are read before it)"),
    Rule(r"(vision_model\.)?embeddings\.position_ids", None, "CLIP position_ids buffer (rebuilt on load)"),
    Rule(r"head\..+", None, "ConvNeXt classifier head (unused by PIIP)"),
]


def branch_key_map(branch: BranchConfig, keys: Iterable[str]) -> KeyMap:
    """One backbone's keys (HF CLIP names with or without ``vision_model.``, or timm ConvNeXt names with the layer
    scale as ``gamma`` or ``weight``) → the branch module's names, via the loader in ``vision/weights.py``."""
    key_map = map_keys(keys, BRANCH_DROPS)
    kept, key_map.unexpected = key_map.unexpected, []
    # The name converters only move values between keys, so running them on {key: key} gives the rename table.
    table = hf_to_branch_keys(branch, {key: key for key in kept})
    key_map.renamed = {source: target for target, source in table.items()}
    key_map.unexpected = [key for key in kept if key not in key_map.renamed]
    return key_map


# The fields of a backbone's HF config that fix its architecture (what a BranchConfig's ``backbone`` holds).
ARCHITECTURE_FIELDS = {
    "clip": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
             "image_size", "patch_size", "hidden_act", "layer_norm_eps"),
    "convnext": ("num_channels", "patch_size", "hidden_sizes", "depths", "hidden_act", "layer_scale_init_value"),
}  # fmt: skip


def hf_backbone_config(backbone_type: str, source: str | Path | Mapping, name: str) -> dict:
    """A branch's architecture from a Hugging Face config: a local directory, a ``config.json`` file or the dict.

    A full CLIP (image-text) config gives its ``vision_config``. ``name`` says where the source came from in errors.
    """
    if isinstance(source, Mapping):
        values = dict(source)
    else:
        path = Path(source)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(
                f"{name}: {str(source)!r} is not a local HF config directory or JSON file (nothing is downloaded); "
                f"give the branch's config directory or an inline config dict"
            )
        values = json.loads(path.read_text())
    values = values.get("vision_config", values)
    model_type = values.get("model_type")
    if model_type is not None and model_type not in HF_MODEL_TYPES[backbone_type]:
        raise ValueError(f"{name}: model_type {model_type!r} is not a {backbone_type} config")
    fields = ARCHITECTURE_FIELDS[backbone_type]
    config = backbone_config_class(backbone_type)(**{k: v for k, v in values.items() if k in fields})
    return {field: getattr(config, field) for field in fields}


def load_source(source: str | Path | Mapping[str, torch.Tensor]) -> StateDict:
    """A state dict given as one, or read from a weights file or a (possibly sharded) checkpoint directory."""
    return dict(source) if isinstance(source, Mapping) else read_state_dict(source)


def expected_shapes(module: nn.Module) -> dict[str, torch.Size]:
    """Parameter and persistent-buffer shapes of a module (build it on ``meta`` to skip the initialisation)."""
    return {key: tensor.shape for key, tensor in module.state_dict().items()}


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:NAMES_SHOWN])
    return shown + (f" … ({len(keys)} in all)" if len(keys) > NAMES_SHOWN else "")


def convert_state(
    source: Mapping[str, torch.Tensor],
    key_map: KeyMap,
    expected: Mapping[str, torch.Size],
    what: str,
    added: Mapping[str, torch.Tensor] | None = None,
) -> StateDict:
    """Rename ``source`` by ``key_map`` (plus ``added`` tensors) and check it against the model's ``expected`` keys.

    Raises:
        ValueError: listing every unaccounted source key, missing key, key the model lacks and shape mismatch.
    """
    state = {target: source[key] for key, target in key_map.renamed.items()}
    state.update(added or {})
    origin = {target: key for key, target in key_map.renamed.items()}
    problems = []
    if key_map.unexpected:
        problems.append(
            f"unexpected source keys (neither used nor a known unused tensor): {_names(key_map.unexpected)}"
        )
    duplicates = [target for target, count in Counter(key_map.renamed.values()).items() if count > 1]
    if duplicates:
        problems.append(f"several source keys map onto: {_names(duplicates)}")
    missing = set(expected) - set(state)
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    extra = set(state) - set(expected)
    if extra:
        problems.append(f"keys the model does not have: {_names(f'{origin.get(k, k)} -> {k}' for k in extra)}")
    mismatched = [
        f"{origin.get(k, k)}: {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k]
    ]
    if mismatched:
        problems.append(f"shape mismatches: {_names(mismatched)}")
    if problems:
        raise ValueError(f"{what} does not convert:\n  " + "\n  ".join(problems))
    return state


def save_model_weights(state: Mapping[str, torch.Tensor], directory: str | Path) -> None:
    """``model.safetensors`` (sharded with an index above 5 GB), as ``save_pretrained`` writes it."""
    save_torch_state_dict(dict(state), directory, metadata={"format": "pt"})


def save_weights_file(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, str(path), metadata={"format": "pt"})


def write_report(directory: str | Path, source: str, key_map: KeyMap, added: Iterable[str] = ()) -> None:
    """``conversion.json``: the source, how many tensors were used, and every dropped key with its reason."""
    report = {
        "source": source,
        "converted": len(key_map.renamed),
        "added": sorted(added),
        "dropped": dict(sorted(key_map.dropped.items())),
    }
    Path(directory, REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    reasons = Counter(key_map.dropped.values())
    logger.info("converted %d tensors from %s", len(key_map.renamed), source)
    for reason, count in sorted(reasons.items()):
        logger.info("dropped %d unused tensors: %s", count, reason)
