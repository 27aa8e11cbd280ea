"""HTTP plumbing shared by the controller, the worker and the API server: OpenAI-style error responses for every
failure (our :class:`ApiError`, FastAPI's validation errors, unknown routes), a request body parser that refuses
hostile JSON with a 400 (too deep, huge integers, NaN, lone surrogates), a body-size limit on the bytes actually
received, JSON-lines streaming, and uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

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


MAX_JSON_DEPTH = 32  # a chat request is 6 levels deep; tools' JSON schemas a few more
MAX_INT_DIGITS = 20  # any integer we take fits in 64 bits


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ApiError(f"the request body has an integer of {len(digits)} digits; at most {MAX_INT_DIGITS}")
    return int(digits)


def _refuse_constant(name: str) -> None:
    raise ApiError(f"the request body is not valid JSON: {name} is not a JSON number")


def load_json(body: bytes) -> dict:
    """Bytes -> a JSON object, or :class:`ApiError` (400) for anything hostile: invalid UTF-8 or JSON, ``NaN``,
    integers over :data:`MAX_INT_DIGITS` digits, nesting over :data:`MAX_JSON_DEPTH`, strings that are not valid
    Unicode (lone surrogates such as ``"\\ud800"``, which no tokenizer can encode)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_int=_parse_int, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(f"the request body is not valid JSON: {error}") from error
    except RecursionError as error:
        raise ApiError(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep") from error
    if not isinstance(data, dict):
        raise ApiError(f"the request body must be a JSON object, not {type(data).__name__}")
    _check_tree(data)
    return data


def _check_tree(data: dict) -> None:
    """Iterative walk (no recursion to exhaust): depth and Unicode of every string, keys included."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            for text in (key, value):
                if isinstance(text, str):
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as error:
                        raise ApiError(f"the request body has a string that is not valid Unicode: {error}") from None
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))


async def parse_body(
    request: Request, model: type[BaseModel], check: Callable[[dict], None] | None = None
) -> BaseModel:
    """The body as ``model``, whatever the Content-Type says (curl's default is form-encoded); 400 otherwise.
    ``check`` sees the raw object first. Parsing runs in a thread: a large body does not hold up other requests."""
    body = await request.body()

    def parse() -> BaseModel:
        data = load_json(body)
        if check is not None:
            check(data)
        try:
            return model.model_validate(data)
        except ValidationError as error:
            message, param = _validation_message(error)
            raise ApiError(message, param=param) from error

    return await asyncio.to_thread(parse)


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: from ``Content-Length`` when sent, and counted on the bytes actually
    received (a chunked body has no length). Pure ASGI, so streaming responses are untouched."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = ApiError(f"request body over {self.max_bytes} bytes", 413, code="request_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await error_response(error)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise error  # inside the route: the ApiError handler answers 413
            return message

        await self.app(scope, counted_receive, send)


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
