"""Our single-branch baseline → ``transformers``' ``LlavaForConditionalGeneration`` (docs/design.md#checkpoint-formats).

The baseline is LLaVA-1.5's math: one CLIP branch run up to ``feature_layer`` with its CLS token, CLS dropped, an
``mlp2x_gelu`` projector. In Llava terms: ``vision_feature_layer = feature_layer``, strategy ``default``. Our
``<image>`` is already a real token in an embedding padded to a multiple of 64 (added on the way in by ``--from``
conversions or ``build``), so the vocabulary and embeddings carry over unchanged. ``CLIPVisionModel`` also has a
``post_layernorm`` that Llava never applies to the features; it is written as the identity.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
from transformers.image_utils import PILImageResampling
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from piip_llava.model.configuration_piip_llava import PiipLlavaConfig
from piip_llava.model.conversation import chat_template
from piip_llava.model.processing_piip_llava import PiipLlavaProcessor
from piip_llava.model.vision.weights import read_state_dict

from .common import Rule, convert_state, expected_shapes, map_keys, save_model_weights, write_report

TOWER = r"model\.vision_tower\.branches\.0\."
EXPORT_RULES = [
    Rule(TOWER + r"layers\.(.+)", r"model.vision_tower.encoder.layers.\1"),
    Rule(TOWER + r"((?:embeddings|pre_layrnorm)\..+)", r"model.vision_tower.\1"),
    Rule(r"model\.multi_modal_projector\.(linear_[12]\.(?:weight|bias))", r"model.multi_modal_projector.\1"),
    Rule(r"model\.language_model\.(.+)", r"model.language_model.\1"),
    Rule(r"lm_head\.weight", "lm_head.weight"),
]


def hf_llava_config(config: PiipLlavaConfig) -> LlavaConfig:
    """The equivalent ``LlavaConfig``; raises ``ValueError`` for a model Llava cannot express."""
    vision = config.vision_config
    branch = vision.branches[0]
    clip_config = branch.hf_config()
    reasons = []
    if len(vision.branches) != 1 or branch.backbone_type != "clip" or not branch.use_cls_token:
        reasons.append("the tower must be one CLIP branch with its CLS token (the LLaVA-1.5 baseline)")
    elif branch.image_size != clip_config.image_size:
        reasons.append(f"the branch sees {branch.image_size}px but CLIP's position table is for "
                       f"{clip_config.image_size}px (Llava does not interpolate it)")  # fmt: skip
    if config.projector_type != "mlp2x_gelu":
        reasons.append(f"projector_type is {config.projector_type!r}; Llava's projector is mlp2x_gelu")
    if reasons:
        raise ValueError("cannot export to LlavaForConditionalGeneration: " + "; ".join(reasons))
    return LlavaConfig(
        vision_config=clip_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_id=config.image_token_id,
        image_seq_length=config.image_seq_length,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=vision.feature_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=config.tie_word_embeddings,
    )


def hf_llava_processor(config: PiipLlavaConfig, processor: PiipLlavaProcessor) -> LlavaProcessor:
    """Same tokenizer and chat template; ``LlavaImageProcessor`` with LLaVA's pad-to-square when ours pads."""
    size = config.image_size
    image_processor = LlavaImageProcessorPil(
        do_pad=config.image_aspect_ratio == "pad",
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=PILImageResampling.BICUBIC,
        image_mean=config.image_mean,
        image_std=config.image_std,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=processor.tokenizer,
        patch_size=config.vision_config.branches[0].patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLS, dropped again by "default": (S/P)² image tokens, as ours
        chat_template=chat_template(config.template, bos=False),  # LlavaProcessor's tokenizer call adds BOS
    )


def export_hf_llava(src: str | Path, dst: str | Path) -> None:
    """A saved baseline directory (``from_pretrained``-loadable) → a ``LlavaForConditionalGeneration`` directory."""
    config = PiipLlavaConfig.from_pretrained(src)
    hf_config = hf_llava_config(config)
    source = read_state_dict(src)
    key_map = map_keys(source, EXPORT_RULES)
    reference = source.get("model.vision_tower.branches.0.pre_layrnorm.weight", torch.empty(0))
    added = {
        "model.vision_tower.post_layernorm.weight": torch.ones_like(reference),
        "model.vision_tower.post_layernorm.bias": torch.zeros_like(reference),
    }
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(hf_config)
    state = convert_state(source, key_map, expected_shapes(model), str(src), added)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(dst)
    GenerationConfig.from_pretrained(src).save_pretrained(dst)
    save_model_weights(state, dst)
    hf_llava_processor(config, PiipLlavaProcessor.from_pretrained(src)).save_pretrained(dst)
    write_report(dst, str(src), key_map, added)
