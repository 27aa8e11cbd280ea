"""Wire formats: the OpenAI Chat Completions subset we serve (docs/design.md#serving), the worker's
generate request, and :class:`ApiError`, which every layer raises and every route turns into OpenAI's error envelope
``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import Strict as _StrictMode

# OpenAI is strict where Python is lax: ``"0.5"`` is not a number, ``true`` is not 1, ``"yes"`` is not a boolean.
StrictFloat = Annotated[float, _StrictMode()]  # ints are still accepted, as JSON has one number type


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
    url: StrictStr
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL
    uuid: str | None = None


class ChatMessage(BaseModel):
    # Clients send extra fields (name, tool_calls: null, refusal: null) on echoed assistant messages: ignored.
    model_config = ConfigDict(extra="ignore")

    # ``developer`` is OpenAI's name for ``system`` since the o1 models; it is served as ``system``.
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart | ImagePart] | None = None


class StreamOptions(_Strict):
    include_usage: StrictBool = False


# OpenAI request fields we do not implement, and the values that ask for nothing (their defaults): any other value is
# refused with a 400 naming the field, rather than silently ignored.
UNSUPPORTED_FIELDS: dict[str, tuple] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "seed": (None,),
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}


def refuse_unsupported_fields(body: dict) -> None:
    """:class:`ApiError` naming the first OpenAI field whose value we would otherwise have to ignore."""
    for name, neutral in UNSUPPORTED_FIELDS.items():
        value = body.get(name)
        if name in body and not any(type(value) is type(ok) and value == ok for ok in neutral):
            raise ApiError(f"{name} is not supported by this server (got {str(value)[:100]})", param=name,
                           code="unsupported_parameter")  # fmt: skip


class ChatCompletionRequest(BaseModel):
    """The fields we implement, with OpenAI's strict types. Unknown fields are ignored (as vLLM does), so clients
    that send e.g. ``user`` or ``store`` work; OpenAI fields whose meaning we cannot honour (``n`` > 1, tools, seed,
    logprobs, penalties: :data:`UNSUPPORTED_FIELDS`) are refused by :func:`refuse_unsupported_fields`."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    # null is OpenAI's "use the default" for these
    temperature: StrictFloat | None = Field(default=None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(default=None, gt=0.0, le=1.0)
    n: StrictInt | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    # Not in OpenAI's API (vLLM has it): keep generating past EOS, for load tests.
    ignore_eos: StrictBool = False

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
