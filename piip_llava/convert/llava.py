"""Checkpoints in the original LLaVA layout → ours (docs/design.md#checkpoint-formats).

A LLaVA checkpoint directory holds ``config.json`` (a ``LlamaConfig`` plus LLaVA's ``mm_*`` fields), the tokenizer
and the weights: the LLM under ``model.*`` / ``lm_head.weight``, the projector under ``model.mm_projector.*``, the
vision tower (if saved at all) under ``model.vision_tower.vision_tower.*``. LLaVA-1.5 does not save its CLIP tower:
it comes from a local CLIP directory. The official PIIP-LLaVA code saves the same layout (``official_piip.py``).

The converted directory loads with ``from_pretrained``: ``<image>`` becomes a real special token (LLaVA used the
sentinel id −200 instead), the embeddings grow to a multiple of 64 rows, and the new rows are the mean of the old
ones, so the new tokens' logits are the mean logit and never change a greedy choice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, GenerationConfig, PreTrainedConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from piip_llava.model.builder import prepare_tokenizer
from piip_llava.model.configuration_piip_llava import PiipLlavaConfig
from piip_llava.model.modeling_piip_llava import PiipLlavaForConditionalGeneration
from piip_llava.model.processing_piip_llava import IMAGE_TOKEN, build_processor
from piip_llava.model.vision.configuration_piip import BranchConfig, PiipVisionConfig
from piip_llava.model.vision.weights import read_branch_state

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
    save_model_weights,
    split_prefix,
    write_report,
)

# LLaVA's model classes → the LLM family they wrap.
LLAVA_ARCHITECTURES = {"LlavaLlamaForCausalLM": "llama", "LlavaMistralForCausalLM": "mistral"}
# LLaVA's multimodal and training fields of config.json (besides ``mm_*``): not part of the LLM's config.
LLAVA_FIELDS = ("architectures", "model_type", "_name_or_path", "transformers_version", "torch_dtype", "use_mm_proj",
                "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "tune_mm_vision_resampler", "unfreeze_mm_vision_tower",
                "image_aspect_ratio", "image_grid_pinpoints", "tokenizer_model_max_length", "tokenizer_padding_side",
                "vision_tower")  # fmt: skip
IMAGE_ASPECT_RATIOS = ("square", "pad")
TOWER_PREFIX = "model.vision_tower.vision_tower."
PROJECTOR_PREFIX = "model.mm_projector."
EMBEDDING_KEYS = ("model.embed_tokens.weight", "lm_head.weight")
LLM_RULES = [
    Rule(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", None, "rotary inv_freq buffer (recomputed)"),
    Rule(r"model\.((?:embed_tokens|layers|norm)\..+)", r"model.language_model.\1"),
    Rule(r"lm_head\.weight", "lm_head.weight"),
]
PROJECTOR_RULES = {  # LLaVA's nn.Sequential indices → MlpProjector names
    "mlp2x_gelu": [Rule(r"0\.(weight|bias)", r"linear_1.\1"), Rule(r"2\.(weight|bias)", r"linear_2.\1")],
    "linear": [Rule(r"(weight|bias)", r"linear_1.\1")],
}


@dataclass
class LlavaCheckpoint:
    """A checkpoint directory in LLaVA's layout: ``config.json``, tokenizer files and (sharded) weights."""

    directory: Path
    config: dict
    state: StateDict

    @classmethod
    def read(cls, directory: str | Path) -> LlavaCheckpoint:
        directory = Path(directory)
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} not found: give a LLaVA checkpoint directory")
        config = json.loads(config_file.read_text())
        architecture = (config.get("architectures") or [None])[0]
        if architecture not in LLAVA_ARCHITECTURES:
            raise ValueError(
                f"{config_file}: architectures {config.get('architectures')} is not one of LLaVA's "
                f"{sorted(LLAVA_ARCHITECTURES)}; a transformers Llava checkpoint needs no conversion"
            )
        return cls(directory, config, load_source(directory))

    def text_config(self, vocab_size: int) -> PreTrainedConfig:
        """The LLM's config: config.json without LLaVA's fields."""
        fields = {k: v for k, v in self.config.items() if k not in LLAVA_FIELDS and not k.startswith("mm_")}
        if fields.get("rope_scaling", "set") is None:  # transformers 4 wrote null; 5 deprecates the field
            del fields["rope_scaling"]
        fields["vocab_size"] = vocab_size
        return AutoConfig.for_model(LLAVA_ARCHITECTURES[self.config["architectures"][0]], **fields)

    @property
    def image_aspect_ratio(self) -> str:
        value = self.config.get("image_aspect_ratio", "square")  # LLaVA's training default
        if value not in IMAGE_ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio={value!r} (LLaVA-1.6 anyres?) is not one of {IMAGE_ASPECT_RATIOS}")
        return value


