"""Wire formats: the OpenAI Chat Completions subset we serve (docs/design.md#serving), the worker's
generate request, and :class:`ApiError`, which every layer raises and every route turns into OpenAI's error envelope
``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """A request that cannot be served; ``status`` is the HTTP status the client gets."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_body(cls, body: Any, status: int) -> ApiError:
        """Rebuild an error received from another server (a worker) in the envelope format."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(f"upstream error (HTTP {status}): {str(body)[:200]}", status=502, type="server_error")
        return cls(
            str(error.get("message")),
            status,
            error.get("type") or "server_error",
            error.get("param"),
            error.get("code"),
        )


# ----------------------------------------------------------------------------------------------------------------
# OpenAI Chat Completions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL
    uuid: str | None = None


class ChatMessage(BaseModel):
    # Clients send extra fields (name, tool_calls: null, refusal: null) on echoed assistant messages: ignored.
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImagePart] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields we implement. Unknown fields are ignored (as vLLM does), so clients that send e.g. ``user`` or
    ``logprobs: false`` work; fields whose meaning we cannot honour (``n`` > 1, tools) are refused."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    tools: list[dict] | None = None
    # Not in OpenAI's API (vLLM has it): keep generating past EOS, for load tests.
    ignore_eos: bool = False

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if len(stops) > 4 or any(not s for s in stops):
            raise ApiError("stop: up to 4 non-empty strings", param="stop")
        return stops


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# ----------------------------------------------------------------------------------------------------------------
# Worker protocol (controller, API server, Gradio and CLI -> model worker)


class WorkerTextPart(_Strict):
    type: Literal["text"]
    text: str


class WorkerImagePart(_Strict):
    """An image already fetched by the caller: base64 of the file's bytes (PNG, JPEG, ...)."""

    type: Literal["image"]
    image: str


class WorkerMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[WorkerTextPart | WorkerImagePart]


class GenerateRequest(_Strict):
    """What a model worker generates from. Events stream back as JSON lines: ``{"text": delta}`` while generating,
    then ``{"finish_reason": "stop"|"length", "usage": {...}}``, or ``{"error": {...}}`` (OpenAI error body)."""

    model: str
    messages: list[WorkerMessage] = Field(min_length=1)
    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    # None: the model's own preprocessing; "crop" | "resize" | "pad" override it (the web demo's aspect modes).
    image_aspect_ratio: Literal["crop", "resize", "pad"] | None = None
    ignore_eos: bool = False
