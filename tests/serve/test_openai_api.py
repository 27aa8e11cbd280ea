"""The OpenAI-compatible API as users call it: real controller, worker and API processes on 127.0.0.1, the official
``openai`` client, and 40+ malformed requests that must each get a 4xx OpenAI error while the server keeps serving."""

import base64
import io
import struct
import zlib

import httpx
import openai
import pytest
from PIL import Image

from tests.serve.conftest import MODEL_NAME, serving_stack

API_KEY = "sk-test-key"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


RED_PNG = _png(Image.new("RGB", (64, 48), (220, 30, 30)))


def bomb_png(width: int = 200_000, height: int = 200_000) -> bytes:
    """A valid 1x1 PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    data = bytearray(_png(Image.new("L", (1, 1))))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.fixture(scope="module")
def allowed_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "red.png").write_bytes(RED_PNG)
    (folder.parent / "secret.png").write_bytes(RED_PNG)
    return folder


@pytest.fixture(scope="module")
def stack(served_model_dir, allowed_dir, tmp_path_factory):
    api_args = ("--api-key", API_KEY, "--allowed-local-media-path", str(allowed_dir), "--max-images-per-request", "4")
    with serving_stack(served_model_dir, tmp_path_factory.mktemp("logs"), api_args=api_args) as (api, controller, _):
        yield api


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=f"{stack}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def text(value):
    return {"type": "text", "text": value}


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def test_models_lists_the_workers_model(client, stack):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert httpx.get(f"{stack}/health").json()["status"] == "ok"  # no key needed for health


def test_non_stream_and_stream_with_an_image(client):
    messages = user(text("What color is this image?"), image(data_url(RED_PNG)))
    answer = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens <= 16
    assert answer.usage.prompt_tokens > 16  # the image tokens count

    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2  # incremental, not one cumulative blob
    assert "".join(deltas) == answer.choices[0].message.content  # greedy: same text both ways
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [answer.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == answer.usage.total_tokens


def test_file_url_inside_the_allowed_folder(client, allowed_dir):
    messages = user(text("What is it?"), image(f"file://{allowed_dir / 'red.png'}"))
    answer = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=4)
    assert answer.usage.completion_tokens >= 1


def test_sse_ends_with_done(stack):
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    response = httpx.post(f"{stack}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events)


def _good(**overrides):
    return {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **overrides}


def _bad_cases(allowed_dir):
    long_text = "word " * 6000
    return {
        "not json": b"{not json",
        "json array": b"[1, 2]",
        "empty body": b"",
        "json string": b'"hello"',
        "missing model": {"messages": [{"role": "user", "content": "hi"}]},
        "missing messages": {"model": MODEL_NAME},
        "empty messages": _good(messages=[]),
        "messages not a list": _good(messages="hi"),
        "message not an object": _good(messages=[1]),
        "unknown role": _good(messages=[{"role": "robot", "content": "hi"}]),
        "missing role": _good(messages=[{"content": "hi"}]),
        "null user content": _good(messages=[{"role": "user", "content": None}]),
        "empty content list": _good(messages=user()),
        "unknown part type": _good(messages=user({"type": "audio", "audio": "x"})),
        "text part without text": _good(messages=user({"type": "text"})),
        "image_url without url": _good(messages=user({"type": "image_url", "image_url": {}})),
        "image_url as a string": _good(messages=user({"type": "image_url", "image_url": "data:image/png;base64,AA"})),
        "url not a string": _good(messages=user(image(123))),
        "bad base64": _good(messages=user(text("x"), image("data:image/png;base64,@@not-base64@@"))),
        "data url not an image type": _good(messages=user(image(data_url(b"hello", "text/plain")))),
        "data url without base64": _good(messages=user(image("data:image/png,rawbytes"))),
        "non-image bytes": _good(messages=user(text("x"), image(data_url(b"hello world, not an image")))),
        "truncated png": _good(messages=user(image(data_url(RED_PNG[:40])))),
        "decompression bomb": _good(messages=user(image(data_url(bomb_png())))),
        "too many images": _good(messages=user(text("x"), *[image(data_url(RED_PNG))] * 5)),
        "prompt over the context": _good(messages=user(text(long_text))),
        "max_tokens over the context": _good(max_tokens=10**9),
        "negative max_tokens": _good(max_tokens=-5),
        "zero max_tokens": _good(max_tokens=0),
        "max_tokens not a number": _good(max_tokens="ten"),
        "negative max_completion_tokens": _good(max_completion_tokens=-1),
        "unknown model": _good(model="gpt-9"),
        "file url outside the allowed folder": _good(messages=user(image("file:///etc/passwd"))),
        "file url escaping with ..": _good(messages=user(image(f"file://{allowed_dir}/../secret.png"))),
        "file url to a missing file": _good(messages=user(image(f"file://{allowed_dir}/missing.png"))),
        "http url when disabled": _good(messages=user(image("http://127.0.0.1:9/cat.png"))),
        "unsupported url scheme": _good(messages=user(image("ftp://example.com/cat.png"))),
        "temperature too high": _good(temperature=5),
        "negative temperature": _good(temperature=-1),
        "temperature not a number": _good(temperature="hot"),
        "top_p zero": _good(top_p=0),
        "top_p above one": _good(top_p=2),
        "n above one": _good(n=2),
        "five stop strings": _good(stop=["a", "b", "c", "d", "e"]),
        "empty stop string": _good(stop=[""]),
        "tools": _good(tools=[{"type": "function", "function": {"name": "f"}}]),
        "image in an assistant message": _good(
            messages=[{"role": "assistant", "content": [image(data_url(RED_PNG))]}, {"role": "user", "content": "hi"}]
        ),
        "<image> typed in the text": _good(messages=user(text("see <image> here"))),
        "last message from the assistant": _good(messages=[{"role": "assistant", "content": "hello"}]),
        "system message not first": _good(
            messages=[{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}, *user(text("x"))]
        ),
        "stream not a boolean": _good(stream=[1]),
        "stream_options unknown field": _good(stream=True, stream_options={"include_everything": True}),
    }


def _post(stack, body, headers=None):
    headers = {"Authorization": f"Bearer {API_KEY}", **(headers or {})}
    if isinstance(body, bytes):
        return httpx.post(f"{stack}/v1/chat/completions", content=body, headers=headers, timeout=60)
    return httpx.post(f"{stack}/v1/chat/completions", json=body, headers=headers, timeout=60)


def _assert_openai_error(response, status=None):
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert set(error) == {"message", "type", "param", "code"}


def test_bad_requests_get_4xx_openai_errors_and_the_server_keeps_serving(stack, allowed_dir):
    cases = _bad_cases(allowed_dir)
    assert len(cases) >= 40
    failures = []
    for name, body in cases.items():
        response = _post(stack, body)
        try:
            _assert_openai_error(response, 404 if name == "unknown model" else 400)
        except (AssertionError, ValueError, KeyError) as error:
            failures.append(f"{name}: {response.status_code} {response.text[:200]} ({error})")
    assert not failures, "\n".join(failures)
    assert _post(stack, _good()).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "not bearer", "empty"],
)
def test_api_keys(stack, headers):
    response = httpx.post(f"{stack}/v1/chat/completions", json=_good(), headers=headers)
    _assert_openai_error(response, 401)
    assert response.json()["error"]["code"] == "invalid_api_key"
    _assert_openai_error(httpx.get(f"{stack}/v1/models", headers=headers), 401)


def test_wrong_method_and_route(stack):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    _assert_openai_error(httpx.get(f"{stack}/v1/chat/completions", headers=headers), 405)
    _assert_openai_error(httpx.post(f"{stack}/v1/nothing-here", headers=headers), 404)


def test_openai_client_raises_on_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="base64"):
        client.chat.completions.create(model=MODEL_NAME, messages=user(image("data:image/png;base64,!!!")))
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="nope", max_retries=0).models.list()
