"""LoRA on the LLM with PEFT; the other trainable parts are saved whole (``modules_to_save``); merging."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoProcessor

# PEFT matches modules_to_save by name suffix; these names occur once in the model.
PART_MODULE_NAMES = {
    "projector": "multi_modal_projector",
    "vision_branches": "branches",
    "interactions": "interactions",
}


def wrap_lora(model, parts: list[str], r: int, alpha: int, dropout: float):
    """LoRA adapters on every Linear of the LLM; the non-LLM ``parts`` train in full and are saved alongside."""
    from peft import LoraConfig, get_peft_model

    linear_names = sorted(
        {
            name.split(".")[-1]
            for name, m in model.model.language_model.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
    )
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=rf"model\.language_model\..*\.({'|'.join(linear_names)})",
        modules_to_save=[PART_MODULE_NAMES[part] for part in parts if part != "llm"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def merge_lora(adapter_dir: str | Path, output: str | Path, base: str | Path | None = None) -> Path:
    """Load the base model, apply the adapter run in ``adapter_dir``, merge, and save a plain PIIP-LLaVA."""
    from piip_llava.model import PiipLlavaForConditionalGeneration
    from piip_llava.model.loading import merge_adapter

    adapter_dir = Path(adapter_dir)
    base = base or json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    merged = merge_adapter(PiipLlavaForConditionalGeneration.from_pretrained(base), adapter_dir)
    merged.save_pretrained(output)
    AutoProcessor.from_pretrained(
        adapter_dir if (adapter_dir / "processor_config.json").exists() else base
    ).save_pretrained(output)
    return Path(output)
