"""piip_llava/model/processing_piip_llava.py and generation features (streaming, stop strings)."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TextIteratorStreamer

from piip_llava.model.processing_piip_llava import PiipLlavaImageProcessor, expand_to_square
from tests.conftest import solid_image


def test_pad_fills_with_the_mean_colour_and_keeps_the_whole_image():
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    square = expand_to_square(image, (10, 20, 30))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (10, 20, 30) and square.getpixel((20, 20)) == (255, 255, 255)
    processor = PiipLlavaImageProcessor(size=32, aspect_ratio="pad", image_mean=[0.5] * 3, image_std=[0.5] * 3)
    pixels = processor(image)["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    assert pixels[0, :, 0, 16].tolist() == pytest.approx([(127 / 255 - 0.5) / 0.5] * 3, abs=1e-6)  # padding row
    assert pixels[0, :, 16, 16].tolist() == pytest.approx([1.0] * 3)  # white image centre


def test_square_resizes_shortest_edge_and_center_crops():
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, 20:40] = 255  # white middle third
    processor = PiipLlavaImageProcessor(size=20, aspect_ratio="square", image_mean=[0] * 3, image_std=[1] * 3)
    pixels = processor(Image.fromarray(array))["pixel_values"]
    assert pixels.shape == (1, 3, 20, 20)
    assert pixels[0, 0, 10, 10] == pytest.approx(1.0)  # the crop is the white middle


def test_imagenet_statistics_by_default():
    processor = PiipLlavaImageProcessor(size=8)
    pixels = processor(Image.new("RGB", (8, 8), (0, 0, 0)))["pixel_values"]
    assert pixels[0, :, 0, 0].tolist() == pytest.approx([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rel=1e-5)


def test_processor_expands_image_tokens(tiny_llava):
    model, processor = tiny_llava
    inputs = processor(text="<image>\nhi", images=solid_image())
    ids = inputs["input_ids"][0]
    assert int((ids == processor.image_token_id).sum()) == model.config.image_seq_length == 64
    assert processor.tokenizer.convert_ids_to_tokens(processor.image_token_id) == "<image>"


def test_chat_template_renders_bos_once_on_every_path(tiny_llava):
    """The template renders BOS (as vLLM's chat endpoint, which adds no special tokens, needs); the tokens equal
    LLaVA's (the conversation's prompt + the tokenizer's BOS) through apply_chat_template and the processor."""
    from piip_llava.model.generation import chat_prompt

    _, processor = tiny_llava
    image_part = {"type": "image", "image": solid_image()}
    messages = [{"role": "user", "content": [image_part, {"type": "text", "text": "Color?"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == processor.tokenizer.bos_token + chat_prompt("Color?", image_count=1)
    expected = processor(text=chat_prompt("Color?", image_count=1), images=solid_image())["input_ids"]
    bos_id = processor.tokenizer.bos_token_id
    assert expected[0, 0] == bos_id and int((expected[0] == bos_id).sum()) == 1
    assert torch.equal(processor(text=rendered, images=solid_image())["input_ids"], expected)
    tokenized = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert tokenized["input_ids"].tolist() == expected.tolist()


def test_processor_errors(tiny_llava):
    _, processor = tiny_llava
    with pytest.raises(ValueError, match="2 <image> markers in the text but 1 images"):
        processor(text="<image><image>", images=[solid_image()])
    with pytest.raises(ValueError, match="cut inside an image span"):
        processor(text="hello <image> world", images=[solid_image()], truncation=True, max_length=20)


def test_streaming_and_stop_strings(tiny_llava):
    model, processor = tiny_llava
    inputs = processor(text="USER: <image>\nDescribe. ASSISTANT:", images=solid_image())
    with torch.no_grad():
        reference = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    new_tokens = reference[0, inputs["input_ids"].shape[1] :]
    expected_text = processor.decode(new_tokens, skip_special_tokens=True)

    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(**inputs, max_new_tokens=12, do_sample=False, streamer=streamer)
    thread = threading.Thread(target=lambda: model.generate(**kwargs))
    thread.start()
    chunks = list(streamer)
    thread.join()
    assert "".join(chunks) == expected_text and len(chunks) >= 2

    # Stop at the first occurrence of a string the greedy output contains (whole characters: a byte-level token
    # may hold half of one, which decodes to U+FFFD and can never match; two tokens, else one).
    windows = [processor.decode(new_tokens[i : i + n]) for n in (2, 1) for i in range(2, len(new_tokens) - 2)]
    stop = next(text for text in windows if "\ufffd" not in text and text.strip())
    with torch.no_grad():
        stopped = model.generate(
            **inputs, max_new_tokens=12, do_sample=False, stop_strings=[stop], tokenizer=processor.tokenizer
        )
    assert stopped.shape[1] < reference.shape[1]
    assert processor.decode(stopped[0, inputs["input_ids"].shape[1] :]).endswith(stop)


def test_sampling_is_seeded(tiny_llava):
    model, processor = tiny_llava
    inputs = processor(text="USER: <image>\nDescribe. ASSISTANT:", images=solid_image())
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        with torch.no_grad():
            outs.append(model.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=1.0, top_p=0.9))
    assert torch.equal(outs[0], outs[1])
