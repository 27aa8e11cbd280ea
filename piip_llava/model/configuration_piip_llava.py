"""Configuration of PIIP-LLaVA (docs/design.md#configuration-presets-loading)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig

from .compat import HAS_SUB_CONFIG_SPECS, build_sub_configs, sub_config_specs
from .conversation import ALIASES, CONVERSATIONS
from .vision.configuration_piip import PiipVisionConfig

PROJECTOR_TYPES = ("piip", "mlp2x_gelu", "linear")
IMAGE_ASPECT_RATIOS = ("square", "pad")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PiipLlavaConfig(PreTrainedConfig):
    """A PIIP (or single-branch) vision tower, a projector, and any ``AutoModelForCausalLM`` language model.

    Args:
        vision_config: :class:`PiipVisionConfig` (dict or object); defaults to the ``clip-bl_512-256`` tower.
        text_config: the LLM's config (dict with ``model_type``, or object); defaults to Llama.
        projector_type: ``piip`` (per-branch Linear→GroupNorm→GELU→Linear, upsampled and summed;
            docs/design.md#projector), ``mlp2x_gelu`` (LLaVA-1.5) or ``linear``; the last two take one branch.
        projector_norm_groups: GroupNorm groups of the ``piip`` projector.
        image_token_id: id of the ``<image>`` placeholder token in the vocabulary.
        image_aspect_ratio: ``square`` (resize + center crop) or ``pad`` (pad to square with the mean colour): how
            the images of the last training stage were prepared, used by every inference entry point.
        template: the conversation template of the last training stage (``vicuna_v1``, ``plain``, ...): the one the
            evaluator, the server and the chat template use unless told otherwise.
        image_mean, image_std: pixel normalisation (ImageNet for PIIP towers, CLIP's for the baseline).
    """

    model_type = "piip_llava"
    if HAS_SUB_CONFIG_SPECS:
        sub_configs_defaults = sub_config_specs(PiipVisionConfig, text_model_type="llama")
    else:
        sub_configs = {"vision_config": PiipVisionConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_type: str = "piip"
    projector_norm_groups: int = 32
    image_token_id: int = 32000
    image_aspect_ratio: str = "pad"
    template: str = "vicuna_v1"
    image_mean: list | None = None
    image_std: list | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        build_sub_configs(self, PiipVisionConfig, text_model_type="llama")
        super().__post_init__(**kwargs)
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type={self.projector_type!r} is not one of {PROJECTOR_TYPES}")
        if self.projector_type != "piip" and len(self.vision_config.branches) != 1:
            raise ValueError(f"projector_type={self.projector_type!r} takes a single-branch tower; use 'piip'")
        self.validate_preprocessing()
        self.image_mean = list(self.image_mean or IMAGENET_MEAN)
        self.image_std = list(self.image_std or IMAGENET_STD)

    def validate_preprocessing(self) -> None:
        """Check ``image_aspect_ratio`` and ``template`` (also after a training stage sets them)."""
        if self.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio={self.image_aspect_ratio!r} is not one of {IMAGE_ASPECT_RATIOS}")
        if self.template not in CONVERSATIONS and self.template not in ALIASES:
            raise ValueError(f"template={self.template!r} is not one of {sorted([*CONVERSATIONS, *ALIASES])}")

    @property
    def image_seq_length(self) -> int:
        """Visual tokens per image: the highest-resolution branch's output grid (1024 for 512/256, 400 for 640/224)."""
        grid = self.vision_config.output_grids[-1]
        return grid * grid

    @property
    def image_size(self) -> int:
        return self.vision_config.image_size
