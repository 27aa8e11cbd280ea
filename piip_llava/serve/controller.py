"""The controller: workers register and heart-beat, clients ask it which worker serves a model
(docs/design.md#serving; same endpoints and payloads as LLaVA's). It can register with a parent controller as a
worker itself (``/worker_get_status`` aggregates, ``/worker_generate_stream`` proxies), so controllers nest.

    python -m piip_llava.serve.controller --host 127.0.0.1 --port 21001
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from .http import install_error_handlers, load_json, serve_app
from .protocol import ApiError

logger = logging.getLogger(__name__)

DISPATCH_METHODS = ("shortest_queue", "lottery")


@dataclass
class WorkerInfo:
    model_names: list[str]
    speed: float
    queue_length: int
    check_heart_beat: bool
    last_heart_beat: float


class Controller:
    """Worker registry and dispatch. ``heart_beat_expiration``: seconds without a heart beat before a worker that
    asked for checking is dropped."""

    def __init__(self, dispatch_method: str = "shortest_queue", heart_beat_expiration: float = 30.0) -> None:
        if dispatch_method not in DISPATCH_METHODS:
            raise ValueError(f"dispatch_method={dispatch_method!r} is not one of {DISPATCH_METHODS}")
        self.dispatch_method = dispatch_method
        self.heart_beat_expiration = heart_beat_expiration
        self.workers: dict[str, WorkerInfo] = {}

    async def register(self, address: str, check_heart_beat: bool, status: dict | None) -> bool:
        if status is None:
            status = await self._poll(address)
            if status is None:
                return False
        self.workers[address] = WorkerInfo(
            list(status["model_names"]), float(status.get("speed", 1)), int(status.get("queue_length", 0)),
            check_heart_beat, time.monotonic(),
        )  # fmt: skip
        logger.info("registered worker %s serving %s", address, status["model_names"])
        return True

    async def _poll(self, address: str) -> dict | None:
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.post(f"{address}/worker_get_status")
                response.raise_for_status()
                return response.json()
        except (httpx.HTTPError, ValueError) as error:
            logger.warning("worker %s unreachable: %s", address, error)
            return None

    async def refresh_all(self) -> None:
        for address, info in list(self.workers.items()):
            if not await self.register(address, info.check_heart_beat, None):
                self.remove(address)

    def remove(self, address: str) -> None:
        if self.workers.pop(address, None) is not None:
            logger.info("removed worker %s", address)

    def heart_beat(self, address: str, queue_length: int) -> bool:
        info = self.workers.get(address)
        if info is None:
            return False
        info.queue_length, info.last_heart_beat = queue_length, time.monotonic()
        return True

    def remove_stale(self) -> None:
        deadline = time.monotonic() - self.heart_beat_expiration
        for address, info in list(self.workers.items()):
            if info.check_heart_beat and info.last_heart_beat < deadline:
                logger.warning("worker %s missed its heart beats: dropped", address)
                self.remove(address)

    def list_models(self) -> list[str]:
        return sorted({name for info in self.workers.values() for name in info.model_names})

    def worker_address(self, model: str, exclude: tuple[str, ...] = ()) -> str:
        """A worker serving ``model`` ("" if none), chosen by the dispatch method."""
        candidates = [(a, w) for a, w in self.workers.items() if model in w.model_names and a not in exclude]
        if not candidates:
            return ""
        if self.dispatch_method == "lottery":
            return random.choices([a for a, _ in candidates], weights=[w.speed for _, w in candidates])[0]
        address, info = min(candidates, key=lambda item: item[1].queue_length / item[1].speed)
        info.queue_length += 1  # until the next heart beat reports the real figure
        return address

    def status(self) -> dict:
        return {
            "model_names": self.list_models(),
            "speed": sum(w.speed for w in self.workers.values()),
            "queue_length": sum(w.queue_length for w in self.workers.values()),
        }


async def _fields(request: Request, **required: type) -> dict:
    """The JSON body, with ``required`` fields of the given types (else a 400, not a 500 from a KeyError)."""
    body = load_json(await request.body())
    for name, kind in required.items():
        if not isinstance(body.get(name), kind):
            raise ApiError(f"{name}: a {kind.__name__} is required", param=name)
    return body


def build_app(controller: Controller) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def expire():
            while True:
                await asyncio.sleep(max(controller.heart_beat_expiration / 4, 0.25))
                controller.remove_stale()

        task = asyncio.create_task(expire())
        yield
        task.cancel()

    app = FastAPI(title="PIIP-LLaVA controller", lifespan=lifespan)
    app.state.controller = controller
    install_error_handlers(app)

    @app.post("/register_worker")
    async def register_worker(request: Request):
        body = await _fields(request, worker_name=str)
        status = body.get("worker_status")
        if status is not None and not (isinstance(status, dict) and isinstance(status.get("model_names"), list)):
            raise ApiError("worker_status: an object with a model_names list is required", param="worker_status")
        try:
            await controller.register(body["worker_name"], bool(body.get("check_heart_beat", True)), status)
        except (TypeError, ValueError) as error:
            raise ApiError(f"worker_status: {error}", param="worker_status") from error
        return None

    @app.post("/refresh_all_workers")
    async def refresh_all_workers():
        await controller.refresh_all()
        return None

    @app.post("/list_models")
    async def list_models():
        return {"models": controller.list_models()}

    @app.post("/list_workers")
    async def list_workers():
        return {"workers": {a: w.__dict__ for a, w in controller.workers.items()}}

    @app.post("/get_worker_address")
    async def get_worker_address(request: Request):
        body = await _fields(request, model=str)
        exclude = body.get("exclude") or []
        if not isinstance(exclude, list):
            raise ApiError("exclude: a list of worker addresses is required", param="exclude")
        return {"address": controller.worker_address(body["model"], tuple(map(str, exclude)))}

    @app.post("/receive_heart_beat")
    async def receive_heart_beat(request: Request):
        body = await _fields(request, worker_name=str)
        if not isinstance(body.get("queue_length", 0), int):
            raise ApiError("queue_length: an integer is required", param="queue_length")
        return {"exist": controller.heart_beat(body["worker_name"], body.get("queue_length", 0))}

    @app.post("/worker_get_status")
    async def worker_get_status():
        return controller.status()

    @app.post("/worker_generate_stream")
    async def worker_generate_stream(request: Request):
        """Proxy to a worker, so that a parent controller can treat this one as a worker."""
        body = await _fields(request, model=str)
        address = controller.worker_address(body.get("model", ""))
        if not address:
            raise ApiError(f"no worker serves model {body.get('model')!r}", 404, code="model_not_found")
        client = httpx.AsyncClient(timeout=None)
        upstream = await client.send(
            client.build_request("POST", f"{address}/worker_generate_stream", json=body), stream=True
        )

        async def relay():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(
            relay(), status_code=upstream.status_code, media_type=upstream.headers.get("content-type")
        )

    @app.get("/health")
    async def health():
        return {"status": "ok", "workers": len(controller.workers)}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=21001)
    parser.add_argument("--dispatch-method", default="shortest_queue", choices=DISPATCH_METHODS)
    parser.add_argument("--heart-beat-expiration", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_app(build_app(Controller(args.dispatch_method, args.heart_beat_expiration)), args.host, args.port)


if __name__ == "__main__":
    main()
