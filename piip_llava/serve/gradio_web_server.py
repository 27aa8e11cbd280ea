"""The web demo (docs/design.md#serving: LLaVA's ``gradio_web_server.py``, here on Gradio 6). For each answer
it asks the controller which worker serves the chosen model and streams JSON-lines text deltas straight from that
worker's ``/worker_generate_stream``; Stop closes that stream, which frees the worker's batch row.

Chats, votes and flags are appended as JSON lines to ``LOG_DIR/YYYY-MM-DD-conv.json``; uploaded images are kept as
``LOG_DIR/serve_images/<md5>.jpg``.

    python -m piip_llava.serve.gradio_web_server --controller-address http://127.0.0.1:21001 --model-list-mode reload

Beyond LLaVA's demo: a working Stop button, readable errors in the chat (no worker, a refused request, an error in
the middle of a stream), the image shown in the conversation, and no template chosen from the model name (the
worker applies the model's own chat template).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
from PIL import Image

from .protocol import ApiError

logger = logging.getLogger(__name__)

# Radio label -> GenerateRequest.image_aspect_ratio (None: the model's own preprocessing).
ASPECT_MODES = {"Crop": "crop", "Resize": "resize", "Pad": "pad", "Default": None}
MAX_TEXT_CHARS, MAX_TEXT_CHARS_WITH_IMAGE = 1536, 1200  # LLaVA's cuts (an image takes prompt room)
MAX_LONG_SIDE, MAX_SHORT_SIDE = 1344, 672  # larger images are shrunk before they are sent (LLaVA's limits)
CURSOR = "▌"
STREAM_INTERVAL = 0.05  # seconds between chat updates while streaming (each update re-sends the conversation)
FEEDBACK = ("upvote", "downvote", "flag")


@dataclass
class ChatState:
    """One browser session's conversation, kept in a ``gr.State``. Handlers change it in place, so an answer that
    Stop cancels keeps the text streamed so far."""

    messages: list[dict] = field(default_factory=list)  # {"role", "content"} (+ "error" on a failed answer)
    image_b64: str | None = None  # what the worker gets (downscaled PNG)
    image_hash: str | None = None  # md5 of the uploaded image's RGB pixels
    image_path: str | None = None  # LOG_DIR/serve_images/<md5>.jpg
    aspect: str | None = None
    conv_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    model: str | None = None  # the model of the latest answer
    answer_start: float | None = None  # set from the start of an answer until it is logged
    streaming: bool = False  # an answer is running (a second Send or Regenerate meanwhile is ignored)
    skipped_answers: int = 0  # chains whose answer step did nothing: their finish step must do nothing either
    finish_reason: str | None = None
    parameters: dict = field(default_factory=dict)

    def worker_messages(self) -> list[dict]:
        """The history in the worker protocol: exchanges whose answer failed before any text are left out (so roles
        keep alternating); the image goes into the first user turn."""
        kept: list[dict] = []
        for message in self.messages:
            if message["role"] == "assistant" and message.get("error") and not message["content"]:
                if kept and kept[-1]["role"] == "user":
                    kept.pop()
                continue
            kept.append({"role": message["role"], "content": message["content"]})
        if self.image_b64 is not None:
            first = next(message for message in kept if message["role"] == "user")
            image = {"type": "image", "image": self.image_b64}
            first["content"] = [image, {"type": "text", "text": first["content"]}]
        return kept

    def chatbot(self, streaming: bool = False) -> list[dict]:
        """The conversation as ``gr.Chatbot`` messages; while ``streaming``, the last answer ends with a cursor."""
        rows = []
        for index, message in enumerate(self.messages):
            content = message["content"]
            if message["role"] == "assistant":
                if streaming and index == len(self.messages) - 1:
                    content += CURSOR
                if message.get("error"):
                    content = f"{content.rstrip()}\n\n**Error:** {message['error']}".strip()
            rows.append({"role": message["role"], "content": content})
        if self.image_path is not None:
            first = next(row for row in rows if row["role"] == "user")
            first["content"] = [{"path": self.image_path}, first["content"]]
        return rows

    def log_record(self) -> dict:
        conversation = [{key: m[key] for key in ("role", "content", "error") if key in m} for m in self.messages]
        images = [self.image_hash] if self.image_hash else []
        return {"model": self.model, "conv_id": self.conv_id, "conversation": conversation, "images": images}


def encode_for_worker(image: Image.Image) -> str:
    """RGB image -> base64 PNG, shrunk (aspect kept) when its long side is over ``MAX_LONG_SIDE``."""
    long_side, short_side = max(image.size), min(image.size)
    if long_side > MAX_LONG_SIDE:
        scale = min(MAX_LONG_SIDE / long_side, MAX_SHORT_SIDE / short_side)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _buttons(interactive: bool) -> list[gr.Button]:
    """Updates for Upvote, Downvote, Flag, Regenerate."""
    return [gr.Button(interactive=interactive) for _ in range(len(FEEDBACK) + 1)]


def _unchanged(count: int) -> tuple:
    """``count`` outputs left as they are."""
    return tuple(gr.skip() for _ in range(count))


class WebDemo:
    """The demo's handlers and what they share (controller URL, log folder).

    Args:
        controller_url: the controller that knows the workers.
        log_dir: where conversation logs and uploaded images go.
        model_list_mode: ``once`` (list models at start) or ``reload`` (again on every page load).
        read_timeout: seconds to wait for the worker's next line before giving up on an answer.
    """

    def __init__(
        self, controller_url: str, log_dir: str | Path, model_list_mode: str = "once", read_timeout: float = 120.0
    ) -> None:
        if model_list_mode not in ("once", "reload"):
            raise ValueError(f"model_list_mode={model_list_mode!r}: use 'once' or 'reload'")
        self.controller_url = controller_url.rstrip("/")
        self.log_dir = Path(log_dir)
        self.image_dir = self.log_dir / "serve_images"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.model_list_mode, self.read_timeout = model_list_mode, read_timeout
        self._log_lock = threading.Lock()
        self.models = self.list_models()

    # ------------------------------------------------------------------------------------------------------------
    # Controller

    def list_models(self, refresh: bool = False) -> list[str]:
        """Models the controller's workers serve ([] when it cannot be reached: the page still loads)."""
        try:
            if refresh:
                httpx.post(f"{self.controller_url}/refresh_all_workers", timeout=10.0).raise_for_status()
            response = httpx.post(f"{self.controller_url}/list_models", timeout=10.0)
            response.raise_for_status()
            return sorted(response.json()["models"])
        except (httpx.HTTPError, ValueError, KeyError) as error:
            logger.warning("cannot list models from %s: %s", self.controller_url, error)
            return []

    def load(self, request: gr.Request) -> gr.Dropdown:
        """Page load: the model list (fresh in ``reload`` mode); ``?model=NAME`` preselects a model."""
        if self.model_list_mode == "reload":
            self.models = self.list_models(refresh=True)
        wanted = request.query_params.get("model") if request else None
        value = wanted if wanted in self.models else (self.models[0] if self.models else None)
        return gr.Dropdown(choices=self.models, value=value)

    # ------------------------------------------------------------------------------------------------------------
    # Chat

    def add_text(self, state: ChatState, text: str, image: Image.Image | None, aspect: str):
        """A user turn. A new image starts a new conversation (one image per conversation, as in LLaVA)."""
        if state.streaming:
            gr.Warning("The answer is still coming: wait for it or press Stop.")
            return _unchanged(3 + len(FEEDBACK) + 1)
        text = (text or "").strip()
        if not text:
            return _unchanged(3 + len(FEEDBACK) + 1)
        if image is not None:
            rgb = image.convert("RGB")
            digest = hashlib.md5(rgb.tobytes()).hexdigest()
            if digest != state.image_hash:
                state = ChatState(image_b64=encode_for_worker(rgb), image_hash=digest)
                state.image_path = str(self._save_image(rgb, digest))
        limit = MAX_TEXT_CHARS_WITH_IMAGE if state.image_hash else MAX_TEXT_CHARS
        state.messages.append({"role": "user", "content": text[:limit]})
        state.aspect = ASPECT_MODES[aspect]
        return state, state.chatbot(), "", *_buttons(False)

    def regenerate(self, state: ChatState, aspect: str):
        """Drop the last answer; the chain then answers the last user turn again (with the current aspect mode)."""
        if state.streaming:
            return _unchanged(2 + len(FEEDBACK) + 1)
        if state.messages and state.messages[-1]["role"] == "assistant":
            state.messages.pop()
        state.aspect = ASPECT_MODES[aspect]
        return state, state.chatbot(), *_buttons(False)

    async def answer(
        self, state: ChatState, model: str | None, temperature: float, top_p: float, max_new_tokens: int
    ) -> AsyncIterator[tuple]:
        """Stream the answer to the last user turn into the chat (errors end up in it as readable text)."""
        if state.streaming or not state.messages or state.messages[-1]["role"] != "user":
            state.skipped_answers += 1  # nothing to answer (empty text), or an answer is already running
            yield _unchanged(2)
            return
        payload = {
            "model": model,
            "messages": state.worker_messages(),
            "max_new_tokens": int(max_new_tokens),
            "temperature": float(temperature),
            "top_p": max(float(top_p), 0.01),  # the protocol wants top_p > 0
            "image_aspect_ratio": state.aspect,
        }
        reply = {"role": "assistant", "content": ""}
        state.messages.append(reply)
        state.model, state.answer_start, state.finish_reason = model, time.time(), None
        state.parameters = {key: payload[key] for key in ("temperature", "top_p", "max_new_tokens")}
        state.parameters["image_aspect_ratio"] = state.aspect
        state.streaming = True
        try:
            yield state, state.chatbot(streaming=True)
            shown = time.monotonic()
            if not model:
                raise ApiError(
                    "no model is selected: no worker had registered with the controller when the list was made"
                )
            async for event in self._worker_events(payload):
                if "text" in event:
                    reply["content"] += event["text"]
                    if time.monotonic() - shown >= STREAM_INTERVAL:
                        shown = time.monotonic()
                        yield state, state.chatbot(streaming=True)
                else:
                    state.finish_reason = event.get("finish_reason", "stop")
            if state.finish_reason is None:
                raise ApiError("the worker closed the stream before the answer was finished")
        except ApiError as error:
            reply["error"], state.finish_reason = error.message, "error"
        finally:
            state.streaming = False  # also when Stop cancels this coroutine (or Gradio closes it at a yield)
        yield state, state.chatbot()

    async def _worker_events(self, payload: dict) -> AsyncIterator[dict]:
        """Controller -> worker address -> the worker's events; :class:`ApiError` for every failure."""
        timeout = httpx.Timeout(10.0, read=self.read_timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                response = await client.post(
                    f"{self.controller_url}/get_worker_address", json={"model": payload["model"]}
                )
                response.raise_for_status()
                address = response.json()["address"]
            except (httpx.HTTPError, ValueError, KeyError) as error:
                raise ApiError(f"cannot reach the controller at {self.controller_url} ({error})") from error
            if not address:
                raise ApiError(f"no worker serves {payload['model']!r} right now; reload the page or try later")
            try:
                async with client.stream("POST", f"{address}/worker_generate_stream", json=payload) as response:
                    if response.status_code != 200:
                        body = (await response.aread()).decode(errors="replace")
                        try:
                            body = json.loads(body)
                        except ValueError:
                            pass
                        error = ApiError.from_body(body, response.status_code)
                        raise ApiError(f"{error.message} (HTTP {response.status_code})", error.status)
                    async for line in response.aiter_lines():
                        if line.strip():
                            try:
                                event = json.loads(line)
                            except ValueError as error:
                                raise ApiError(f"the worker sent a line that is not JSON: {line[:100]!r}") from error
                            if "error" in event:
                                raise ApiError.from_body(event, 500)
                            yield event
            except httpx.HTTPError as error:
                raise ApiError(f"lost the worker at {address} ({type(error).__name__}: {error})") from error

    async def finish(self, state: ChatState, request: gr.Request):
        """After an answer, also one that Stop cancelled: log it, drop the cursor, enable the feedback buttons."""
        if state.skipped_answers:
            state.skipped_answers -= 1
            return _unchanged(2 + len(FEEDBACK) + 1)
        for _ in range(200):  # Gradio closes a cancelled answer before it reports the cancel; be sure anyway
            if not state.streaming:
                break
            await asyncio.sleep(0.01)
        if state.answer_start is not None:
            self._log_chat(state, request)
        answered = bool(state.messages) and state.messages[-1]["role"] == "assistant"  # failed answers too
        return state, state.chatbot(), *_buttons(answered)

    def clear(self, state: ChatState, request: gr.Request):
        if state.answer_start is not None:  # Clear cancelled a running answer
            self._log_chat(state, request)
        return ChatState(), [], "", None, *_buttons(False)

    def feedback_handler(self, kind: str) -> Callable:
        """Upvote / Downvote / Flag: logs the conversation; the three buttons stay off until the next answer."""

        def handler(state: ChatState, request: gr.Request):
            self._log(kind, state.log_record(), request)
            return "", *[gr.Button(interactive=False) for _ in FEEDBACK]

        handler.__name__ = kind
        return handler

    # ------------------------------------------------------------------------------------------------------------
    # Logs

    def _save_image(self, image: Image.Image, digest: str) -> Path:
        path = self.image_dir / f"{digest}.jpg"
        if not path.exists():
            image.save(path, format="JPEG", quality=95)
        return path

    def _log_chat(self, state: ChatState, request: gr.Request | None) -> None:
        reason = state.finish_reason or "stopped"
        record = {**state.log_record(), "start": round(state.answer_start, 4), "finish": round(time.time(), 4)}
        self._log("chat", {**record, "finish_reason": reason, "parameters": state.parameters}, request)
        state.answer_start = None

    def _log(self, kind: str, record: dict, request: gr.Request | None) -> None:
        client = getattr(request, "client", None) if request is not None else None
        line = {"tstamp": round(time.time(), 4), "type": kind, **record, "ip": getattr(client, "host", None)}
        path = self.log_dir / f"{time.strftime('%Y-%m-%d')}-conv.json"
        with self._log_lock, open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------------------------------------------------
    # Layout

    def build(self, concurrency_count: int = 16) -> gr.Blocks:
        with gr.Blocks(title="PIIP-LLaVA", analytics_enabled=False) as demo:
            state = gr.State(ChatState())
            gr.Markdown("# PIIP-LLaVA\nUpload an image, ask about it; a new image starts a new conversation.")
            with gr.Row():
                with gr.Column(scale=3):
                    model = gr.Dropdown(
                        choices=self.models, value=self.models[0] if self.models else None, label="Model",
                        interactive=True, elem_id="model-selector",
                    )  # fmt: skip
                    image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], elem_id="image-input")
                    aspect = gr.Radio(
                        list(ASPECT_MODES), value="Default", label="Preprocess for non-square image",
                        elem_id="aspect-mode",
                    )  # fmt: skip
                    with gr.Accordion("Parameters", open=False, elem_id="parameters"):
                        temperature = gr.Slider(
                            0.0, 1.0, value=0.2, step=0.1, label="Temperature", elem_id="temperature"
                        )
                        top_p = gr.Slider(0.0, 1.0, value=0.7, step=0.1, label="Top P")
                        max_tokens = gr.Slider(
                            16, 1024, value=512, step=16, label="Max output tokens", elem_id="max-tokens"
                        )
                with gr.Column(scale=8):
                    chatbot = gr.Chatbot(
                        label="PIIP-LLaVA", height=550, buttons=["copy", "copy_all"], feedback_options=None,
                        elem_id="chatbot",
                    )  # fmt: skip
                    with gr.Row():
                        textbox = gr.Textbox(
                            show_label=False, placeholder="Enter text and press ENTER", container=False, scale=8,
                            elem_id="chat-input",
                        )  # fmt: skip
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="send-button")
                        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-button")
                    with gr.Row():
                        feedback = [
                            gr.Button(label, interactive=False, elem_id=f"{kind}-button")
                            for kind, label in zip(FEEDBACK, ("Upvote", "Downvote", "Flag"))
                        ]
                        regenerate = gr.Button("Regenerate", interactive=False, elem_id="regenerate-button")
                        clear = gr.Button("Clear", elem_id="clear-button")
            ui = SimpleNamespace(
                state=state, model=model, image=image, aspect=aspect, temperature=temperature, top_p=top_p,
                max_tokens=max_tokens, chatbot=chatbot, textbox=textbox, send=send, stop=stop, feedback=feedback,
                regenerate=regenerate, clear=clear,
            )  # fmt: skip
            self._connect(ui, concurrency_count)
            demo.load(self.load, None, [model], api_visibility="private")
        return demo

    def _connect(self, ui: SimpleNamespace, concurrency_count: int) -> None:
        """The events: Send / Enter / Regenerate -> answer (streamed) -> finish; Stop and Clear cancel answers."""
        state, chatbot, textbox, image, aspect = ui.state, ui.chatbot, ui.textbox, ui.image, ui.aspect
        feedback, regenerate = ui.feedback, ui.regenerate
        buttons = [*feedback, regenerate]
        private = {"api_visibility": "private"}
        answers = []
        for trigger, handler, inputs, outputs in (
            (textbox.submit, self.add_text, [state, textbox, image, aspect], [state, chatbot, textbox, *buttons]),
            (ui.send.click, self.add_text, [state, textbox, image, aspect], [state, chatbot, textbox, *buttons]),
            (regenerate.click, self.regenerate, [state, aspect], [state, chatbot, *buttons]),
        ):
            answering = trigger(handler, inputs, outputs, **private).then(
                self.answer, [state, ui.model, ui.temperature, ui.top_p, ui.max_tokens], [state, chatbot],
                concurrency_id="answer", concurrency_limit=concurrency_count, **private,
            )  # fmt: skip
            answering.then(self.finish, [state], [state, chatbot, *buttons], **private)  # also after a Stop
            answers.append(answering)
        ui.stop.click(None, cancels=answers)
        for trigger in (ui.clear.click, chatbot.clear):  # the chat's own trash icon clears the conversation too
            trigger(self.clear, [state], [state, chatbot, textbox, image, *buttons], cancels=answers, **private)
        for kind, button in zip(FEEDBACK, feedback):
            button.click(self.feedback_handler(kind), [state], [textbox, *feedback], **private)


def build_demo(
    controller_url: str, log_dir: str | Path, model_list_mode: str = "once", concurrency_count: int = 16
) -> gr.Blocks:
    return WebDemo(controller_url, log_dir, model_list_mode).build(concurrency_count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--controller-address", "--controller-url", default="http://127.0.0.1:21001")
    parser.add_argument("--model-list-mode", default="once", choices=["once", "reload"])
    parser.add_argument("--log-dir", default="serve_logs/web", help="conversation logs and uploaded images")
    parser.add_argument("--concurrency-count", type=int, default=16, help="answers streamed at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo = WebDemo(args.controller_address, args.log_dir, args.model_list_mode)
    blocks = demo.build(args.concurrency_count)
    blocks.queue(default_concurrency_limit=args.concurrency_count, api_open=False).launch(
        server_name=args.host,
        server_port=args.port,
        footer_links=["gradio", "settings"],  # Gradio 6: replaces show_api=False
        allowed_paths=[str(demo.image_dir)],  # the chat shows the uploaded image from there
        max_file_size="20mb",
    )


if __name__ == "__main__":
    main()
