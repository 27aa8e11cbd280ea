"""Assemble a PIIP-LLaVA from local parts: an LLM directory, a tower preset with branch checkpoints, and
optionally projector weights (e.g. a stage-1 ``mm_projector``). Nothing is downloaded.

The model skeleton is built on the ``meta`` device and its three parts are replaced by real modules, so a 7B
LLM is loaded once and never randomly initialised.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .configuration_piip_llava import PiipLlavaConfig
from .conversation import chat_template
from .modeling_piip_llava import PiipLlavaForConditionalGeneration
from .processing_piip_llava import IMAGE_TOKEN, PiipLlavaProcessor, build_processor
from .projector import build_projector
from .vision import PiipVisionModel, get_tower_config
from .vision.weights import load_tower_weights, read_state_dict

logger = logging.getLogger(__name__)

# Projector checkpoint names → ours: LLaVA's mlp2x_gelu ``mm_projector.{0,2}`` and HF Llava's ``linear_{1,2}``.
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.", "model.mm_projector.", "mm_projector.")


def load_projector_weights(projector: torch.nn.Module, path: str | Path) -> None:
    """Load a projector from a projector-only file (LLaVA's ``mm_projector.bin``, ours) or from a whole model's
    weights: a file or a directory, single-file or sharded (only the projector's keys are read)."""
    state = read_state_dict(path, PROJECTOR_PREFIXES)
    if any(key.startswith(PROJECTOR_PREFIXES) for key in state):
        state = {key: value for key, value in state.items() if key.startswith(PROJECTOR_PREFIXES)}
    renamed = {}
    for key, value in state.items():
        for prefix in PROJECTOR_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        renamed[re.sub(r"^0\.", "linear_1.", re.sub(r"^2\.", "linear_2.", key))] = value
    missing, unexpected = projector.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise ValueError(f"projector weights in {path} do not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")


def prepare_tokenizer(llm_dir: str | Path, template: str):
    """The LLM's tokenizer with ``<image>`` as a special token, a pad token, left padding and the chat template."""
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token  # LLaVA pads with unk
    tokenizer.padding_side = "left"
    tokenizer.chat_template = chat_template(template)
    return tokenizer


def assemble_model(
    tower: str,
    llm_dir: str | Path,
    branch_dirs: dict[str, str] | None = None,
    projector_path: str | Path | None = None,
    projector_type: str = "piip",
    template: str = "vicuna_v1",
    image_aspect_ratio: str = "pad",
) -> tuple[PiipLlavaForConditionalGeneration, PiipLlavaProcessor]:
    tokenizer = prepare_tokenizer(llm_dir, template)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir)
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    config = PiipLlavaConfig(
        vision_config=get_tower_config(tower),
        text_config=llm.config,
        projector_type=projector_type,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_aspect_ratio=image_aspect_ratio,
        template=template,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.device("meta"):
        model = PiipLlavaForConditionalGeneration(config)
    tower_module = PiipVisionModel(config.vision_config)
    load_tower_weights(tower_module, branch_dirs or {})
    projector = build_projector(config)
    if projector_path is not None:
        load_projector_weights(projector, projector_path)
    model.model.vision_tower = tower_module
    model.model.multi_modal_projector = projector
    model.model.language_model = llm.get_decoder()
    model.lm_head = llm.get_output_embeddings()
    still_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise RuntimeError(f"parameters left on meta after assembly: {still_meta[:5]}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    random_branches = [b.name for b in config.vision_config.branches if b.name not in (branch_dirs or {})]
    if random_branches:
        logger.warning("vision branches with random weights (no --branch-weights): %s", ", ".join(random_branches))
    return model.eval(), build_processor(config, tokenizer)
