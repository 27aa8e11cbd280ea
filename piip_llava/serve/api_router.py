"""Routes of the OpenAI-compatible server: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.
The handler and the API keys live on ``app.state`` (built by :func:`build_app`)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from .http import error_response, install_error_handlers, parse_body
from .protocol import ApiError, ChatCompletionRequest, now
from .serving import OpenAIServingChat

router = APIRouter()


def check_api_key(request: Request) -> None:
    """``Authorization: Bearer <key>`` against the configured keys (constant-time compare); no keys: open."""
    keys: list[str] = request.app.state.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError("missing API key: send Authorization: Bearer <key>", 401, "authentication_error",
                       code="invalid_api_key")  # fmt: skip
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):  # no early exit on a match
        raise ApiError("incorrect API key provided", 401, "authentication_error", code="invalid_api_key")


@router.get("/health")
async def health(request: Request):
    return {"status": "ok", "models": await request.app.state.serving.backend.model_names()}


@router.get("/v1/models", dependencies=[Depends(check_api_key)])
async def list_models(request: Request):
    created = request.app.state.started
    names = await request.app.state.serving.backend.model_names()
    data = [{"id": n, "object": "model", "created": created, "owned_by": "piip-llava", "root": n, "parent": None}
            for n in names]  # fmt: skip
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions", dependencies=[Depends(check_api_key)])
async def chat_completions(request: Request):
    body = await parse_body(request, ChatCompletionRequest)
    result = await request.app.state.serving.create(body)
    if isinstance(result, dict):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def build_app(serving: OpenAIServingChat, api_keys: list[str] | None = None, max_body_bytes: int = 64 << 20) -> FastAPI:
    app = FastAPI(title="PIIP-LLaVA OpenAI-compatible API")
    app.state.serving = serving
    app.state.api_keys = [key for key in api_keys or [] if key]
    app.state.started = now()
    install_error_handlers(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return error_response(ApiError(f"request body over {max_body_bytes} bytes", 413))
        return await call_next(request)

    app.include_router(router)
    return app
