"""piip_llava/data/preprocess.py"""

import pytest
import torch

from piip_llava.data.preprocess import IGNORE_INDEX, SampleError, tokenize_conversation
from piip_llava.model.conversation import get_conversation

CONVERSATION = [
    {"from": "human", "value": "What is in the picture?\n<image>"},
    {"from": "gpt", "value": "A red circle on the left."},
    {"from": "human", "value": "How many shapes?"},
    {"from": "gpt", "value": "There are two shapes."},
]


def target_text(sample, tokenizer):
    """The decoded target tokens, each maximal run separately."""
    runs, current = [], []
    for token, label in zip(sample.input_ids.tolist(), sample.labels.tolist()):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


@pytest.mark.parametrize(
    "template, expected",
    [
        # The space after "ASSISTANT:" / "[/INST]" is a target: generation prompts end before it.
        ("vicuna_v1", [" A red circle on the left.</s>", " There are two shapes.</s>"]),
        ("llava_llama_2", [" A red circle on the left. </s>", " There are two shapes. </s>"]),
        ("mistral_instruct", [" A red circle on the left. </s>", " There are two shapes. </s>"]),
        ("chatml_direct", ["A red circle on the left.<|im_end|>", "There are two shapes.<|im_end|>"]),
    ],
)
def test_masks_are_exact_for_multi_turn_conversations(tiny_llava, template, expected):
    _, processor = tiny_llava
    tokenizer = processor.tokenizer
    sample = tokenize_conversation(CONVERSATION, tokenizer, template, image_seq_length=16, num_images=1,
                                   max_length=4096)  # fmt: skip
    assert target_text(sample, tokenizer) == expected
    # The tokens are the whole rendered prompt tokenised at once, exactly as at inference.
    conv = get_conversation(template)
    for i, turn in enumerate(CONVERSATION):
        value = "<image>\nWhat is in the picture?" if i == 0 else turn["value"]
        conv.append_message(conv.roles[i % 2], value)
    rendered = conv.get_prompt().replace("<image>", "<image>" * 16)
    assert sample.input_ids.tolist() == tokenizer(rendered)["input_ids"]
    image_positions = sample.input_ids == tokenizer.convert_tokens_to_ids("<image>")
    assert int(image_positions.sum()) == 16 and (sample.labels[image_positions] == IGNORE_INDEX).all()


def test_plain_template_trains_on_the_caption_only(tiny_llava):
    _, processor = tiny_llava
    caption = [
        {"from": "human", "value": "<image>\nDescribe the image briefly."},
        {"from": "gpt", "value": "a red star"},
    ]
    sample = tokenize_conversation(caption, processor.tokenizer, "plain", 16, 1, 4096)
    assert target_text(sample, processor.tokenizer) == ["a red star\n"]
    text = processor.tokenizer.decode(sample.input_ids, skip_special_tokens=False)
    assert text.startswith("<s><image>") and "Describe" not in text  # preprocess_plain drops the instruction


def test_bad_conversations_raise_sample_errors(tiny_llava):
    _, processor = tiny_llava
    tokenizer = processor.tokenizer
    with pytest.raises(SampleError, match="alternate"):
        tokenize_conversation([{"from": "human", "value": "hi"}, {"from": "human", "value": "hi"}], tokenizer,
                              "vicuna_v1", 16, 0, 4096)  # fmt: skip
    with pytest.raises(SampleError, match="1 <image> markers in the text but 0 images"):
        tokenize_conversation(CONVERSATION, tokenizer, "vicuna_v1", 16, 0, 4096)
    with pytest.raises(SampleError, match="image span"):
        tokenize_conversation(CONVERSATION, tokenizer, "vicuna_v1", 16, 1, 40)
    truncated = tokenize_conversation(CONVERSATION, tokenizer, "vicuna_v1", 16, 1, 80)
    assert len(truncated.input_ids) == 80 and torch.equal(truncated.labels[:5], torch.full((5,), IGNORE_INDEX))


def test_the_answer_starts_where_the_generation_prompt_ends(tiny_llava):
    # The generation prompt ends at "ASSISTANT:"; whatever follows must get loss, whether the tokenizer folds the
    # space into the answer's first token (" kite") or keeps it as a token of its own (" " then "C").
    _, processor = tiny_llava
    tokenizer = processor.tokenizer
    for answer, tokens in [("kite", ["Ġkite", "</s>"]), ("C", ["Ġ", "C", "</s>"])]:
        turns = [{"from": "human", "value": "<image>\nWhat word is written?"}, {"from": "gpt", "value": answer}]
        sample = tokenize_conversation(turns, tokenizer, "vicuna_v1", 16, 1, 4096)
        assert tokenizer.convert_ids_to_tokens(sample.input_ids[-len(tokens) :].tolist()) == tokens
        assert target_text(sample, tokenizer) == [f" {answer}</s>"]
        prompt = get_conversation("vicuna_v1")
        prompt.append_message("USER", "<image>\nWhat word is written?")
        prompt.append_message("ASSISTANT", None)
        prompt_ids = tokenizer(prompt.get_prompt().replace("<image>", "<image>" * 16))["input_ids"]
        assert sample.input_ids[: len(prompt_ids)].tolist() == prompt_ids
        assert (sample.labels[: len(prompt_ids)] == IGNORE_INDEX).all() and len(sample.labels) == len(prompt_ids) + len(
            tokens
        )


def test_a_leading_assistant_turn_is_dropped_as_llava_does(tiny_llava):
    """LLaVA's preprocess_v1 skips a first turn that is not from the human and trains on the rest."""
    _, processor = tiny_llava
    kwargs = dict(tokenizer=processor.tokenizer, template="vicuna_v1", image_seq_length=16, num_images=1,
                  max_length=4096)  # fmt: skip
    leading = [{"from": "gpt", "value": "Hello! Ask me about the picture."}, *CONVERSATION]
    with_leading, without = tokenize_conversation(leading, **kwargs), tokenize_conversation(CONVERSATION, **kwargs)
    assert torch.equal(with_leading.input_ids, without.input_ids) and torch.equal(with_leading.labels, without.labels)
    with pytest.raises(SampleError, match="only an assistant turn"):
        tokenize_conversation(leading[:1], **{**kwargs, "num_images": 0})
