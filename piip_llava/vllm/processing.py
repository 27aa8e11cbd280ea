"""vLLM's multimodal processing for PIIP-LLaVA: each image becomes ``config.image_seq_length`` image tokens.

vLLM tokenises the prompt itself (in the renderer) and hands the HF processor only the images, so the images go
straight to our :class:`~piip_llava.model.processing_piip_llava.PiipLlavaImageProcessor` (the one HF inference
uses); the single ``<image>`` token in the prompt is then replaced by ``image_seq_length`` copies, which is what
``PiipLlavaProcessor.expand_image_tokens`` does on the HF side.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
)

from ..model.configuration_piip_llava import PiipLlavaConfig
from ..model.conversation import IMAGE_TOKEN
from ..model.loading import apply_config_preprocessing
from ..model.processing_piip_llava import ASPECT_RATIOS, PiipLlavaProcessor

# Per-request ``mm_processor_kwargs`` the processor accepts: the image aspect mode (``square`` / ``pad`` / ``resize``).
ASPECT_RATIO_KWARG = "aspect_ratio"


class PiipLlavaProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> PiipLlavaConfig:
        return self.ctx.get_hf_config(PiipLlavaConfig)

    def get_hf_processor(self, **kwargs: object) -> PiipLlavaProcessor:
        processor = self.ctx.get_hf_processor(PiipLlavaProcessor)
        apply_config_preprocessing(processor, self.get_hf_config())  # the config says the image mode, as in HF
        return processor

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {"text_kwargs": set(), "images_kwargs": {ASPECT_RATIO_KWARG}}

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}  # several images per prompt, as the HF model allows

    def get_num_image_tokens(self) -> int:
        return self.get_hf_config().image_seq_length


class PiipLlavaDummyInputsBuilder(BaseDummyInputsBuilder[PiipLlavaProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_TOKEN * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None) -> dict:
        # Images at the tower's input size, so vLLM's memory profiling runs the tower at full cost.
        size = self.info.get_hf_config().image_size
        overrides = mm_options.get("image") if mm_options else None
        images = self._get_dummy_images(
            width=size, height=size, num_images=mm_counts.get("image", 0), overrides=overrides
        )
        return {"image": images}


class PiipLlavaMultiModalProcessor(BaseMultiModalProcessor[PiipLlavaProcessingInfo]):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        image_processor = self.info.get_hf_processor().image_processor
        scoped = hf_kwargs.get("images_kwargs") or {}
        aspect_ratio = scoped.get(ASPECT_RATIO_KWARG, hf_kwargs.get(ASPECT_RATIO_KWARG))
        if aspect_ratio is not None and aspect_ratio != image_processor.aspect_ratio:
            if aspect_ratio not in ASPECT_RATIOS:
                raise ValueError(f"{ASPECT_RATIO_KWARG}={aspect_ratio!r} is not one of {ASPECT_RATIOS}")
            image_processor = copy.copy(image_processor)
            image_processor.aspect_ratio = aspect_ratio
        images = hf_data.get("images") or []
        return image_processor(list(images), return_tensors="pt") if images else BatchFeature()

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {"pixel_values": MultiModalFieldConfig.batched("image")}

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptReplacement]:
        image_token_id = self.info.get_hf_config().image_token_id
        image_tokens = [image_token_id] * self.info.get_num_image_tokens()
        return [PromptReplacement(modality="image", target=[image_token_id], replacement=image_tokens)]
