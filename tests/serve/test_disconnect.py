"""A client that leaves mid-stream closes its event stream at once (the API app driven at the ASGI level, as uvicorn
drives it: ``http.disconnect`` from ``receive``). Before the body limit was a pure ASGI middleware, Starlette's
``BaseHTTPMiddleware`` sat between the server and the stream and abandoned streams kept generating."""

import asyncio
import json

from piip_llava.serve.api_router import build_app
from piip_llava.serve.media import MediaPolicy
from piip_llava.serve.serving import OpenAIServingChat


class EndlessBackend:
    """A model that never stops talking; counts the events it made and whether its stream was closed."""

    def __init__(self) -> None:
        self.produced, self.closed = 0, False

    async def model_names(self) -> list[str]:
        return ["m"]

    async def open_stream(self, request):
        async def events():
            try:
                while True:
                    self.produced += 1
                    yield {"text": "x"}
                    await asyncio.sleep(0)
            finally:
                self.closed = True

        return events()


async def _leave_after(app, chunks_read: int) -> int:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    left, state = asyncio.Event(), {"requested": False, "chunks": 0}

    async def receive():
        if not state["requested"]:
            state["requested"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            state["chunks"] += 1
            if state["chunks"] == chunks_read:
                left.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return state["chunks"]


def test_a_client_that_leaves_closes_its_stream():
    backend = EndlessBackend()
    chunks = asyncio.run(_leave_after(build_app(OpenAIServingChat(backend, MediaPolicy())), chunks_read=3))
    assert backend.closed
    # The role chunk, then one chunk per event: the stream stops within a few events of the client leaving
    # (the event loop turns that the disconnect takes to arrive), not after thousands.
    assert backend.produced <= chunks + 3, (backend.produced, chunks)
