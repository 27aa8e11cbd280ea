"""The web demo (piip_llava/serve/gradio_web_server.py).

In a real headless Chromium against real processes: controller, a model worker with a tiny random model and the
Gradio server, plus a fake worker in this process (a slow, endless stream for Stop; refusals and a failure in the
middle of a stream). In-process: the conversation rules (image in the first user turn, a new image restarts, failed
exchanges left out of the history) and errors before any worker is reached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image

from piip_llava.serve.gradio_web_server import CURSOR, ChatState, WebDemo
from piip_llava.serve.launch import controller_service, free_port, wait_for_model, web_service, worker_service
from tests.serve.conftest import MODEL_NAME as MODEL

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SLOW_MODEL = "slow-echo"


# ----------------------------------------------------------------------------------------------------------------
# In-process


def _demo(tmp_path) -> WebDemo:
    return WebDemo("http://127.0.0.1:9", tmp_path)  # nothing listens there: no models, the page would still load


def _pattern(size=(96, 64)) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata([(x * 2 % 256, y * 4 % 256, (x + y) % 256) for y in range(size[1]) for x in range(size[0])])
    return image


def test_history_keeps_the_image_in_the_first_user_turn_and_drops_failed_exchanges():
    state = ChatState(image_b64="QUJD", image_hash="abc")
    state.messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "", "error": "no worker"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "third"},
    ]
    assert state.worker_messages() == [
        {"role": "user", "content": [{"type": "image", "image": "QUJD"}, {"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "third"},
    ]
    state.messages[1] = {"role": "assistant", "content": "partly", "error": "lost the worker"}
    assert [m["role"] for m in state.worker_messages()] == ["user", "assistant", "user", "assistant", "user"]
    assert "**Error:** lost the worker" in state.chatbot()[1]["content"]


def test_a_new_image_restarts_the_conversation(tmp_path):
    demo = _demo(tmp_path)
    first, second = _pattern(), _pattern((64, 96))
    state, *_ = demo.add_text(ChatState(), "What is it?", first, "Default")
    state.messages.append({"role": "assistant", "content": "a pattern"})
    same, *_ = demo.add_text(state, "x" * 5000, first, "Pad")
    assert same is state and len(state.messages) == 3 and len(state.messages[2]["content"]) == 1200
    assert state.aspect == "pad"
    digest = hashlib.md5(first.tobytes()).hexdigest()
    assert state.image_hash == digest and (tmp_path / "serve_images" / f"{digest}.jpg").is_file()
    restarted, *_ = demo.add_text(state, "And this one?", second, "Default")
    assert restarted is not state and restarted.conv_id != state.conv_id
    assert restarted.messages == [{"role": "user", "content": "And this one?"}]
    assert restarted.image_hash == hashlib.md5(second.tobytes()).hexdigest()


async def _answer_updates(demo: WebDemo, state: ChatState, model: str | None) -> list[tuple]:
    return [update async for update in demo.answer(state, model, 0.2, 0.7, 16)]


def test_a_second_send_while_an_answer_streams_changes_nothing(tmp_path):
    demo = _demo(tmp_path)
    state, *_ = demo.add_text(ChatState(), "first", None, "Default")
    state.messages.append({"role": "assistant", "content": "half an ans"})
    state.streaming, state.answer_start = True, time.time()  # as while `answer` streams
    unchanged = {"__type__": "update"}
    with pytest.warns(UserWarning, match="still coming"):
        assert all(output == unchanged for output in demo.add_text(state, "second", None, "Default"))
    assert all(output == unchanged for output in demo.regenerate(state, "Default"))
    # The second chain's answer and finish steps leave the running answer alone...
    assert asyncio.run(_answer_updates(demo, state, "tiny")) == [(unchanged, unchanged)]
    assert all(output == unchanged for output in asyncio.run(demo.finish(state, None)))
    assert len(state.messages) == 2 and not list(tmp_path.glob("*-conv.json"))
    # ...and the first chain's finish, once its answer is over, logs it and renders it.
    state.streaming, state.finish_reason = False, "stop"
    _, chat, *buttons = asyncio.run(demo.finish(state, None))
    assert chat[-1]["content"] == "half an ans" and all(button.interactive for button in buttons)
    assert len(list(tmp_path.glob("*-conv.json"))) == 1


def test_errors_before_a_worker_is_reached_end_up_in_the_chat(tmp_path):
    demo = _demo(tmp_path)
    for model, expected in ((None, "no model is selected"), ("tiny", "cannot reach the controller")):
        state, *_ = demo.add_text(ChatState(), "Hello?", None, "Default")
        updates = asyncio.run(_answer_updates(demo, state, model))
        assert updates[-1][1][-1]["content"].startswith("**Error:** " + expected)
        assert not state.streaming and state.finish_reason == "error"


# ----------------------------------------------------------------------------------------------------------------
# A fake worker: endless slow stream (Stop), refusal, failure in the middle of a stream


class FakeWorker:
    """Streams ``word0 word1 ...`` every 50 ms for 20 s; the last user text ``refuse`` gets a 400 and ``fail
    midway`` an error event after three words. ``closed`` is set when a stream ends, however it ends."""

    def __init__(self) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = threading.Event()
        self.words_sent = 0
        app = FastAPI()

        @app.post("/worker_get_status")
        async def status():
            return {"model_names": [SLOW_MODEL], "speed": 1, "queue_length": 0}

        @app.post("/worker_generate_stream")
        async def generate(request: Request):
            body = await request.json()
            text = body["messages"][-1]["content"]
            if text == "refuse":
                error = {"message": "refused by the fake worker", "type": "invalid_request_error"}
                return JSONResponse({"error": error}, status_code=400)
            self.closed.clear()

            async def events():
                try:
                    for index in range(400):
                        if text == "fail midway" and index == 3:
                            yield json.dumps({"error": {"message": "the fake worker broke down"}}) + "\n"
                            return
                        self.words_sent = index + 1
                        yield json.dumps({"text": f"word{index} "}) + "\n"
                        await asyncio.sleep(0.05)
                    yield json.dumps({"finish_reason": "length", "usage": {}}) + "\n"
                finally:
                    self.closed.set()

            return StreamingResponse(events(), media_type="application/x-ndjson")

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, controller: str) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        payload = {"worker_name": self.url, "check_heart_beat": False, "worker_status": None}
        httpx.post(f"{controller}/register_worker", json=payload, timeout=10).raise_for_status()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


# ----------------------------------------------------------------------------------------------------------------
# Real processes and a browser


@pytest.fixture(scope="module")
def stack(served_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    logs, web_logs = root / "logs", root / "conversations"
    controller_port, worker_port, web_port = free_port(), free_port(), free_port()
    controller = f"http://127.0.0.1:{controller_port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    services = [controller_service(controller_port, logs).start(env)]
    fake = FakeWorker()
    try:
        services[0].wait_ready()
        fake.start(controller)
        services += [
            worker_service(served_model_dir, worker_port, controller, logs).start(env),
            web_service(web_port, controller, logs, "--log-dir", web_logs, "--model-list-mode", "reload").start(env),
        ]
        for service in services[1:]:
            service.wait_ready()
        wait_for_model(controller, MODEL)
        yield SimpleNamespace(url=f"http://127.0.0.1:{web_port}", log_dir=web_logs, fake=fake)
    finally:
        for service in reversed(services):
            service.stop()
        fake.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium): the web demo needs a real browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, stack):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(stack.url, wait_until="domcontentloaded")
    page.wait_for_selector("#chat-input textarea", timeout=30_000)
    yield page
    page.close()


def _select_model(page, name: str) -> None:
    page.locator("#model-selector input").click()
    page.locator("[role=option]", has_text=name).first.click()
    assert page.locator("#model-selector input").input_value() == name


def _set_parameters(page, **values: float) -> None:
    """``max_tokens=64, temperature=0`` -> the sliders with those elem_ids (through their number boxes)."""
    from playwright.sync_api import expect

    page.locator("#parameters").get_by_text("Parameters").click()
    for name, value in values.items():
        number = page.locator(f"#{name.replace('_', '-')} input[type=number]")
        slider = page.locator(f"#{name.replace('_', '-')} input[type=range]")
        expect(number).to_be_visible()
        # The slider takes the value when the box commits it; a click before that sends the old value. Under load
        # the opening accordion can still redraw the box after a first fill (seen once: the slider kept 512), so
        # the value is typed again until the slider has it.
        for attempt in range(3):
            number.fill(str(value))
            number.press("Tab")
            try:
                expect(slider).to_have_value(str(value), timeout=3000)
                break
            except AssertionError:
                if attempt == 2:
                    raise


def _send(page, text: str) -> None:
    page.locator("#chat-input textarea").fill(text)
    page.locator("#send-button").click()


def _answers(page) -> list[str]:
    return page.locator("#chatbot [data-testid=bot]").all_inner_texts()


def _wait_idle(page) -> None:
    """Until the answer is over: ``finish`` enables Regenerate and drops the cursor."""
    page.wait_for_selector("#regenerate-button:not([disabled])", timeout=60_000)
    page.wait_for_function(f"() => !document.querySelector('#chatbot').innerText.includes('{CURSOR}')")


def _log_records(stack, count: int, timeout: float = 10.0) -> list[dict]:
    """The conversation log once it has ``count`` records."""
    deadline = time.monotonic() + timeout
    while True:
        records = [json.loads(line) for path in stack.log_dir.glob("*-conv.json") for line in path.open()]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


# Records the text of the last answer on every change of the chat, to see it grow while it streams.
WATCH_ANSWER = """() => {
    window.answerTexts = [];
    const chat = document.querySelector('#chatbot');
    new MutationObserver(() => {
        const answers = chat.querySelectorAll('[data-testid=bot]');
        if (answers.length) window.answerTexts.push(answers[answers.length - 1].innerText);
    }).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def test_question_about_an_image_streams_an_answer_and_is_logged(page, stack, tmp_path):
    before = len(_log_records(stack, 0, timeout=0))
    image_path = tmp_path / "pattern.png"
    _pattern().save(image_path)
    _select_model(page, MODEL)
    _set_parameters(page, max_tokens=64, temperature=0)  # greedy: the same answer every run
    page.locator("#image-input input[type=file]").set_input_files(str(image_path))
    page.wait_for_selector("#image-input img")
    _send(page, "What is in this image?")
    _wait_idle(page)

    # That the answer grows in the page while it streams is checked with the fake worker's paced stream
    # (test_stop_closes_the_worker_stream): the tiny model can finish before the browser paints twice.
    (answer,) = _answers(page)
    assert answer.strip() and CURSOR not in answer and "Error" not in answer
    assert page.locator("#chatbot img").count() >= 1  # the image is shown in the user's turn
    screenshot = tmp_path / "web_demo.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("PIIP_SCREENSHOT_DIR"):
        Path(os.environ["PIIP_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(os.environ["PIIP_SCREENSHOT_DIR"]) / "web_demo.png")

    record = _log_records(stack, before + 1)[-1]
    digest = hashlib.md5(Image.open(image_path).convert("RGB").tobytes()).hexdigest()
    assert record["type"] == "chat" and record["model"] == MODEL and record["images"] == [digest]
    assert record["finish_reason"] in ("stop", "length")
    assert record["parameters"]["max_new_tokens"] == 64 and record["parameters"]["temperature"] == 0
    question, reply = record["conversation"]
    assert question == {"role": "user", "content": "What is in this image?"} and reply["content"].strip()
    assert (stack.log_dir / "serve_images" / f"{digest}.jpg").is_file()


def test_regenerate_replaces_the_answer_then_votes_and_clear(page, stack):
    before = len(_log_records(stack, 0, timeout=0))
    _select_model(page, MODEL)
    _set_parameters(page, max_tokens=16)
    _send(page, "Say something.")
    _wait_idle(page)
    page.locator("#regenerate-button").click()
    first, second = _log_records(stack, before + 2)[before:]
    _wait_idle(page)
    assert first["conv_id"] == second["conv_id"] and len(second["conversation"]) == 2  # replaced, not appended
    assert len(_answers(page)) == 1
    page.locator("#upvote-button").click()
    vote = _log_records(stack, before + 3)[-1]
    assert vote["type"] == "upvote" and vote["conversation"] == second["conversation"]
    page.wait_for_selector("#upvote-button[disabled]")  # one vote per answer
    page.locator("#clear-button").click()
    page.wait_for_function("() => !document.querySelector('#chatbot [data-testid=user]')")
    assert _answers(page) == [] and page.locator("#regenerate-button[disabled]").count() == 1


def test_stop_closes_the_worker_stream(page, stack):
    before = len(_log_records(stack, 0, timeout=0))
    _select_model(page, SLOW_MODEL)
    page.evaluate(WATCH_ANSWER)
    _send(page, "Count for me.")
    page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('word3')")
    _send(page, "Another question meanwhile.")  # ignored while the answer streams; the text stays for later
    page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('word12')")
    assert len(_answers(page)) == 1 and CURSOR in _answers(page)[0]
    seen = page.evaluate("window.answerTexts")
    partial = {text.removesuffix(CURSOR).strip() for text in seen if text.endswith(CURSOR)} - {""}
    assert len(partial) >= 2, f"expected the answer to grow while streaming, saw {seen[:10]}"
    assert page.locator("#chat-input textarea").input_value() == "Another question meanwhile."
    page.locator("#stop-button").click()
    assert stack.fake.closed.wait(5), "the worker's stream was still open 5 s after Stop"
    assert stack.fake.words_sent < 200  # 400 words take 20 s
    _wait_idle(page)
    record = _log_records(stack, before + 1)[-1]
    assert record["model"] == SLOW_MODEL and record["finish_reason"] == "stopped"
    assert record["conversation"][1]["content"].startswith("word0 word1 word2 word3")
    assert [m["content"] for m in record["conversation"] if m["role"] == "user"] == ["Count for me."]


def test_worker_errors_are_shown_in_the_chat(page, stack):
    _select_model(page, SLOW_MODEL)
    _send(page, "refuse")
    _wait_idle(page)
    assert _answers(page)[-1].startswith("Error: refused by the fake worker (HTTP 400)")
    _send(page, "fail midway")
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=bot]').length == 2")
    _wait_idle(page)
    answer = _answers(page)[-1]
    assert answer.startswith("word0 word1 word2") and answer.endswith("Error: the fake worker broke down")
