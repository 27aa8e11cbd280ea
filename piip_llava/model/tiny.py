"""Random tiny PIIP-LLaVA models with a locally trained byte-level BPE tokenizer, for tests and the quickstart.

Nothing is downloaded: the tokenizer is trained on text generated here (the conversation templates plus a small
vocabulary of shapes, colours, positions and numbers, which the synthetic quickstart data also uses).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, PreTrainedTokenizerFast

from .configuration_piip_llava import PiipLlavaConfig
from .conversation import CONVERSATIONS, chat_template
from .modeling_piip_llava import PiipLlavaForConditionalGeneration
from .processing_piip_llava import IMAGE_TOKEN, PiipLlavaProcessor, build_processor
from .vision.presets import get_tower_config

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
WORDS = (
    "red green blue yellow purple orange black white gray circle square triangle star cross shape shapes image "
    "picture photo there is are a an the of in on at to and with left right top bottom center middle corner "
    "large small big tiny one two three four five six seven eight nine ten zero how many what which color "
    "where is it this that answer question the answer yes no count object objects background describe "
    "word words written text much plus opposite brief short caption write give description "
    "lamp fish door book tree kite moon boat frog bell cake drum gold ring rose sock vase wolf milk nest pear salt "
    "corn leaf What Where How Is Describe Give Write Yes No"
).split()
# Prompt lines of LLaVA-1.5's benchmarks and instruction data (docs/evaluation.md), kept whole.
PROMPT_LINES = ["Answer the question using a single word or phrase.",
                "Answer with the option's letter from the given choices directly.", "Reference OCR token:"]  # fmt: skip
# The LLM shapes a tiny model can take; each is a small config of a real family.
TINY_TEXT_CONFIGS = {
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
    "mistral": dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, sliding_window=None),
}  # fmt: skip


def tokenizer_corpus(lines: int = 4000, seed: int = 0) -> list[str]:
    """Synthetic training text: template prompts and random sentences over :data:`WORDS`."""
    rng = random.Random(seed)
    corpus = [conv.system for conv in CONVERSATIONS.values()] + PROMPT_LINES * 50
    corpus += [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 16))) for _ in range(lines)]
    corpus += [f"USER: {q} ASSISTANT: {a}</s>" for q, a in itertools.product(WORDS[:40], WORDS[40:80])]
    return corpus


def train_tokenizer(
    vocab_size: int = 1024, template: str = "vicuna_v1", with_image_token: bool = True
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ``<image>`` as a single special token; BOS is prepended like Llama's.

    ``with_image_token=False`` gives a plain LLM tokenizer (for testing how a real LLM's tokenizer is adapted).
    """
    special_tokens = SPECIAL_TOKENS if with_image_token else [t for t in SPECIAL_TOKENS if t != IMAGE_TOKEN]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN} if with_image_token else None,
        chat_template=chat_template(template),
        padding_side="left",
    )


def tiny_text_config(tokenizer, llm: str = "llama", overrides: dict | None = None, head_dim: int | None = None):
    """The config of a tiny LLM (``TINY_TEXT_CONFIGS[llm]`` with ``overrides``) for ``tokenizer``'s vocabulary and
    special tokens; ``head_dim`` sets the head count (half as many KV heads)."""
    text_kwargs = {**TINY_TEXT_CONFIGS[llm], **(overrides or {})}
    if head_dim is not None:
        heads, remainder = divmod(text_kwargs["hidden_size"], head_dim)
        if remainder or not heads:
            raise ValueError(f"head_dim={head_dim} must divide the tiny LLM's hidden_size {text_kwargs['hidden_size']}")
        text_kwargs.update(num_attention_heads=heads, num_key_value_heads=max(1, heads // 2))
    return AutoConfig.for_model(
        text_kwargs.pop("model_type"),
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **text_kwargs,
    )


def build_tiny_model(
    tower: str = "tiny-clip-2branch",
    llm: str = "llama",
    seed: int = 0,
    projector_type: str = "piip",
    text_overrides: dict | None = None,
    head_dim: int | None = None,
) -> tuple[PiipLlavaForConditionalGeneration, PiipLlavaProcessor]:
    """A random tiny PIIP-LLaVA and its processor (tokenizer trained here); ``text_overrides`` changes fields of
    the LLM's tiny config (e.g. ``hidden_size``). ``head_dim`` sets the attention head size by the head count
    (``hidden_size / head_dim`` heads, half as many KV heads): the tiny default is 16, and vLLM's CPU attention
    needs at least 32."""
    if llm not in TINY_TEXT_CONFIGS:
        raise ValueError(f"unknown tiny LLM {llm!r}; valid: {', '.join(TINY_TEXT_CONFIGS)}")
    tokenizer = train_tokenizer()
    text_config = tiny_text_config(tokenizer, llm, text_overrides, head_dim)
    config = PiipLlavaConfig(
        vision_config=get_tower_config(tower),
        text_config=text_config,
        projector_type=projector_type,
        projector_norm_groups=8,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = PiipLlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, build_processor(config, tokenizer)


def save_tiny_model(output: str | Path, **kwargs) -> Path:
    model, processor = build_tiny_model(**kwargs)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return Path(output)
