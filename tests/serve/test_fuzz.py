"""A corpus of hostile and malformed requests against ONE API server with a model of its own (``--model-path``,
remote images and a ``file://`` folder enabled, so every media path is reachable). Every case must get the 4xx it is
listed with, in OpenAI's error envelope, and the server must answer a good request correctly afterwards."""

import json
import os
import time

import httpx
import openai
import pytest
from PIL import Image

from piip_llava.serve.launch import Service, _module, free_port
from tests.serve.conftest import MODEL_NAME, running
from tests.serve.test_openai_api import RED_PNG, _png, bomb_png, data_url, image, text, user
from tests.serve.test_openai_api import _good as good

API_KEY = "sk-fuzz"
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-media")
    (folder / "red.png").write_bytes(RED_PNG)
    (folder.parent / "secret.png").write_bytes(RED_PNG)
    (folder / "escape.png").symlink_to(folder.parent / "secret.png")
    (folder / "loop-a").symlink_to(folder / "loop-b")
    (folder / "loop-b").symlink_to(folder / "loop-a")
    (folder / "self").symlink_to(folder / "self")
    (folder / "zero").symlink_to("/dev/zero")
    (folder / "subdir").mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    os.mkfifo(folder / "pipe.png")  # opening it for reading would block forever
    with open(folder / "sparse.png", "wb") as handle:  # 64 MiB that take no disk
        handle.truncate(64 << 20)
    return folder


@pytest.fixture(scope="module")
def server(served_model_dir, media_dir, tmp_path_factory):
    port = free_port()
    command = _module(
        "openai_api", "--model-path", served_model_dir, "--device", "cpu", "--port", port, "--api-key", API_KEY,
        "--allowed-local-media-path", media_dir, "--allow-remote-images", "--media-fetch-timeout", "2",
        "--max-body-bytes", MAX_BODY, "--max-prompt-chars", 100_000,
    )  # fmt: skip
    service = Service("api", command, f"http://127.0.0.1:{port}/health", tmp_path_factory.mktemp("logs") / "api.log")
    with running(service):
        yield f"http://127.0.0.1:{port}"


def _raw(obj) -> bytes:
    return json.dumps(obj).encode()


