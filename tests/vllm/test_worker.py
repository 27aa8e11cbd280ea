"""``model_worker --engine vllm`` behind the controller and our OpenAI API (processes, as in production): the
official ``openai`` client gets HF ``generate``'s answer, streamed and not, through the unchanged stack."""

import base64
import io

import pytest

from piip_llava.model.generation import chat_prompt, generate_answers
from tests.conftest import solid_image
from tests.serve.conftest import MODEL_NAME, serving_stack
from tests.vllm.conftest import MAX_MODEL_LEN

QUESTION = "What color is this image?"


@pytest.fixture(scope="module")
def client(vllm_model_dir, tmp_path_factory):
    from openai import OpenAI

    worker_args = ("--engine", "vllm", "--model-name", MODEL_NAME, "--dtype", "float32")
    worker_args += ("--max-model-len", str(MAX_MODEL_LEN))
    with serving_stack(vllm_model_dir, tmp_path_factory.mktemp("vllm-stack"), worker_args=worker_args) as stack:
        api_url, _, _ = stack
        yield OpenAI(base_url=f"{api_url}/v1", api_key="none")


def test_the_stack_on_a_vllm_worker_answers_as_hf_generate(client, hf_model):
    model, processor = hf_model
    image = solid_image((30, 200, 60), size=(64, 40))
    expected = generate_answers(model, processor, [chat_prompt(QUESTION, image_count=1)], [image], 16)[0]
    assert expected, "the random model answered nothing: the comparison would be vacuous"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}],
        }
    ]
    answer = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0)
    assert answer.choices[0].message.content == expected
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0, stream=True
    )
    deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == expected
