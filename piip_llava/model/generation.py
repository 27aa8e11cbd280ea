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


def chat_continuation(text: str, continuation: str, template: str = "vicuna_v1", image_count: int = 0) -> str:
    """The prompt of :func:`chat_prompt` followed by ``continuation`` as the start of the assistant's answer, spaced
    as the template spaces answers (``ASSISTANT: A`` for vicuna, ``assistant\\nA`` for chatml), without the
    end-of-turn separator: the text whose last tokens are scored by :func:`continuation_log_probs`."""
    if IMAGE_TOKEN not in text:
        text = f"{IMAGE_TOKEN}\n" * image_count + text
    answer = continuation.strip()
    conv = get_conversation(template)
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], answer)
    rendered = conv.get_prompt()
    return rendered[: rendered.rindex(answer) + len(answer)]


@torch.inference_mode()
def continuation_log_probs(model, processor, prompts: list[str], wholes: list[str], images: list) -> list[tuple]:
    """``(sum of log-probabilities, token count, is_greedy)`` of each ``whole[len(prompt):]`` given its prompt.

    A token belongs to the continuation when its last character does (the rule of the training label masks), so a
    space merged into the continuation's first token is scored with it. One left-padded batch; images in the order
    of the ``<image>`` markers.
    """
    tokenizer = processor.tokenizer
    counts = []
    for prompt, whole in zip(prompts, wholes):
        if not whole.startswith(prompt) or len(whole) == len(prompt):
            raise ValueError(f"the continuation must extend its prompt: {whole[-40:]!r} vs {prompt[-40:]!r}")
        ends = [end for _, end in tokenizer(whole, return_offsets_mapping=True)["offset_mapping"]]
        counts.append(sum(end > len(prompt) for end in ends))
    inputs = processor(text=wholes, images=images or None).to(model.device)
    log_probs = model(**inputs).logits.float().log_softmax(-1)  # (B, T, V); left padding: rows end together
    results = []
    for row, count in enumerate(counts):
        targets = inputs["input_ids"][row, -count:]
        predicted = log_probs[row, -count - 1 : -1]  # position t predicts token t + 1
        token_log_probs = predicted.gather(-1, targets[:, None]).squeeze(-1)
        results.append((float(token_log_probs.sum()), count, bool((predicted.argmax(-1) == targets).all())))
    return results
