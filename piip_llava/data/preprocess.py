"""Turn one LLaVA conversation into ``input_ids`` and ``labels`` with masks that are exact by construction.

The conversation is rendered by the template into ``(text, is_target)`` segments, every ``<image>`` is expanded to
the tower's visual token count, the *whole* string is tokenised once (as at inference), and a token is a target
when its last character lies inside a target segment (offset mapping). There is no per-turn length arithmetic,
so no "tokenization mismatch" path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from piip_llava.model.conversation import SeparatorStyle, get_conversation
from piip_llava.model.processing_piip_llava import IMAGE_TOKEN

IGNORE_INDEX = -100
ROLES = {"human": 0, "user": 0, "gpt": 1, "assistant": 1}


class SampleError(ValueError):
    """A sample that cannot be used (malformed record, missing/corrupt image, too long); it is skipped."""


@dataclass
class TokenizedSample:
    input_ids: torch.Tensor  # (T,)
    labels: torch.Tensor  # (T,), IGNORE_INDEX where there is no loss


def to_messages(conversations: list[dict], template: str, num_images: int) -> list[list]:
    """LLaVA ``conversations`` → template messages, with LLaVA's ``<image>`` placement.

    With one image the marker moves to the front of its turn followed by a newline (``preprocess_multimodal``);
    ``plain`` keeps only the image markers of the first turn (``preprocess_plain``).
    """
    if not isinstance(conversations, list) or not conversations:
        raise SampleError("'conversations' must be a non-empty list")
    if isinstance(conversations[0], dict) and ROLES.get(conversations[0].get("from")) == 1:
        # LLaVA's preprocess drops a leading assistant turn ("Skip the first one if it is not from human") and
        # trains on the rest; some ShareGPT-derived records start that way.
        conversations = conversations[1:]
        if not conversations:
            raise SampleError("the conversation has only an assistant turn")
    conv = get_conversation(template)
    messages = []
    for turn, message in enumerate(conversations):
        if not isinstance(message, dict) or not isinstance(message.get("value"), str):
            raise SampleError(f"turn {turn} is not {{'from': ..., 'value': str}}")
        role = ROLES.get(message.get("from"))
        if role is None or role != turn % 2:
            raise SampleError(f"turn {turn} is from {message.get('from')!r}: turns must alternate human, gpt, …")
        value = message["value"]
        if conv.sep_style == SeparatorStyle.PLAIN and role == 0:
            value = IMAGE_TOKEN * value.count(IMAGE_TOKEN)
        elif num_images == 1 and IMAGE_TOKEN in value:
            value = IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").strip()
        messages.append([conv.roles[role], value])
    markers = sum(m[1].count(IMAGE_TOKEN) for m in messages)
    if markers != num_images:
        raise SampleError(f"{markers} <image> markers in the text but {num_images} images")
    return messages


def tokenize_conversation(
    conversations: list[dict],
    tokenizer,
    template: str,
    image_seq_length: int,
    num_images: int,
    max_length: int,
) -> TokenizedSample:
    conv = get_conversation(template)
    for role, message in to_messages(conversations, template, num_images):
        conv.append_message(role, message)
    text, target_spans = "", []
    for piece, is_target in conv.get_segments():
        piece = piece.replace(IMAGE_TOKEN, IMAGE_TOKEN * image_seq_length)
        if is_target:
            target_spans.append((len(text), len(text) + len(piece)))
        text += piece
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    input_ids = torch.tensor(encoding["input_ids"], dtype=torch.long)
    starts = torch.tensor([start for start, end in encoding["offset_mapping"]], dtype=torch.long)
    ends = torch.tensor([end for start, end in encoding["offset_mapping"]], dtype=torch.long)
    is_target = torch.zeros(len(input_ids), dtype=torch.bool)
    for span_start, span_end in target_spans:
        # A token is a target when its *last* character is: a token that straddles the end of the prompt is one the
        # model must emit. Special tokens added by the tokenizer (BOS) have empty spans and are never targets.
        is_target |= (ends > span_start) & (ends <= span_end) & (ends > starts)
    labels = torch.where(is_target, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    if len(input_ids) > max_length:
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if int((input_ids[max_length:] == image_token_id).sum()):
            raise SampleError(f"{len(input_ids)} tokens > max_length {max_length} and the cut falls in an image span")
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return TokenizedSample(input_ids, labels)
