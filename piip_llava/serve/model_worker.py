"""A model worker: loads one model directory, registers with the controller, heart-beats, and streams generations
of concurrent requests batched together by :class:`~piip_llava.serve.engine.GenerationEngine` (docs/design.md#serving;
LLaVA's worker protocol, with incremental JSON-lines deltas instead of LLaVA's NUL-separated cumulative text).

    python -m piip_llava.serve.model_worker --model-path DIR --controller-address http://127.0.0.1:21001 --port 21002
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request

from ..model.loading import add_loading_arguments, loading_options
from .engine import GenerationEngine
from .http import install_error_handlers, json_lines, parse_body, serve_app
from .media import MediaPolicy
from .protocol import ApiError, GenerateRequest

logger = logging.getLogger(__name__)


class WorkerRegistration:
    """Registers ``address`` with the controller and heart-beats every ``interval`` seconds; re-registers when the
    controller has forgotten the worker (it restarted, or dropped us after missed beats)."""

    def __init__(self, controller: str, address: str, engine: GenerationEngine, interval: float = 15.0) -> None:
        self.controller, self.address, self.engine, self.interval = controller.rstrip("/"), address, engine, interval

    def status(self) -> dict:
        return {"model_names": [self.engine.model_name], "speed": 1, "queue_length": self.engine.queue_length}

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            registered = False
            while True:
                try:
                    if not registered:
                        payload = {
                            "worker_name": self.address,
                            "check_heart_beat": True,
                            "worker_status": self.status(),
                        }
                        (await client.post(f"{self.controller}/register_worker", json=payload)).raise_for_status()
                        registered = True
                        logger.info("registered with %s as %s", self.controller, self.address)
                    else:
                        beat = {"worker_name": self.address, "queue_length": self.engine.queue_length}
                        response = await client.post(f"{self.controller}/receive_heart_beat", json=beat)
                        registered = bool(response.json().get("exist"))
                except (httpx.HTTPError, ValueError) as error:
                    logger.warning("controller %s unreachable: %s", self.controller, error)
                    registered = False
                await asyncio.sleep(self.interval if registered else min(self.interval, 2.0))


def build_app(engine: GenerationEngine, registration: WorkerRegistration | None, concurrency: int = 64) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(registration.run()) if registration else None
        yield
        if task:
            task.cancel()
        engine.close()

    app = FastAPI(title="PIIP-LLaVA model worker", lifespan=lifespan)
    app.state.engine = engine
    app.state.slots = asyncio.Semaphore(concurrency)
    install_error_handlers(app)

    @app.post("/worker_generate_stream")
    async def worker_generate_stream(http_request: Request):
        request = await parse_body(http_request, GenerateRequest)
        if request.model != engine.model_name:
            raise ApiError(
                f"this worker serves {engine.model_name!r}, not {request.model!r}", 404, code="model_not_found"
            )
        await app.state.slots.acquire()
        try:
            events = await engine.open_stream(request)
        except BaseException:
            app.state.slots.release()
            raise

        async def released():
            try:
                async for event in events:
                    yield event
            finally:
                app.state.slots.release()

        return json_lines(released())

    @app.post("/worker_get_status")
    async def worker_get_status():
        return {"model_names": [engine.model_name], "speed": 1, "queue_length": engine.queue_length}

    @app.post("/model_details")
    async def model_details():
        return {"context_length": engine.context_length, "image_tokens": engine.processor.image_seq_length}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.model_name}

    return app


def add_engine_arguments(parser: argparse.ArgumentParser, model_path: bool = True) -> None:
    """Flags shared by everything that loads a model to serve it (worker, API server in local mode, CLI)."""
    if model_path:
        parser.add_argument("--model-path", required=True, help="local PIIP-LLaVA directory")
    parser.add_argument("--model-name", help="name clients use (default: the directory's name)")
    parser.add_argument(
        "--engine",
        default="hf",
        choices=["hf", "vllm"],
        help="hf: transformers generate with dynamic batching; vllm: vLLM's AsyncLLM (needs the vllm extra)",
    )
    parser.add_argument("--max-model-len", type=int, help="vllm engine: context length (default: the LLM's)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm engine: GPUs per replica")
    add_loading_arguments(parser)  # --device, --dtype, --model-base, --load-8bit / --load-4bit
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests generated together")
    parser.add_argument(
        "--batch-wait", type=float, default=0.02, help="quiet seconds that close a batch (default 0.02)"
    )
    parser.add_argument(
        "--stream-interval", type=float, default=0.01, help="seconds between a stream's text events (default 0.01)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=512, help="default completion limit")
    parser.add_argument("--max-images-per-request", type=int, default=4)
    parser.add_argument(
        "--max-image-pixels", type=int, default=40_000_000, help="also the largest padded square (default 40M)"
    )
    parser.add_argument(
        "--max-image-aspect-ratio", type=float, default=50.0, help="long side / short side (default 50)"
    )
    parser.add_argument(
        "--max-prompt-chars", type=int, help="text per request, checked before tokenising (default 32 x context)"
    )


def engine_from_args(args: argparse.Namespace, media: MediaPolicy | None = None) -> GenerationEngine:
    media = media or MediaPolicy(
        max_images=args.max_images_per_request,
        max_image_pixels=args.max_image_pixels,
        max_aspect_ratio=args.max_image_aspect_ratio,
    )
    model_name = args.model_name or Path(args.model_path).resolve().name
    common = dict(
        model_name=model_name,
        default_max_new_tokens=args.max_new_tokens,
        media=media,
        stream_interval=args.stream_interval,
        max_prompt_chars=args.max_prompt_chars,
    )
    if args.engine == "vllm":
        from .vllm_engine import VllmEngine

        unsupported = [flag for flag, on in (("--model-base", args.model_base), ("--load-8bit", args.load_8bit),
                                             ("--load-4bit", args.load_4bit)) if on]  # fmt: skip
        if unsupported:
            raise SystemExit(
                f"{', '.join(unsupported)}: not with --engine vllm (merge a LoRA output with scripts/merge_lora.py "
                "first; quantise with vLLM's own --quantization options)"
            )
        return VllmEngine(
            args.model_path,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            max_num_seqs=args.max_batch_size,
            tensor_parallel_size=args.tensor_parallel_size,
            **common,
        )
    return GenerationEngine.from_pretrained(
        args.model_path,
        **loading_options(args),
        max_batch_size=args.max_batch_size,
        batch_wait=args.batch_wait,
        **common,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=21002)
    parser.add_argument("--worker-address", help="URL the controller reaches this worker at (default http://HOST:PORT)")
    parser.add_argument("--controller-address", default="http://127.0.0.1:21001")
    parser.add_argument("--no-register", action="store_true", help="do not register with a controller")
    parser.add_argument("--heart-beat-interval", type=float, default=15.0, help="seconds (default 15)")
    parser.add_argument("--limit-model-concurrency", type=int, default=64, help="requests admitted at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = engine_from_args(args)
    address = args.worker_address or f"http://{args.host}:{args.port}"
    registration = None
    if not args.no_register:
        registration = WorkerRegistration(args.controller_address, address, engine, args.heart_beat_interval)
    serve_app(build_app(engine, registration, args.limit_model_concurrency), args.host, args.port)


if __name__ == "__main__":
    main()
