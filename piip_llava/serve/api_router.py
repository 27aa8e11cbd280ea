"""Routes of the OpenAI-compatible server: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health``, and the API docs (``/docs``, ``/openapi.json``: behind the key when one
is set). The handler and the API keys live on ``app.state`` (built by :func:`build_app`)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import StreamingResponse

from .http import BodyLimitMiddleware, install_error_handlers, parse_body
from .protocol import ApiError, ChatCompletionRequest, now, refuse_unsupported_fields
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


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "piip-llava", "root": name, "parent": None}


@router.get("/v1/models", dependencies=[Depends(check_api_key)])
async def list_models(request: Request):
    names = await request.app.state.serving.backend.model_names()
    return {"object": "list", "data": [_model_card(name, request.app.state.started) for name in names]}


@router.get("/v1/models/{model_id:path}", dependencies=[Depends(check_api_key)])
async def retrieve_model(request: Request, model_id: str):
    if model_id not in await request.app.state.serving.backend.model_names():
        raise ApiError(f"the model {model_id!r} does not exist", 404, param="model", code="model_not_found")
    return _model_card(model_id, request.app.state.started)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(check_api_key)])
async def openapi(request: Request):
    return request.app.openapi()


@router.get("/docs", include_in_schema=False, dependencies=[Depends(check_api_key)])
async def docs(request: Request):
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title)


@router.post("/v1/chat/completions", dependencies=[Depends(check_api_key)])
async def chat_completions(request: Request):
    body = await parse_body(request, ChatCompletionRequest, check=refuse_unsupported_fields)
    result = await request.app.state.serving.create(body)
    if isinstance(result, dict):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def build_app(serving: OpenAIServingChat, api_keys: list[str] | None = None, max_body_bytes: int = 64 << 20) -> FastAPI:
    # FastAPI's own /docs and /openapi.json answer anyone: ours (in the router) check the key.
    app = FastAPI(title="PIIP-LLaVA OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serving = serving
    app.state.api_keys = [key for key in api_keys or [] if key]
    app.state.started = now()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.include_router(router)
    return app
