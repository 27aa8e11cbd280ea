"""HTTP plumbing shared by the controller, the worker and the API server: OpenAI-style error responses for every
failure (our :class:`ApiError`, FastAPI's validation errors, unknown routes), JSON-lines streaming, and uvicorn."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .protocol import ApiError

logger = logging.getLogger(__name__)

_HTTP_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _validation_message(error: RequestValidationError | ValidationError) -> tuple[str, str | None]:
    details = error.errors()
    if not details:
        return "invalid request", None
    first = details[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".strip(), None
    param = ".".join(location) or None
    message = first.get("msg", "invalid value")
    more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param


async def parse_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body as ``model``, whatever the Content-Type says (curl's default is form-encoded); 400 otherwise."""
    body = await request.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(f"the request body is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ApiError(f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        message, param = _validation_message(error)
        raise ApiError(message, param=param) from error


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": {...}}`` with a 4xx/5xx status; nothing reaches the client as a bare 500."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error)
        return error_response(ApiError(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_ERROR_TYPES.get(error.status_code, "invalid_request_error")
        return error_response(ApiError(str(error.detail), error.status_code, kind))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(ApiError(f"internal error: {type(error).__name__}", 500, "server_error"))


def json_lines(events: AsyncIterator[dict]) -> StreamingResponse:
    async def body():
        async for event in events:
            yield json.dumps(event) + "\n"

    return StreamingResponse(body(), media_type="application/x-ndjson")


def serve_app(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5)