def _deep(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return b'{"model": "tiny", "messages": ' + (open_ * depth + close * depth).encode() + b"}"


def _image_cases(media: str) -> dict:
    strip = _png(Image.new("L", (1, 100_000)))
    return {
        "file: NUL byte": f"file://{media}/red.png%00.txt",
        "file: NUL byte alone": "file:///%00",
        "file: 5000-character path": f"file://{media}/" + "a" * 5000,
        "file: symlink loop": f"file://{media}/loop-a",
        "file: self-loop": f"file://{media}/self",
        "file: symlink out of the folder": f"file://{media}/escape.png",
        "file: symlink to /dev/zero": f"file://{media}/zero",
        "file: .. escape": f"file://{media}/../secret.png",
        "file: encoded .. escape": f"file://{media}/%2e%2e/secret.png",
        "file: /etc/passwd": "file:///etc/passwd",
        "file: /proc/self/environ": "file:///proc/self/environ",
        "file: a folder": f"file://{media}/subdir",
        "file: the allowed folder itself": f"file://{media}",
        "file: a FIFO": f"file://{media}/pipe.png",
        "file: not an image": f"file://{media}/notes.txt",
        "file: empty": f"file://{media}/empty.png",
        "file: 64 MiB sparse": f"file://{media}/sparse.png",
        "file: missing": f"file://{media}/missing.png",
        "file: remote host": f"file://example.com{media}/red.png",
        "image: 1x100000 strip (pad canvas 10^10 pixels)": data_url(strip),
        "image: 1x20000 strip": data_url(_png(Image.new("L", (1, 20_000)))),
        "image: 20000x1 strip": data_url(_png(Image.new("L", (20_000, 1)))),
        "image: 60x3600 (aspect 60)": data_url(_png(Image.new("L", (60, 3600)))),
        "image: header claims 200000x200000": data_url(bomb_png()),
        "image: header claims 1x100000": data_url(bomb_png(1, 100_000)),
        "image: header claims 7000x7000": data_url(bomb_png(7000, 7000)),
        "image: header claims 0x0": data_url(bomb_png(0, 0)),
        "image: GIF header only": data_url(b"GIF89a\x01\x00\x01\x00", "image/gif"),
        "image: JPEG magic only": data_url(b"\xff\xd8\xff\xe0" + b"\x00" * 20, "image/jpeg"),
        "image: PNG signature only": data_url(b"\x89PNG\r\n\x1a\n"),
        "image: zeros": data_url(bytes(1000)),
        "image: SVG": data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        "data: no payload": "data:image/png;base64,",
        "data: no comma": "data:image/png;base64",
        "data: wrong padding": "data:image/png;base64,AAA",
        "data: not base64 marked": "data:image/png;utf8,abc",
        "data: text type": data_url(RED_PNG, "text/html"),
        "url: empty": "",
        "url: spaces": "   ",
        "url: javascript": "javascript:alert(1)",
        "url: gopher": "gopher://127.0.0.1:70/_x",
        "url: relative": "/etc/passwd",
        "url: NUL": "\x00",
    }


SSRF_URLS = {
    "loopback 127.0.0.1": "http://127.0.0.1:{port}/health",
    "loopback 127.1": "http://127.1:{port}/health",
    "loopback decimal": "http://2130706433:{port}/health",
    "loopback hex": "http://0x7f000001:{port}/health",
    "loopback octal": "http://0177.0.0.1:{port}/health",
    "loopback localhost": "http://localhost:{port}/health",
    "loopback localhost.": "http://localhost.:{port}/health",
    "loopback [::1]": "http://[::1]:{port}/health",
    "loopback v4-mapped": "http://[::ffff:127.0.0.1]:{port}/health",
    "loopback v4-mapped hex": "http://[::ffff:7f00:1]:{port}/health",
    "unspecified 0.0.0.0": "http://0.0.0.0:{port}/health",
    "unspecified 0": "http://0:{port}/health",
    "unspecified [::]": "http://[::]:{port}/health",
    "link-local metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata name": "http://metadata.google.internal/computeMetadata/v1/",
    "link-local v6": "http://[fe80::1]/",
    "private 10/8": "http://10.0.0.1/",
    "private 172.16/12": "http://172.16.0.1/",
    "private 192.168/16": "http://192.168.1.1/",
    "carrier-grade NAT": "http://100.64.0.1/",
    "unique local v6": "http://[fd00::1]/",
    "multicast": "http://224.0.0.1/",
    "multicast v6": "http://[ff02::1]/",
    "broadcast": "http://255.255.255.255/",
    "6to4 of loopback": "http://[2002:7f00:1::]/",
    "closed port": "http://127.0.0.1:9/cat.png",
    "https loopback": "https://127.0.0.1:{port}/health",
    "credentials": "http://user:pass@127.0.0.1:{port}/health",
    "unresolvable": "http://no-such-host.invalid/cat.png",
}


def corpus(media_dir, port: int) -> list[tuple[str, object, int]]:
    """``(name, body, expected status)``: a body is bytes (sent as is) or an object (sent as JSON)."""
    media = str(media_dir)
    cases: list[tuple[str, object, int]] = []
    add = cases.append
    # -- JSON that breaks parsers
    for depth in (40, 1000, 5000, 100_000):
        add((f"arrays nested {depth} deep", _deep(depth), 400))
        add((f"objects nested {depth} deep", _deep(depth, '{"a":', "}"), 400))
    for field in ("max_tokens", "temperature", "top_p", "n", "max_completion_tokens"):
        add((f"5000-digit integer in {field}", _raw(good())[:-1] + f', "{field}": {"9" * 5000}}}'.encode(), 400))
    add(("5000-digit integer in an ignored field", _raw(good())[:-1] + b', "user": ' + b"1" * 5000 + b"}", 400))
    add(("negative 5000-digit integer", _raw(good())[:-1] + b', "max_tokens": -' + b"1" * 5000 + b"}", 400))
    for constant in ("NaN", "Infinity", "-Infinity"):
        add((f"temperature {constant}", _raw(good())[:-1] + f', "temperature": {constant}}}'.encode(), 400))
    add(("temperature 1e999", _raw(good())[:-1] + b', "temperature": 1e999}', 400))
    for where, body in {
        "message text": good(messages=[{"role": "user", "content": "a\ud800b"}]),
        "text part": good(messages=user(text("\udfff"))),
        "model": good(model="tiny\ud800"),
        "system message": good(messages=[{"role": "system", "content": "\ud83d"}, {"role": "user", "content": "hi"}]),
        "a key": {**good(), "x\ud800": 1},
        "stop": good(stop="\ud800"),
        "image url": good(messages=user(image("data:image/png;base64,\ud800"))),
    }.items():
        add((f"lone surrogate in {where}", json.dumps(body).encode(), 400))
    for name, raw in {
        "invalid UTF-8": b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        "UTF-16 body": json.dumps(good()).encode("utf-16"),
        "trailing garbage": _raw(good()) + b"xyz",
        "two objects": _raw(good()) + _raw(good()),
        "truncated": _raw(good())[:-3],
        "single quotes": b"{'model': 'tiny'}",
        "comments": b'{"model": "tiny" /* hi */}',
        "null": b"null",
        "number": b"12",
        "true": b"true",
        "empty object": b"{}",
        "whitespace": b"   \n ",
        "NUL bytes": b"\x00" * 100,
        "empty": b"",
        "unclosed string": b'{"model": "tiny',
        "bad escape": b'{"model": "\\x41"}',
    }.items():
        add((f"JSON: {name}", raw, 400))
    # -- loose types that OpenAI refuses
    for field, values in {
        "stream": ["yes", 1, "true", 0, [True]],
        "max_tokens": [True, "1", 1.5, "ten", [1], {}],
        "max_completion_tokens": [False, "4", 2.5],
        "n": ["1", True, 1.0, 2, 0, -1],
        "temperature": [True, "0", "hot", [0.5]],
        "top_p": ["1", False, 0, 1.5],
        "model": [123, None, [], {}, True],
        "messages": ["hi", {}, None, [], [1], [[]], [None]],
        "stop": [5, [1], ["a"] * 5, [""], {"a": 1}],
        "stream_options": ["yes", {"include_usage": "yes"}, {"bogus": True}, []],
        "ignore_eos": ["yes", 1],
    }.items():
        for value in values:
            add((f"{field}={json.dumps(value)}", good(**{field: value}), 400))
    add(("max_tokens over the context", good(max_tokens=10**9), 400))
    add(("max_tokens 2^63", good(max_tokens=2**63), 400))
    # -- OpenAI fields we do not implement: refused by name, not ignored
    for field, value in {
        "logprobs": True, "top_logprobs": 5, "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "required", "functions": [{"name": "f"}], "function_call": {"name": "f"},
        "response_format": {"type": "json_object"}, "seed": 7, "logit_bias": {"50": 10},
        "frequency_penalty": 0.5, "presence_penalty": -1.0, "audio": {"voice": "alloy"},
        "modalities": ["text", "audio"], "prediction": {"type": "content", "content": "x"},
        "reasoning_effort": "high", "web_search_options": {},
    }.items():  # fmt: skip
        add((f"unsupported {field}", good(**{field: value}), 400))
    # -- roles and message shapes
    for role in ("tool", "function", "", "USER", "System", None, 1):
        add((f"role {role!r}", good(messages=[{"role": role, "content": "hi"}]), 400))
    for name, messages in {
        "no role": [{"content": "hi"}],
        "null content": [{"role": "user", "content": None}],
        "numeric content": [{"role": "user", "content": 5}],
        "empty parts": user(),
        "part without type": user({"text": "hi"}),
        "audio part": user({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}),
        "text part with a number": user({"type": "text", "text": 5}),
        "image_url as a string": user({"type": "image_url", "image_url": "data:image/png;base64,AA"}),
        "image_url without url": user({"type": "image_url", "image_url": {}}),
        "image url a number": user(image(5)),
        "image detail bogus": user({"type": "image_url", "image_url": {"url": data_url(RED_PNG), "detail": "x"}}),
        "five images": user(*[image(data_url(RED_PNG))] * 5),
        "image from the assistant": [{"role": "assistant", "content": [image(data_url(RED_PNG))]}, *user(text("x"))],
        "last message from the assistant": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
        "system not first": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, *user(text("c"))],
        "<image> typed as text": user(text("look: <image>")),
        "text over --max-prompt-chars": user(text("x" * 100_001)),
    }.items():
        add((f"messages: {name}", good(messages=messages), 400))
    # -- media
    for name, url in _image_cases(media).items():
        add((name, good(messages=user(text("what is it?"), image(url))), 400))
    for name, url in SSRF_URLS.items():
        add((f"SSRF: {name}", good(messages=user(image(url.format(port=port)))), 400))
    # -- model
    add(("unknown model", good(model="gpt-9"), 404))
    add(("model name with a path", good(model="../tiny"), 404))
    return cases


