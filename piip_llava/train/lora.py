"""LoRA on the LLM with PEFT; the other trainable parts are saved whole (``modules_to_save``); merging."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoProcessor

from piip_llava.train.stages import part_modules


def modules_to_save(model, parts: list[str]) -> list[str]:
    """Full module names of the non-LLM ``parts``, for PEFT's ``modules_to_save``.

    PEFT matches these names by suffix and cannot wrap a ``ModuleList`` (the tower's ``branches`` and
    ``interactions``), so a list is named by its items (recursively); full paths keep ``branches`` of the tower
    apart from ``branches`` of the projector.
    """
    names = {id(module): name for name, module in model.named_modules()}
    containers = (torch.nn.ModuleList, torch.nn.ModuleDict)

    def leaves(module):
        return (
            [leaf for child in module.children() for leaf in leaves(child)]
            if isinstance(module, containers)
            else [module]
        )

    handles = part_modules(model)
    return [names[id(leaf)] for part in parts if part != "llm" for module in handles[part] for leaf in leaves(module)]


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
        modules_to_save=modules_to_save(model, parts) or None,
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
