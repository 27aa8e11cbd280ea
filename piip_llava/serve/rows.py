"""Per-row state of a generation batch, shared by the HF engine (engine.py) and the vLLM engine (vllm_engine.py).

A :class:`Job` is one prepared request. :class:`RowTracker` is the ``StoppingCriteria`` that ``generate`` calls after
every step with the new tokens of all rows: it detokenises each row incrementally, applies stop strings, per-row token
limits and client cancellation, emits text deltas and tells ``generate`` which rows are done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria

from .protocol import ApiError

Event = dict


@dataclass
class Job:
    """One prepared request: its tensors, limits and where its events go."""

    inputs: dict
    prompt_tokens: int
    max_new_tokens: int
    sampling: tuple  # (temperature, top_p, ignore_eos): rows in one batch share it
    stop: list[str]
    emit: Callable[[Event], None]
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    last_emit: float = 0.0
    done: bool = False
    cancelled: bool = False

    def finish(self, reason: str) -> None:
        self.done = True
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": len(self.tokens),
            "total_tokens": self.prompt_tokens + len(self.tokens),
        }
        self.emit({"finish_reason": reason, "usage": usage})

    def fail(self, error: ApiError) -> None:
        self.done = True
        self.emit(error.body())


class RowTracker(StoppingCriteria):
    """Per-row streaming and stopping inside one batched ``generate`` (see the module docstring)."""

    def __init__(self, jobs: list[Job], tokenizer, eos_token_ids: set[int], stream_interval: float = 0.0) -> None:
        self.jobs, self.tokenizer, self.eos_token_ids = jobs, tokenizer, eos_token_ids
        self.stream_interval = stream_interval

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        for job, token in zip(self.jobs, input_ids[:, -1].tolist()):
            if not job.done:
                self._advance(job, token)
        return torch.tensor([job.done for job in self.jobs], dtype=torch.bool, device=input_ids.device)

    def _advance(self, job: Job, token: int) -> None:
        if job.cancelled:
            job.done = True
            return
        if token in self.eos_token_ids:
            self._send(job, self._text(job), final=True)  # what was held back (stop-string prefix, interval)
            job.finish("stop")
            return
        job.tokens.append(token)
        text = self._text(job)
        for stop in job.stop:
            index = text.find(stop, max(0, len(job.sent) - len(stop)))
            if index >= 0:
                self._send(job, text[:index], final=True)
                job.finish("stop")
                return
        if len(job.tokens) >= job.max_new_tokens:
            self._send(job, text, final=True)
            job.finish("length")
        elif not text.endswith("\ufffd"):  # an incomplete UTF-8 sequence waits for its next byte
            # Hold back what could still become the start of a stop string.
            hold = max((len(stop) - 1 for stop in job.stop), default=0)
            self._send(job, text[: len(text) - hold])

    def _text(self, job: Job) -> str:
        return self.tokenizer.decode(job.tokens, skip_special_tokens=True).lstrip()

    def _send(self, job: Job, text: str, final: bool = False) -> None:
        """Emit the new part of ``text``: the first piece at once, then at most one event per ``stream_interval``
        (fewer, larger events cost the HTTP layers far less per token; 10 ms is below what a reader notices)."""
        now = time.monotonic()
        if not final and job.sent and now - job.last_emit < self.stream_interval:
            return
        if len(text) > len(job.sent) and text.startswith(job.sent):
            job.emit({"text": text[len(job.sent) :]})
            job.sent, job.last_emit = text, now
