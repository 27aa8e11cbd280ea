"""One-shot chat generation shared by evaluation, the lmms-eval plugin and serving: a prompt in a conversation
template, and batched generation decoded to text."""

from __future__ import annotations

import torch

from .conversation import IMAGE_TOKEN, get_conversation


def chat_prompt(text: str, template: str = "vicuna_v1", image_count: int = 0) -> str:
    """A single user turn and an open assistant turn; ``<image>`` markers go in front of the text (one per image)
    unless the text already places them."""
    if IMAGE_TOKEN not in text:
        text = f"{IMAGE_TOKEN}\n" * image_count + text
    conv = get_conversation(template)
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


@torch.inference_mode()
def generate_answers(
    model,
    processor,
    prompts: list[str],
    images: list,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """Greedy when ``temperature`` is 0; images in the order of the prompts' ``<image>`` markers; each answer is cut
    at the first ``stop`` string and stripped."""
    inputs = processor(text=prompts, images=images or None).to(model.device)
    generation = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0)
    if temperature > 0:
        generation.update(temperature=temperature, top_p=top_p)
    output = model.generate(**inputs, **generation)
    answers = []
    for text in processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True):
        for marker in stop:
            text = text.split(marker)[0]
        answers.append(text.strip())
    return answers
