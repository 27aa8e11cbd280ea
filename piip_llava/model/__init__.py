"""PIIP-LLaVA models, loaded on first use; ``import piip_llava`` has registered them with the Auto classes."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PiipLlavaConfig": ".configuration_piip_llava",
    "PiipLlavaForConditionalGeneration": ".modeling_piip_llava",
    "PiipLlavaModel": ".modeling_piip_llava",
    "PiipLlavaImageProcessor": ".processing_piip_llava",
    "PiipLlavaProcessor": ".processing_piip_llava",
    "PiipVisionConfig": ".vision.configuration_piip",
    "PiipVisionModel": ".vision.modeling_piip",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
