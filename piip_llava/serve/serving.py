"""The OpenAI Chat Completions handler and the two places generations come from: a model loaded in this process
(:class:`LocalBackend`) or workers found through a controller (:class:`ControllerBackend`)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Protocol

import httpx

from .engine import GenerationEngine
from .media import MediaPolicy, decode_image, fetch_image_bytes
from .protocol import ApiError, ChatCompletionRequest, GenerateRequest, completion_id, now

logger = logging.getLogger(__name__)


class Backend(Protocol):
    async def model_names(self) -> list[str]: ...

    async def open_stream(self, request: GenerateRequest) -> AsyncIterator[dict]:
        """Raises :class:`ApiError` if the request is refused; otherwise the worker's events."""
        ...


class LocalBackend:
    def __init__(self, engine: GenerationEngine) -> None:
        self.engine = engine

    async def model_names(self) -> list[str]:
        return [self.engine.model_name]

    async def open_stream(self, request: GenerateRequest) -> AsyncIterator[dict]:
        return await self.engine.open_stream(request)


class ControllerBackend:
    """Asks the controller for a worker per request; a worker that cannot be reached is skipped (up to
    ``attempts`` workers) so a dead worker costs no request while the controller has not yet expired it."""

    def __init__(self, controller: str, attempts: int = 3) -> None:
        self.controller, self.attempts = controller.rstrip("/"), attempts
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))

    async def _post(self, path: str, payload: dict | None = None) -> dict:
        try:
            response = await self.client.post(f"{self.controller}{path}", json=payload)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ApiError(f"controller unreachable: {error}", 503, "server_error") from error

    async def model_names(self) -> list[str]:
        return (await self._post("/list_models"))["models"]

    async def open_stream(self, request: GenerateRequest) -> AsyncIterator[dict]:
        tried: list[str] = []
        # Up to 4 base64 images: encoding is CPU work that grows with them, so not on the event loop.
        body = await asyncio.to_thread(request.model_dump_json)
        for _ in range(self.attempts):
            address = (await self._post("/get_worker_address", {"model": request.model, "exclude": tried}))["address"]
            if not address:
                break
            try:
                upstream = self.client.build_request(
                    "POST", f"{address}/worker_generate_stream", content=body,
                    headers={"content-type": "application/json"},
                )  # fmt: skip
                response = await self.client.send(upstream, stream=True)
            except httpx.TransportError as error:
                logger.warning("worker %s unreachable (%s); trying another", address, error)
                tried.append(address)
                continue
            if response.status_code != 200:
                body = await response.aread()
                await response.aclose()
                try:
                    raise ApiError.from_body(json.loads(body), response.status_code)
                except json.JSONDecodeError:
                    raise ApiError.from_body(body.decode(errors="replace"), response.status_code) from None
            return self._events(response, address)
        if tried:
            raise ApiError(f"no reachable worker serves {request.model!r} (tried {tried})", 503, "server_error")
        raise ApiError(f"the model {request.model!r} does not exist", 404, code="model_not_found", param="model")

    @staticmethod
    async def _events(response: httpx.Response, address: str) -> AsyncIterator[dict]:
        finished = False
        try:
            async for line in response.aiter_lines():
                if line:
                    event = json.loads(line)
                    finished = "text" not in event
                    yield event
        except httpx.HTTPError as error:
            logger.warning("worker %s failed mid-stream: %s", address, error)
        finally:
            await response.aclose()
        if not finished:
            yield ApiError(f"the worker serving this request failed ({address})", 502, "server_error").body()


class OpenAIServingChat:
    """``POST /v1/chat/completions``: request -> worker request -> a response dict or SSE lines."""

    def __init__(self, backend: Backend, media: MediaPolicy) -> None:
        self.backend, self.media = backend, media

    def _checked_base64(self, data: bytes, param: str) -> str:
        """Refuse a bad image here, before any worker sees it (CPU work: callers run it off the event loop)."""
        decode_image(data, self.media, param)
        return base64.b64encode(data).decode()

    async def to_generate_request(self, request: ChatCompletionRequest) -> GenerateRequest:
        if request.n not in (None, 1):
            raise ApiError("only n=1 is supported", param="n", code="unsupported_parameter")
        max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        messages, image_count = [], 0
        for index, message in enumerate(request.messages):
            role = "system" if message.role == "developer" else message.role  # as OpenAI serves older models
            if message.content is None or message.content == []:
                raise ApiError(f"messages[{index}] has no content", param=f"messages[{index}].content")
            if isinstance(message.content, str):
                messages.append({"role": role, "content": message.content})
                continue
            parts = []
            for part_index, part in enumerate(message.content):
                param = f"messages[{index}].content[{part_index}]"
                if part.type == "text":
                    parts.append({"type": "text", "text": part.text})
                    continue
                image_count += 1
                if image_count > self.media.max_images:
                    raise ApiError(f"at most {self.media.max_images} images per request", param=param)
                data = await fetch_image_bytes(part.image_url.url, self.media, param)
                parts.append({"type": "image", "image": await asyncio.to_thread(self._checked_base64, data, param)})
            messages.append({"role": role, "content": parts})
        return GenerateRequest(
            model=request.model,
            messages=messages,
            max_new_tokens=max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=request.stop_list(),
            ignore_eos=request.ignore_eos,
        )

    async def create(self, request: ChatCompletionRequest) -> dict | AsyncIterator[str]:
        if request.model not in await self.backend.model_names():
            raise ApiError(f"the model {request.model!r} does not exist", 404, param="model", code="model_not_found")
        events = await self.backend.open_stream(await self.to_generate_request(request))
        head = {"id": completion_id(), "created": now(), "model": request.model}
        if request.stream:
            usage = request.stream_options is not None and request.stream_options.include_usage
            return self._stream(events, head, usage)
        return await self._complete(events, head)

    @staticmethod
    async def _complete(events: AsyncIterator[dict], head: dict) -> dict:
        pieces = []
        async with aclosing(events):
            async for event in events:
                if "error" in event:
                    raise ApiError.from_body(event, 500)
                if "text" in event:
                    pieces.append(event["text"])
                    continue
                message = {"role": "assistant", "content": "".join(pieces)}
                choice = {"index": 0, "message": message, "finish_reason": event["finish_reason"], "logprobs": None}
                return {**head, "object": "chat.completion", "choices": [choice], "usage": event["usage"]}
        raise ApiError("the generation ended without a result", 502, "server_error")

    @staticmethod
    async def _stream(events: AsyncIterator[dict], head: dict, include_usage: bool) -> AsyncIterator[str]:
        def chunk(delta: dict, finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        async with aclosing(events):  # a client that disconnects frees its batch row at once
            async for event in events:
                if "error" in event:
                    yield f"data: {json.dumps(event)}\n\n"
                    break
                if "text" in event:
                    yield chunk({"content": event["text"]})
                    continue
                yield chunk({}, event["finish_reason"])
                if include_usage:
                    usage = {**head, "object": "chat.completion.chunk", "choices": [], "usage": event["usage"]}
                    yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"
