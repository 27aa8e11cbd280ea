"""PIIP-LLaVA as a ``transformers`` model (modelled on ``transformers/models/llava/modeling_llava.py``).

The processor expands every ``<image>`` into ``config.image_seq_length`` copies of the image token; the model
encodes the images (PIIP tower → projector) and scatters the features into exactly those positions, checking
that the counts agree. ``generate`` encodes the images once before prefill (``mm_encoder_outputs``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast

from .compat import CACHE_KEY, slice_logits_to_keep
from .configuration_piip_llava import PiipLlavaConfig
from .projector import build_projector
from .vision.modeling_piip import PiipVisionModel


class PiipLlavaPreTrainedModel(PreTrainedModel):
    config_class = PiipLlavaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True


class PiipLlavaModel(PiipLlavaPreTrainedModel):
    """Vision tower + projector + language model, without the LM head."""

    def __init__(self, config: PiipLlavaConfig) -> None:
        super().__init__(config)
        self.vision_tower = PiipVisionModel(config.vision_config)
        self.multi_modal_projector = build_projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """``pixel_values (B_img, 3, S, S)`` → ``pooler_output (B_img, image_seq_length, D_text)``."""
        features = self.vision_tower(pixel_values)
        tokens = self.multi_modal_projector(features)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens)

    def get_placeholder_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, image_features):
        """Positions of the image token, ``(B, T, 1)``; raises unless they hold exactly the image features."""
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embedding).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        token_count, feature_count = int(mask.sum()), image_features.shape[0] * image_features.shape[1]
        if token_count != feature_count:
            raise ValueError(
                f"Image features and image tokens do not match: {token_count} image tokens in the text, "
                f"{feature_count} image features ({image_features.shape[0]} images x {image_features.shape[1]}). "
                "Expand each <image> with the processor, and never truncate inside an image span."
            )
        return mask.unsqueeze(-1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if pixel_values is not None and mm_encoder_outputs:
            raise ValueError("You cannot specify both pixel_values and mm_encoder_outputs")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image_outputs = (mm_encoder_outputs or {}).get("image")
        if image_outputs is None and pixel_values is not None:
            image_outputs = self.get_image_features(pixel_values)
        if image_outputs is not None:
            image_features = image_outputs.pooler_output.to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_features)
        elif self.training and torch.is_grad_enabled():
            # A text-only training batch still runs the tower and projector (on a zero image, weighted 0): under
            # ZeRO-3 every module's forward is a collective, and a rank skipping it would desynchronise the others.
            size = self.config.vision_config.image_size
            dummy = self.get_image_features(inputs_embeds.new_zeros(1, 3, size, size)).pooler_output
            inputs_embeds = inputs_embeds + dummy.sum().to(inputs_embeds.dtype) * 0.0
        if cache is None:  # transformers < 5.20 passes it as past_key_values (see compat.py)
            cache = kwargs.pop(CACHE_KEY, None)
        return self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **{CACHE_KEY: cache},
            **kwargs,
        )


class PiipLlavaForConditionalGeneration(PiipLlavaPreTrainedModel, GenerationMixin):
    """PIIP-LLaVA with the LM head; ``generate`` supports greedy/sampling, KV cache, batches, streamers."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: PiipLlavaConfig) -> None:
        super().__init__(config)
        self.model = PiipLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values)

    @property
    def vision_tower(self) -> PiipVisionModel:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """``labels`` use -100 for positions without loss (image tokens, prompts, padding); shifted inside."""
        if cache is None:  # transformers < 5.20 passes it as past_key_values (see compat.py)
            cache = kwargs.pop(CACHE_KEY, None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            if input_ids is not None:  # no loss on image positions, whatever the collator put there
                labels = labels.masked_fill(input_ids == self.config.image_token_id, -100)
            # ``kwargs`` carries the Trainer's ``num_items_in_batch`` (the target-token count of the whole global
            # batch): the loss is then a sum divided by it, so it is the mean token cross-entropy of the global batch
            # for any split into processes x accumulation steps (docs/design.md#loss-normalisation).
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_KEY: getattr(outputs, CACHE_KEY)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
