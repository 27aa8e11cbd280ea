"""Image processor and processor of PIIP-LLaVA (docs/design.md#splicing-image-tokens,
docs/design.md#preprocessing-as-the-official-piip-llava-does).

The image processor returns one tensor at the highest-resolution branch's size: ``square`` resizes the shortest
edge (bicubic) and center-crops, ``pad`` first pads the image to a square with the mean colour (LLaVA's
``expand2square``). The processor expands every ``<image>`` in the text into ``image_seq_length`` image tokens, so
the model can scatter the visual features into exactly those positions.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from .configuration_piip_llava import IMAGENET_MEAN, IMAGENET_STD, PiipLlavaConfig
from .conversation import IMAGE_TOKEN, chat_template


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad the short side, centered, with ``fill`` (LLaVA's ``expand2square``)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


ASPECT_RATIOS = ("square", "pad", "resize")


class PiipLlavaImageProcessor(BaseImageProcessor):
    """PIL-based preprocessing to ``(B, 3, size, size)`` float tensors.

    Args:
        size: output side (the last branch's image size).
        aspect_ratio: ``square`` (resize + center crop), ``pad`` (expand to square with the mean colour, then resize)
            or ``resize`` (stretch to a square, as the LLaVA web demo's "Resize" mode).
        image_mean, image_std: normalisation (ImageNet for PIIP towers; CLIP's for the LLaVA-1.5 baseline).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 512,
        aspect_ratio: str = "pad",
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"aspect_ratio={aspect_ratio!r} is not one of {ASPECT_RATIOS}")
        self.size = size
        self.aspect_ratio = aspect_ratio
        self.image_mean = list(image_mean or IMAGENET_MEAN)
        self.image_std = list(image_std or IMAGENET_STD)

    def _to_array(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        if self.aspect_ratio == "pad":
            image = expand_to_square(image, tuple(int(255 * m) for m in self.image_mean))
            image = image.resize((self.size, self.size), Image.BICUBIC)
        elif self.aspect_ratio == "resize":
            image = image.resize((self.size, self.size), Image.BICUBIC)
        else:
            width, height = image.size
            scale = self.size / min(width, height)
            resized = (max(self.size, round(width * scale)), max(self.size, round(height * scale)))
            image = image.resize(resized, Image.BICUBIC)
            left, top = (resized[0] - self.size) // 2, (resized[1] - self.size) // 2
            image = image.crop((left, top, left + self.size, top + self.size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return array.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if isinstance(images, Image.Image):
            images = [images]
        pixel_values = np.stack([self._to_array(image) for image in images])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)

    preprocess = __call__


class PiipLlavaProcessor(ProcessorMixin):
    """Tokenizer + image processor; expands each ``<image>`` to ``image_seq_length`` image tokens.

    ``processor(text=..., images=...)`` takes one prompt or a batch; images are consumed in the order their
    ``<image>`` markers appear (several per prompt, or none). Pad on the left for batched generation
    (``processor.tokenizer.padding_side = "left"``, the default set here).
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(
        self, image_processor=None, tokenizer=None, image_seq_length: int = 1024, chat_template=None, **kwargs
    ):
        self.image_seq_length = image_seq_length
        self.image_token = IMAGE_TOKEN
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token: add it as a special token")

    def expand_image_tokens(self, text: str) -> str:
        return text.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.image_seq_length)

    def __call__(self, text=None, images=None, return_tensors: str = "pt", padding: bool | str = True, **kwargs):
        if text is None:
            raise ValueError("text is required: put one <image> where each image goes")
        texts = [text] if isinstance(text, str) else list(text)
        markers = sum(t.count(IMAGE_TOKEN) for t in texts)
        image_list = [] if images is None else [images] if isinstance(images, Image.Image) else list(images)
        # apply_chat_template(tokenize=True) passes the images of each conversation as a list
        image_list = [image for item in image_list for image in (item if isinstance(item, list) else [item])]
        if markers != len(image_list):
            raise ValueError(f"{markers} <image> markers in the text but {len(image_list)} images")
        bos = self.tokenizer.bos_token
        if bos and all(t.startswith(bos) for t in texts):  # a rendered chat template already holds BOS
            kwargs.setdefault("add_special_tokens", False)
        encoding = self.tokenizer(
            [self.expand_image_tokens(t) for t in texts], return_tensors=return_tensors, padding=padding, **kwargs
        )
        for index, (text_item, ids) in enumerate(zip(texts, encoding["input_ids"])):
            found = sum(1 for token in ids if int(token) == self.image_token_id)
            expected = text_item.count(IMAGE_TOKEN) * self.image_seq_length
            if found != expected:
                raise ValueError(
                    f"prompt {index}: {found} image tokens after tokenization, {expected} expected: truncation "
                    f"(max_length) cut inside an image span; raise max_length or shorten the text"
                )
        data = dict(encoding)
        if image_list:
            data["pixel_values"] = self.image_processor(image_list, return_tensors=return_tensors)["pixel_values"]
        return BatchFeature(data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


def build_processor(config: PiipLlavaConfig, tokenizer) -> PiipLlavaProcessor:
    """The processor matching a model config: image size, aspect mode, statistics, visual token count, and the
    chat template of ``config.template``."""
    image_processor = PiipLlavaImageProcessor(
        size=config.image_size,
        aspect_ratio=config.image_aspect_ratio,
        image_mean=config.image_mean,
        image_std=config.image_std,
    )
    return PiipLlavaProcessor(
        image_processor,
        tokenizer,
        image_seq_length=config.image_seq_length,
        chat_template=chat_template(config.template),
    )
