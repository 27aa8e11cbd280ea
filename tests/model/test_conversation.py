"""piip_llava/model/conversation.py"""

import pytest
from transformers.utils.chat_template_utils import _compile_jinja_template

from piip_llava.model.conversation import CONVERSATIONS, chat_template, get_conversation

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)


def two_turns(name):
    conv = get_conversation(name)
    user, assistant = conv.roles
    for role, message in [(user, "<image>\nWhat is this?"), (assistant, "A cat."), (user, "Color?"), (assistant, None)]:
        conv.append_message(role, message)
    return conv


def test_vicuna_v1_two_turns_equals_llava_string():
    expected = VICUNA_SYSTEM + " USER: <image>\nWhat is this? ASSISTANT: A cat.</s>USER: Color? ASSISTANT:"
    assert two_turns("vicuna_v1").get_prompt() == expected
    assert get_conversation("v1").stop_str == "</s>"


def test_other_templates_equal_llava_strings():
    assert (
        two_turns("mistral_instruct").get_prompt()
        == "[INST] <image>\nWhat is this? [/INST] A cat. </s>[INST] Color? [/INST]"
    )
    llama = two_turns("llava_llama_2").get_prompt()
    assert llama.startswith("[INST] <<SYS>>\nYou are a helpful language and vision assistant.")
    assert llama.endswith("<</SYS>>\n\n<image>\nWhat is this? [/INST] A cat. </s><s>[INST] Color? [/INST]")
    chatml = two_turns("chatml_direct").get_prompt()
    assert chatml == (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|>"
        "<|im_start|>assistant\nA cat.<|im_end|><|im_start|>user\nColor?<|im_end|><|im_start|>assistant\n"
    )
    plain = get_conversation("plain")
    plain.append_message("", "<image>")
    plain.append_message("", "a photo of a cat")
    assert plain.get_prompt() == "<image>a photo of a cat\n"  # LLaVA's preprocess_plain


def as_messages(conv):
    messages = []
    for i, (_, message) in enumerate(conv.messages):
        if message is None:
            break
        role = "user" if i % 2 == 0 else "assistant"
        if message.startswith("<image>\n"):
            content = [{"type": "image"}, {"type": "text", "text": message[len("<image>\n") :]}]
        else:
            content = message
        messages.append({"role": role, "content": content})
    return messages


@pytest.mark.parametrize("name", [n for n in CONVERSATIONS if n != "plain"])
def test_jinja_template_renders_the_same_prompt(name):
    conv = two_turns(name)
    rendered = _compile_jinja_template(chat_template(name)).render(
        messages=as_messages(conv), add_generation_prompt=True
    )
    assert rendered == conv.get_prompt()


def test_plain_jinja_template():
    messages = [{"role": "user", "content": [{"type": "image"}]}, {"role": "assistant", "content": "a cat"}]
    rendered = _compile_jinja_template(chat_template("plain")).render(messages=messages, add_generation_prompt=False)
    assert rendered == "<image>a cat\n"


def test_unknown_template_lists_names():
    with pytest.raises(ValueError, match="vicuna_v1"):
        get_conversation("vicuna")
