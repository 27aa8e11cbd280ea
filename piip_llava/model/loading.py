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

Two LLaVA habits work the same way everywhere too (flags from :func:`add_loading_arguments`):

* ``--model-base BASE``: ``model_path`` is a LoRA output (``piip-llava train --lora_enable``: an adapter and the
  parts trained in full); the adapter is applied to ``BASE`` and merged in memory (``piip-llava convert`` can write
  the merged model once instead).
* ``--load-8bit`` / ``--load-4bit``: the LLM's linear layers are quantised by bitsandbytes through ``transformers``'
  ``BitsAndBytesConfig`` (4-bit: NF4 with double quantisation, computing in ``dtype``, as LLaVA does); the vision
  tower, the projector and the LM head stay in ``dtype``. bitsandbytes needs a CUDA device and is not a dependency
  of this package: without either, loading stops with an error that says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the model: the flag helpers below serve `piip-llava --help` without it
    import torch

logger = logging.getLogger(__name__)

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # torch dtype names
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)


def resolve_device(device: str | None = "auto") -> torch.device:
    """``auto``/``None`` → ``cuda`` if available else ``cpu``; anything else is passed to ``torch.device``."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is visible (torch {torch.__version__}); use cpu or auto")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``auto`` → bf16 on CUDA with bf16 support, fp16 on older CUDA, fp32 elsewhere; names map to torch dtypes."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    device = torch.device(device)
    if dtype in (None, "", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_CHOICES)}")
    return getattr(torch, dtype)


def add_loading_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype``, ``--model-base``, ``--load-8bit`` / ``--load-4bit``: every entry point's flags for
    :func:`load_for_inference` (read back with :func:`loading_options`)."""
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: bf16 (fp16 on pre-Ampere) on CUDA, fp32 on CPU"
    )
    parser.add_argument(
        "--model-base", help="the base model of a LoRA output given as the model path: merged in memory at load"
    )
    bits = parser.add_mutually_exclusive_group()
    bits.add_argument("--load-8bit", action="store_true", help="LLM weights in 8 bits (bitsandbytes, CUDA only)")
    bits.add_argument("--load-4bit", action="store_true", help="LLM weights in 4 bits, NF4 (bitsandbytes, CUDA only)")


def loading_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`load_for_inference` given by :func:`add_loading_arguments`' flags."""
    return {
        "device": args.device,
        "dtype": args.dtype,
        "model_base": args.model_base,
        "load_8bit": args.load_8bit,
        "load_4bit": args.load_4bit,
    }


def loading_flags(args: argparse.Namespace) -> list[str]:
    """The same options as command-line flags, for a launcher to pass them on to the process that loads."""
    flags = ["--device", args.device, "--dtype", args.dtype]
    if args.model_base:
        flags += ["--model-base", args.model_base]
    return flags + ["--load-8bit"] * args.load_8bit + ["--load-4bit"] * args.load_4bit


# Kept in ``dtype`` when the LLM is quantised (module-name fragments, as ``llm_int8_skip_modules`` matches them).
UNQUANTIZED_MODULES = ["vision_tower", "multi_modal_projector", "lm_head"]


def quantization_config(load_8bit: bool, load_4bit: bool, device: torch.device, dtype: torch.dtype):
    """``BitsAndBytesConfig`` for ``--load-8bit`` / ``--load-4bit`` (``None`` for neither); a clear ``ValueError``
    where bitsandbytes cannot run."""
    if load_8bit and load_4bit:
        raise ValueError("--load-8bit and --load-4bit exclude each other: pick one")
    if not (load_8bit or load_4bit):
        return None
    import torch

    flag = "--load-8bit" if load_8bit else "--load-4bit"
    if device.type != "cuda":
        raise ValueError(
            f"{flag} quantises with bitsandbytes, which needs a CUDA device; this run's device is {device} "
            f"(torch {torch.__version__}). Drop {flag} (and use --dtype float32 or bfloat16), or run on a GPU."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"{flag} needs bitsandbytes, which is not installed: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=UNQUANTIZED_MODULES)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
        llm_int8_skip_modules=UNQUANTIZED_MODULES,
    )


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
    model_base: str | Path | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
):
    """``(model, processor)`` ready for ``generate``: eval mode, on ``device``, in ``dtype``.

    Args:
        model_path: a local directory written by ``piip-llava build``/``train``/``convert``, or with ``model_base``
            a LoRA output of ``piip-llava train --lora_enable``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        dtype: ``auto`` | ``float32`` | ``bfloat16`` | ``float16`` (or a ``torch.dtype``).
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2`` (where flash-attn imports).
        model_base: the model the LoRA run in ``model_path`` started from; the adapter is merged into it.
        load_8bit, load_4bit: quantise the LLM with bitsandbytes (CUDA only; see the module docstring).
    """
    from transformers import AutoProcessor

    from . import PiipLlavaForConditionalGeneration

    model_path = Path(model_path)
    is_adapter = (model_path / "adapter_config.json").exists()
    if is_adapter != bool(model_base):
        raise ValueError(
            f"{model_path} is a LoRA output: pass its base model with --model-base"
            if is_adapter
            else f"--model-base {model_base} is for LoRA outputs, and {model_path} has no adapter_config.json"
        )
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    quantization = quantization_config(load_8bit, load_4bit, resolved_device, resolved_dtype)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if quantization is not None:  # bitsandbytes places the weights while loading; they cannot be moved afterwards
        extra.update(quantization_config=quantization, device_map={"": resolved_device})
    weights = Path(model_base) if model_base else model_path
    model = PiipLlavaForConditionalGeneration.from_pretrained(weights, dtype=resolved_dtype, **extra)
    if model_base:
        model = merge_adapter(model, model_path)
    if quantization is None:
        model = model.to(resolved_device)
    model = model.eval()
    processor_dir = model_path if (model_path / "processor_config.json").exists() or not model_base else weights
    processor = AutoProcessor.from_pretrained(processor_dir)
    apply_config_preprocessing(processor, model.config)
    logger.info(
        "loaded %s%s on %s in %s%s (template %s)",
        model_path,
        f" onto base {model_base}" if model_base else "",
        resolved_device,
        resolved_dtype,
        ", LLM in 8 bits" if load_8bit else ", LLM in 4 bits" if load_4bit else "",
        model.config.template,
    )
    return model, processor


def merge_adapter(model, adapter_dir: str | Path):
    """Apply the LoRA run saved in ``adapter_dir`` (adapter + the parts trained in full) to ``model`` and merge it:
    a plain ``PiipLlavaForConditionalGeneration`` again. The run's config (template, image mode) is taken too."""
    from peft import PeftModel

    from .configuration_piip_llava import PiipLlavaConfig

    adapter_dir = Path(adapter_dir)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    if (adapter_dir / "config.json").exists():  # the training run's template / image mode
        trained = PiipLlavaConfig.from_pretrained(adapter_dir)
        merged.config.template, merged.config.image_aspect_ratio = trained.template, trained.image_aspect_ratio
    return merged
