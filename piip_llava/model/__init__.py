"""PIIP-LLaVA models. Importing this package registers them with the ``transformers`` Auto classes, so
``AutoConfig`` / ``AutoModelForImageTextToText`` / ``AutoProcessor.from_pretrained(local_dir)`` load saved models."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration_piip_llava import PiipLlavaConfig
from .modeling_piip_llava import PiipLlavaForConditionalGeneration, PiipLlavaModel
from .processing_piip_llava import PiipLlavaImageProcessor, PiipLlavaProcessor
from .vision import PiipVisionConfig, PiipVisionModel

AutoConfig.register(PiipVisionConfig.model_type, PiipVisionConfig, exist_ok=True)
AutoConfig.register(PiipLlavaConfig.model_type, PiipLlavaConfig, exist_ok=True)
AutoModel.register(PiipLlavaConfig, PiipLlavaModel, exist_ok=True)
AutoModelForImageTextToText.register(PiipLlavaConfig, PiipLlavaForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(PiipLlavaConfig, slow_image_processor_class=PiipLlavaImageProcessor, exist_ok=True)
AutoProcessor.register(PiipLlavaConfig, PiipLlavaProcessor, exist_ok=True)

__all__ = [
    "PiipLlavaConfig",
    "PiipLlavaForConditionalGeneration",
    "PiipLlavaImageProcessor",
    "PiipLlavaModel",
    "PiipLlavaProcessor",
    "PiipVisionConfig",
    "PiipVisionModel",
]
