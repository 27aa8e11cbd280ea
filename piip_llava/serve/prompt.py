"""Chat messages -> prompt token ids, with the client's text kept as text.

The chat template renders roles, separators and ``<image>`` markers around the messages; a client's text must not
be able to produce any of them. So the template is rendered with an unguessable placeholder in place of every text
the client sent, the result is split at the special tokens the template itself wrote, and each piece between them is
tokenised with ``split_special_tokens=True`` after the client's text is put back: ``</s>`` or ``<image>`` typed by a
user (or split across two text parts, ``"<im"`` + ``"age>"``) becomes the characters it spells, never id 2 or an
image token. Pieces between special tokens are what the tokenizer encodes separately anyway (added tokens split the
input first), so for text without special tokens the ids equal ``tokenizer(rendered_prompt)``.
"""

from __future__ import annotations

import re
import uuid

from ..model.conversation import IMAGE_TOKEN


class PromptEncoder:
    """Encodes chat-template messages (``{"role", "content": str | [{"type": "text"|"image", ...}]}``) for one
    processor; thread-safe apart from the tokenizer itself (callers hold the engine's tokenizer lock)."""

    def __init__(self, processor) -> None:
        self.processor, self.tokenizer = processor, processor.tokenizer
        specials = sorted(self.tokenizer.added_tokens_encoder, key=len, reverse=True)
        self._special = re.compile("(" + "|".join(re.escape(token) for token in specials) + ")")
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        framed = self.tokenizer("a")["input_ids"]  # what add_special_tokens wraps a text in (BOS for Llama)
        start = next(i for i in range(len(framed)) if framed[i : i + len(plain)] == plain)
        self._prefix, self._suffix = framed[:start], framed[start + len(plain) :]

    def encode(self, messages: list[dict]) -> list[int]:
        """Token ids of the rendered prompt (generation prompt added, every ``<image>`` expanded)."""
        nonce = uuid.uuid4().hex
        texts: list[str] = []

        def hide(text: str) -> str:
            texts.append(text)
            return f"\ue000{nonce}:{len(texts) - 1}\ue001"

        hidden = []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                content = hide(content)
            else:
                content = [{**part, "text": hide(part["text"])} if part["type"] == "text" else part for part in content]
            hidden.append({**message, "content": content})
        rendered = self.tokenizer.apply_chat_template(hidden, tokenize=False, add_generation_prompt=True)
        placeholder = re.compile(f"\ue000{nonce}:(\\d+)\ue001")
        ids = []
        for index, piece in enumerate(self._special.split(rendered)):
            if index % 2 == 1:  # a special token written by the template
                count = self.processor.image_seq_length if piece == IMAGE_TOKEN else 1
                ids += [self.tokenizer.convert_tokens_to_ids(piece)] * count
            elif piece:
                text = placeholder.sub(lambda match: texts[int(match.group(1))], piece)
                ids += self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        # The template renders BOS itself (model/conversation.py); a template that does not gets what
        # add_special_tokens would add.
        prefix = [] if ids[: len(self._prefix)] == self._prefix else self._prefix
        return prefix + ids + self._suffix