def vocabulary_rows(tokenizer_size: int, embedding_rows: int) -> int:
    """Rows after adding tokens: unchanged if they fit, else rounded up to a multiple of 64 (as ``build`` does)."""
    return embedding_rows if tokenizer_size <= embedding_rows else -(-tokenizer_size // 64) * 64


def pad_vocabulary(state: StateDict, rows: int) -> None:
    """Grow the LLaVA-layout embedding and LM head to ``rows``; new rows are the mean row (module docstring)."""
    for key in EMBEDDING_KEYS:
        weight = state.get(key)
        if weight is not None and weight.shape[0] < rows:
            mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
            state[key] = torch.cat([weight, mean.expand(rows - weight.shape[0], -1)])


def save_llava_layout(
    checkpoint: LlavaCheckpoint,
    dst: str | Path,
    multimodal: KeyMap,
    config_kwargs: dict,
    template: str,
    added: Mapping[str, torch.Tensor] | None = None,
) -> KeyMap:
    """Convert a LLaVA-layout checkpoint whose vision keys the caller mapped (``multimodal``); the rest is the LLM.

    Writes a ``from_pretrained`` directory: config, weights, generation config, tokenizer, processor, chat template.
    """
    handled = set(multimodal.renamed) | set(multimodal.dropped) | set(multimodal.unexpected)
    key_map = map_keys([key for key in checkpoint.state if key not in handled], LLM_RULES)
    key_map.update(multimodal)
    tokenizer = prepare_tokenizer(checkpoint.directory, template)
    rows = vocabulary_rows(len(tokenizer), checkpoint.config["vocab_size"])
    pad_vocabulary(checkpoint.state, rows)
    config = PiipLlavaConfig(
        text_config=checkpoint.text_config(rows),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_aspect_ratio=checkpoint.image_aspect_ratio,
        template=template,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **config_kwargs,
    )
    with torch.device("meta"):
        model = PiipLlavaForConditionalGeneration(config)
    state = convert_state(checkpoint.state, key_map, expected_shapes(model), str(checkpoint.directory), added)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(dst)
    generation_config = GenerationConfig.from_model_config(config)
    generation_config.pad_token_id = tokenizer.pad_token_id
    generation_config.save_pretrained(dst)
    save_model_weights(state, dst)
    build_processor(config, tokenizer).save_pretrained(dst)
    write_report(dst, str(checkpoint.directory), key_map, added or {})
    return key_map


def llava_vision_config(checkpoint: LlavaCheckpoint, clip_config: dict) -> PiipVisionConfig:
    """LLaVA-1.5's tower as a one-branch PIIP config: the whole CLIP, features from ``mm_vision_select_layer``."""
    config = checkpoint.config
    if config.get("mm_vision_select_feature", "patch") != "patch":
        raise ValueError(f"mm_vision_select_feature={config['mm_vision_select_feature']!r}: only 'patch' is supported")
    if config.get("mm_patch_merge_type", "flat") != "flat":
        raise ValueError(f"mm_patch_merge_type={config['mm_patch_merge_type']!r}: only 'flat' (LLaVA-1.5) is supported")
    select_layer = config.get("mm_vision_select_layer", -1)  # LLaVA's default
    if select_layer >= 0:
        raise ValueError(f"mm_vision_select_layer={select_layer}: give a negative layer index (-2 in LLaVA-1.5)")
    layers = clip_config["num_hidden_layers"]
    branch = BranchConfig("clip", "clip", clip_config["image_size"], [[0, layers - 1]], clip_config)
    return PiipVisionConfig(branches=[branch], feature_layer=select_layer)


def clip_statistics(clip_dir: Path) -> tuple[list[float], list[float]]:
    """The CLIP directory's image mean/std (``preprocessor_config.json``), else OpenAI CLIP's."""
    processor_file = clip_dir / "preprocessor_config.json"
    if processor_file.is_file():
        values = json.loads(processor_file.read_text())
        return list(values["image_mean"]), list(values["image_std"])
    return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)


def convert_llava(src: str | Path, dst: str | Path, vision_tower: str | Path, template: str = "vicuna_v1") -> KeyMap:
    """An original LLaVA-1.5 checkpoint → our single-branch baseline.

    Args:
        src: the LLaVA checkpoint directory (``LlavaLlamaForCausalLM``, ``mm_projector.0/.2``).
        dst: output directory.
        vision_tower: local CLIP directory (``CLIPVisionModel`` / ``CLIPModel``): the tower's config, and its weights
            unless the checkpoint carries ``model.vision_tower.vision_tower.*`` itself.
        template: conversation template saved as the chat template.
    """
    checkpoint = LlavaCheckpoint.read(src)
    vision_tower = Path(vision_tower)
    vision_config = llava_vision_config(checkpoint, hf_backbone_config("clip", vision_tower, "--vision-tower"))
    branch = vision_config.branches[0]
    projector_type = checkpoint.config.get("mm_projector_type", "linear")  # LLaVA's default
    if projector_type not in PROJECTOR_RULES:
        raise ValueError(f"mm_projector_type={projector_type!r} is not one of {sorted(PROJECTOR_RULES)}")
    projector_keys, rest = split_prefix(checkpoint.state, PROJECTOR_PREFIX)
    multimodal = KeyMap()
    multimodal.update(map_keys(projector_keys, PROJECTOR_RULES[projector_type]), PROJECTOR_PREFIX,
                      "model.multi_modal_projector.")  # fmt: skip
    tower_keys, _ = split_prefix(rest, TOWER_PREFIX)
    added = None
    if tower_keys:  # a checkpoint that trained (and so saved) its tower
        multimodal.update(branch_key_map(branch, tower_keys), TOWER_PREFIX, "model.vision_tower.branches.0.")
    else:
        tower_state = read_branch_state(branch, vision_tower)
        added = {f"model.vision_tower.branches.0.{key}": value for key, value in tower_state.items()}
    image_mean, image_std = clip_statistics(vision_tower)
    config_kwargs = dict(vision_config=vision_config, projector_type=projector_type, image_mean=image_mean,
                         image_std=image_std)  # fmt: skip
    return save_llava_layout(checkpoint, dst, multimodal, config_kwargs, template, added)
