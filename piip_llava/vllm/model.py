"""PIIP-LLaVA as a vLLM model: our PIIP tower and projector (the modules of ``piip_llava.model``), and the language
model that vLLM builds from ``config.text_config`` (any LLM vLLM supports, with its paged attention and parallelism).

Weights load from the ``transformers`` checkpoint through :data:`HF_TO_VLLM`: the tower and projector keep their
names, the LLM's body and head move under vLLM's ``*ForCausalLM`` (``language_model.model`` / ``.lm_head``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from ..model.conversation import IMAGE_TOKEN
from ..model.projector import build_projector
from ..model.vision.modeling_piip import PiipVisionModel
from .processing import PiipLlavaDummyInputsBuilder, PiipLlavaMultiModalProcessor, PiipLlavaProcessingInfo

HF_TO_VLLM = WeightsMapper(
    orig_to_new_prefix={
        "model.vision_tower.": "vision_tower.",
        "model.multi_modal_projector.": "multi_modal_projector.",
        "model.language_model.": "language_model.model.",
        "lm_head.": "language_model.lm_head.",
    }
)


@MULTIMODAL_REGISTRY.register_processor(
    PiipLlavaMultiModalProcessor, info=PiipLlavaProcessingInfo, dummy_inputs=PiipLlavaDummyInputsBuilder
)
class PiipLlavaForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsPP):
    hf_to_vllm_mapper = HF_TO_VLLM

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_TOKEN
        raise ValueError(f"PIIP-LLaVA takes images only, not {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        with self._mark_tower_model(vllm_config, "image"):
            self.vision_tower = PiipVisionModel(config.vision_config)
            self.multi_modal_projector = build_projector(config)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config.text_config, prefix=maybe_prefix(prefix, "language_model")
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """``pixel_values (B_img, 3, S, S)`` → one ``(image_seq_length, D_text)`` tensor per image."""
        pixel_values = kwargs.pop("pixel_values", None)
        if pixel_values is None:
            return []
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.stack(list(pixel_values))
        dtype = next(self.multi_modal_projector.parameters()).dtype
        features = self.vision_tower(pixel_values.to(dtype))
        return tuple(self.multi_modal_projector(features))  # (B_img, N, D) -> B_img x (N, D)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
