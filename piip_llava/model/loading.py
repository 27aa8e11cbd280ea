"""Load a saved PIIP-LLaVA directory for inference, with defaults that fit the machine.

Every entry point that loads a model to answer questions (``eval run``, the serving worker, the API in local mode,
CLI chat, the lmms-eval plugin) goes through :func:`load_for_inference`, so ``--device auto`` / ``--dtype auto``
mean the same everywhere:

* device ``auto``: ``cuda`` when a CUDA device is visible, else ``cpu``;
* dtype ``auto``: ``bfloat16`` on a CUDA device that supports it (Ampere and newer), ``float16`` on older CUDA
  devices, ``float32`` on CPU (CPU half-precision matmuls are slow and lose accuracy).

The conversation template and image aspect mode come from the model's config (``template``,
``image_aspect_ratio``: written by ``piip-llava build`` and ``piip-llava train``); the processor is made to agree
with them, so the config is the one source of truth.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


def resolve_device(device: str | None = "auto") -> torch.device:
    """``auto``/``None`` → ``cuda`` if available else ``cpu``; anything else is passed to ``torch.device``."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible (torch {torch.__version__}); use cpu or auto")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``auto`` → bf16 on CUDA with bf16 support, fp16 on older CUDA, fp32 elsewhere; names map to torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    device = torch.device(device)
    if dtype in (None, "", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[dtype]


def apply_config_preprocessing(processor, config, aspect_ratio: str | None = None) -> None:
    """Make the processor's image mode (or an explicit override) and chat template follow the config."""
    from .conversation import chat_template

    processor.image_processor.aspect_ratio = aspect_ratio or config.image_aspect_ratio
    processor.chat_template = processor.tokenizer.chat_template = chat_template(config.template)


def load_for_inference(
    model_path: str | Path,
    device: str | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | None = None,
):
    """``(model, processor)`` ready for ``generate``: eval mode, on ``device``, in ``dtype``.

    Args:
        model_path: a local directory written by ``piip-llava build``/``train``/``convert``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        dtype: ``auto`` | ``float32`` | ``bfloat16`` | ``float16`` (or a ``torch.dtype``).
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2`` (where flash-attn imports).
    """
    from transformers import AutoProcessor

    from . import PiipLlavaForConditionalGeneration

    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = PiipLlavaForConditionalGeneration.from_pretrained(model_path, dtype=resolved_dtype, **extra)
    model = model.to(resolved_device).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    apply_config_preprocessing(processor, model.config)
    logger.info(
        "loaded %s on %s in %s (template %s)", model_path, resolved_device, resolved_dtype, model.config.template
    )
    return model, processor
