"""PIIP-LLaVA models, loaded on first use; ``import piip_llava`` has registered them with the Auto classes."""

from __future__ import annotations

from piip_llava.lazy import lazy_exports

_EXPORTS = {
    "PiipLlavaConfig": ".configuration_piip_llava",
    "PiipLlavaForConditionalGeneration": ".modeling_piip_llava",
    "PiipLlavaModel": ".modeling_piip_llava",
    "PiipLlavaImageProcessor": ".processing_piip_llava",
    "PiipLlavaProcessor": ".processing_piip_llava",
    "PiipVisionConfig": ".vision.configuration_piip",
    "PiipVisionModel": ".vision.modeling_piip",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