def _send(server, body, headers=None, path="/v1/chat/completions", timeout=60):
    headers = {"Authorization": f"Bearer {API_KEY}", **(headers or {})}
    if isinstance(body, dict):
        return httpx.post(f"{server}{path}", json=body, headers=headers, timeout=timeout)
    return httpx.post(f"{server}{path}", content=body, headers=headers, timeout=timeout)


def _check_error(response, status):
    assert response.status_code == status, f"{response.status_code} (expected {status}): {response.text[:300]}"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["type"]
    return error


def test_corpus_gets_4xx_openai_errors_and_the_server_keeps_serving(server, media_dir):
    port = int(server.rsplit(":", 1)[1])
    cases = corpus(media_dir, port)
    assert len(cases) >= 150 and len({name for name, _, _ in cases}) == len(cases)
    failures, seconds = [], {}
    for name, body, status in cases:
        started = time.monotonic()
        try:
            response = _send(server, body, timeout=20)
            seconds[name] = time.monotonic() - started
            _check_error(response, status)
        except (AssertionError, ValueError, KeyError, httpx.HTTPError) as error:
            failures.append(f"{name}: {error}")
    assert not failures, "\n".join(failures)
    slowest = max(seconds, key=seconds.get)  # reported, not asserted: timing depends on the machine
    print(f"{len(cases)} cases, slowest {slowest!r}: {seconds[slowest]:.2f} s")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    answer = client.chat.completions.create(
        model=MODEL_NAME, messages=user(text("what color?"), image(data_url(RED_PNG))), max_tokens=4
    )
    assert answer.choices[0].message.role == "assistant" and answer.usage.completion_tokens >= 1


