"""LLaVA conversation templates with their exact strings (docs/design.md#conversation-templates).

``get_conversation(name)`` returns a fresh :class:`Conversation`; ``Conversation.get_prompt()`` renders it exactly
as ``llava/conversation.py`` does, and :func:`chat_template` gives the equivalent Jinja template that is saved with
the processor, so ``processor.apply_chat_template`` produces the same string.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum

IMAGE_TOKEN = "<image>"


class SeparatorStyle(Enum):
    TWO = "two"  # vicuna_v1: "ROLE: msg" + (sep | sep2)
    MPT = "mpt"  # chatml: role + msg + sep
    PLAIN = "plain"  # stage-1 alignment: msg + sep, no roles
    LLAMA_2 = "llama_2"  # [INST] … [/INST] with <<SYS>> in the first turn


@dataclass
class Conversation:
    """A conversation in one template. ``messages`` holds ``[role, text or None]`` pairs; ``None`` marks the turn
    the model is to write (rendered as the bare role)."""

    name: str
    system: str
    roles: tuple[str, str]
    sep_style: SeparatorStyle
    sep: str
    sep2: str | None = None
    messages: list[list] = field(default_factory=list)

    def append_message(self, role: str, message: str | None) -> None:
        if role not in self.roles:
            raise ValueError(f"role {role!r} is not one of this template's roles {self.roles}")
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        return dataclasses.replace(self, messages=[list(m) for m in self.messages])

    @property
    def stop_str(self) -> str:
        """The string that ends an assistant turn (``sep2`` for TWO/LLAMA_2, else ``sep``)."""
        if self.sep_style in (SeparatorStyle.TWO, SeparatorStyle.LLAMA_2):
            return self.sep2
        return self.sep

    def get_prompt(self) -> str:
        return "".join(text for text, _ in self.get_segments())

    def get_segments(self) -> list[tuple[str, bool]]:
        """The prompt as ``(text, is_target)`` pieces whose concatenation is :meth:`get_prompt`.

        Targets are what training puts loss on: each assistant message with the separator that ends it
        (``</s>`` for vicuna_v1 / Llama-2, ``<|im_end|>`` for ChatML) and, for ``plain``, the caption + ``\\n``.
        """
        seps = [self.sep, self.sep2 if self.sep2 is not None else self.sep]
        segments: list[tuple[str, bool]] = []
        if self.sep_style == SeparatorStyle.TWO:
            segments.append((self.system + seps[0], False))
            for i, (role, message) in enumerate(self.messages):
                if not message:
                    segments.append((f"{role}:", False))
                elif i % 2 == 0:
                    segments.append((f"{role}: {message}{seps[0]}", False))
                else:  # the prompt ends at "ROLE:", so the space after it is generated too
                    segments += [(f"{role}:", False), (f" {message}{seps[1]}", True)]
        elif self.sep_style == SeparatorStyle.MPT:
            segments.append((self.system + self.sep, False))
            for i, (role, message) in enumerate(self.messages):
                if not message:
                    segments.append((role, False))
                elif i % 2 == 0:
                    segments.append((role + message + self.sep, False))
                else:
                    segments += [(role, False), (message + self.sep, True)]
        elif self.sep_style == SeparatorStyle.PLAIN:
            segments.append((self.system, False))
            for i, (_, message) in enumerate(self.messages):
                if message:
                    segments.append((message + seps[i % 2], i % 2 == 1))
        else:
            segments = self._llama_2_segments()
        return [(text, target) for text, target in segments if text]

    def _llama_2_segments(self) -> list[tuple[str, bool]]:
        segments: list[tuple[str, bool]] = []
        for i, (role, message) in enumerate(self.messages):
            if i == 0 and (not message or role != self.roles[0]):
                raise ValueError("a Llama-2 conversation starts with a non-empty user message")
            if not message:
                continue
            if i == 0 and self.system:
                message = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{message}"
            if i % 2 == 0:
                segments.append((f"{self.sep}[INST] {message} [/INST]", False))
            else:
                segments.append((f" {message} {self.sep2}", True))  # the prompt ends at "[/INST]"
        if segments:
            # LLaVA strips the *characters* of sep from the left (str.lstrip), which removes a leading "<s>".
            segments[0] = (segments[0][0].lstrip(self.sep), segments[0][1])
        return segments


VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)

CONVERSATIONS: dict[str, Conversation] = {
    "vicuna_v1": Conversation("vicuna_v1", VICUNA_SYSTEM, ("USER", "ASSISTANT"), SeparatorStyle.TWO, " ", "</s>"),
    # Stage-1 alignment: "<image>" + caption + "\n", as LLaVA's preprocess_plain builds it.
    "plain": Conversation("plain", "", ("", ""), SeparatorStyle.PLAIN, "", "\n"),
    "llava_llama_2": Conversation(
        "llava_llama_2", LLAVA_LLAMA_2_SYSTEM, ("USER", "ASSISTANT"), SeparatorStyle.LLAMA_2, "<s>", "</s>"
    ),
    "mistral_instruct": Conversation("mistral_instruct", "", ("USER", "ASSISTANT"), SeparatorStyle.LLAMA_2, "", "</s>"),
    "chatml_direct": Conversation(
        "chatml_direct",
        "<|im_start|>system\nAnswer the questions.",
        ("<|im_start|>user\n", "<|im_start|>assistant\n"),
        SeparatorStyle.MPT,
        "<|im_end|>",
    ),
}
ALIASES = {"v1": "vicuna_v1"}


def get_conversation(name: str) -> Conversation:
    """A fresh, empty conversation in template ``name`` (``v1`` is an alias of ``vicuna_v1``)."""
    name = ALIASES.get(name, name)
    if name not in CONVERSATIONS:
        raise ValueError(f"unknown conversation template {name!r}; valid: {', '.join([*CONVERSATIONS, *ALIASES])}")
    return CONVERSATIONS[name].copy()


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


# Renders a message's content: a string, or a list of {"type": "image"} / {"type": "text", "text": …} parts;
# every image part becomes "<image>" + image_sep in front of the text, as LLaVA places it.
_CONTENT = (
    "{%- macro content(message) -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{ '" + IMAGE_TOKEN + "' + image_sep }}"
    "{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
)


def chat_template(name: str, bos: bool = True) -> str:
    """The Jinja chat template equivalent to ``get_conversation(name).get_prompt()``, after the tokenizer's BOS.

    Messages use ``role`` ``system`` (optional, replaces the template's system prompt), ``user`` and
    ``assistant``; ``add_generation_prompt`` appends the empty assistant turn. The model always saw BOS first
    (LLaVA's tokenizer adds it), so the template renders ``bos_token`` first, as Llama's templates do: then
    ``apply_chat_template(tokenize=True)``, vLLM's chat endpoint (which tokenises without special tokens) and
    ``processor(text=rendered)`` (which skips its own BOS when the text has one) all give the training tokens.
    ``bos=False`` leaves BOS to the tokenizer (the ``llava-hf`` convention, for ``LlavaProcessor`` exports).
    """
    conv = get_conversation(name)
    user, assistant = (_jinja_string(role) for role in conv.roles)
    sep, sep2 = _jinja_string(conv.sep), _jinja_string(conv.sep2 if conv.sep2 is not None else conv.sep)
    image_sep = "''" if conv.sep_style == SeparatorStyle.PLAIN else "'\\n'"
    head = (
        "{%- set image_sep = "
        + image_sep
        + " -%}"
        + _CONTENT
        + "{%- set system = "
        + _jinja_string(conv.system)
        + " -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}{%- endif -%}"
    )
    if conv.sep_style == SeparatorStyle.TWO:
        body = (
            "{{- system + " + sep + " -}}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'user' -%}{{ " + user + " + ': ' }}{{ content(message) }}{{ " + sep + " }}"
            "{%- else -%}{{ " + assistant + " + ': ' }}{{ content(message) }}{{ " + sep2 + " }}{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ " + assistant + " + ':' }}{%- endif -%}"
        )
    elif conv.sep_style == SeparatorStyle.MPT:
        body = (
            "{{- system + " + sep + " -}}"
            "{%- for message in messages -%}"
            "{{ (" + user + " if message['role'] == 'user' else " + assistant + ") }}"
            "{{ content(message) }}{{ " + sep + " }}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ " + assistant + " }}{%- endif -%}"
        )
    elif conv.sep_style == SeparatorStyle.PLAIN:
        body = (
            "{{- system -}}"
            "{%- for message in messages -%}"
            "{{ content(message) }}{{ (" + sep + " if loop.index0 % 2 == 0 else " + sep2 + ") }}"
            "{%- endfor -%}"
        )
    else:  # LLAMA_2
        body = (
            "{%- set ns = namespace(text='') -%}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'user' -%}"
            "{%- set text = content(message) -%}"
            "{%- if loop.first and system -%}{%- set text = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + text -%}"
            "{%- endif -%}"
            "{%- set ns.text = ns.text + " + sep + " + '[INST] ' + text + ' [/INST]' -%}"
            "{%- else -%}{%- set ns.text = ns.text + ' ' + content(message) + ' ' + " + sep2 + " -%}{%- endif -%}"
            "{%- endfor -%}"
            "{{- ns.text[" + str(len(conv.sep)) + ":] if " + sep + " and ns.text.startswith(" + sep + ") "
            "else ns.text -}}"
        )
    return head + ("{{- bos_token -}}" if bos else "") + body