def test_unsupported_fields_are_named_and_defaults_pass(server):
    error = _check_error(_send(server, good(seed=3)), 400)
    assert error["param"] == "seed" and "seed" in error["message"]
    neutral = good(logprobs=False, tools=None, seed=None, frequency_penalty=0, response_format={"type": "text"})
    assert _send(server, neutral).status_code == 200
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.chat.completions.create(model=MODEL_NAME, messages=user(text("hi")), logprobs=True)


def test_remote_refusals_do_not_tell_open_from_closed_ports(server):
    open_port = _check_error(_send(server, good(messages=user(image(f"{server}/health")))), 400)
    closed_port = _check_error(_send(server, good(messages=user(image("http://127.0.0.1:9/x.png")))), 400)
    metadata = _check_error(_send(server, good(messages=user(image("http://169.254.169.254/")))), 400)
    assert open_port == closed_port == metadata


def test_chunked_body_over_the_limit_is_refused(server):
    def chunks():
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(3):
            yield b"x" * MAX_BODY
        yield b'"}]}'

    _check_error(_send(server, chunks()), 413)
    assert _send(server, good()).status_code == 200


def test_developer_role_is_system_and_model_routes(server):
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert _send(server, good(messages=messages)).status_code == 200
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(f"{server}{path}").status_code in (401, 404), path
    assert httpx.get(f"{server}/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"}).json()["paths"]
