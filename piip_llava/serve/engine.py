"""Batched streaming generation for serving.

Concurrent requests are grouped by a background thread into one ``model.generate`` call (dynamic batching: requests
that arrive within ``batch_wait`` seconds of each other and share sampling settings run together, left-padded;
requests that arrive while a batch runs form the next one).
``transformers``' continuous-batching manager works on text-only ``input_ids`` and cannot take image features,
and its ``TextIteratorStreamer`` streams batch size 1 only, so the per-row work (detokenising, stop strings, per-row
limits, cancellation) lives in :class:`~piip_llava.serve.rows.RowTracker`, a ``StoppingCriteria`` that ``generate``
calls after every step with the new tokens of all rows.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

import torch

from ..model.conversation import IMAGE_TOKEN
from .media import MediaPolicy, decode_base64, decode_image
from .prompt import PromptEncoder
from .protocol import ApiError, GenerateRequest
from .rows import Event, Job, RowTracker

logger = logging.getLogger(__name__)

# The web demo's aspect modes -> the image processor's.
ASPECT_MODES = {"crop": "square", "resize": "resize", "pad": "pad"}


class GenerationEngine:
    """A model, its processor and the batching thread.

    Args:
        model: a ``PiipLlavaForConditionalGeneration`` in eval mode.
        processor: its ``PiipLlavaProcessor`` (with the chat template).
        model_name: the name clients ask for.
        max_batch_size: most requests in one ``generate`` call.
        batch_wait: a batch starts once no request has arrived for this long (at most 10x this after the first).
        default_max_new_tokens: used when a request gives no limit (capped by the context).
        media: image limits (:class:`MediaPolicy`).
        stream_interval: seconds between a stream's text events (the first is sent at once; 0 = every token).
        max_prompt_chars: longest text a request may send, checked before tokenising (default: 32 characters per
            context token, more than any prompt that fits the context, so tokenising costs at most ~0.1 s).
    """

    def __init__(
        self,
        model,
        processor,
        model_name: str,
        max_batch_size: int = 8,
        batch_wait: float = 0.02,
        default_max_new_tokens: int = 512,
        media: MediaPolicy | None = None,
        stream_interval: float = 0.01,
        max_prompt_chars: int | None = None,
    ) -> None:
        self.model = model
        self._init_requests(
            processor,
            model_name,
            model.config.text_config.max_position_embeddings,
            model.generation_config.eos_token_id,
            default_max_new_tokens,
            media,
            stream_interval,
            max_prompt_chars,
        )
        self.max_batch_size, self.batch_wait = max_batch_size, batch_wait
        self._pending: deque[Job] = deque()
        self._running = 0
        self._last_arrival = 0.0
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="generation-engine", daemon=True)
        self._thread.start()

    def _init_requests(
        self,
        processor,
        model_name: str,
        context_length: int,
        eos_token_id: int | list[int] | None,
        default_max_new_tokens: int,
        media: MediaPolicy | None,
        stream_interval: float,
        max_prompt_chars: int | None,
    ) -> None:
        """The state request preparation and :class:`RowTracker` read; shared with the vLLM engine."""
        self.processor, self.model_name, self.tokenizer = processor, model_name, processor.tokenizer
        self.prompt_encoder = PromptEncoder(processor)
        self.default_max_new_tokens, self.stream_interval = default_max_new_tokens, stream_interval
        self.media = media or MediaPolicy()
        self.context_length = context_length
        self.max_prompt_chars = max_prompt_chars or 32 * context_length
        eos = eos_token_id
        self.eos_token_ids = {eos} if isinstance(eos, int) else set(eos or [self.tokenizer.eos_token_id])
        self._image_processors = {}
        self._tokenizer_lock = threading.Lock()  # fast tokenizers raise "Already borrowed" if used concurrently

    @classmethod
    def from_pretrained(
        cls,
        model_path: str,
        device: str = "auto",
        dtype: str = "auto",
        model_base: str | None = None,
        load_8bit: bool = False,
        load_4bit: bool = False,
        **kwargs,
    ):
        """Load with :func:`piip_llava.model.loading.load_for_inference` (``auto``: bf16/fp16 on CUDA, fp32 on CPU;
        ``model_base``: merge the LoRA output ``model_path`` into it; 8/4-bit: bitsandbytes, CUDA only)."""
        from ..model.loading import load_for_inference

        model, processor = load_for_inference(
            model_path, device=device, dtype=dtype, model_base=model_base, load_8bit=load_8bit, load_4bit=load_4bit
        )
        return cls(model, processor, **kwargs)

    @property
    def queue_length(self) -> int:
        return len(self._pending) + self._running

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking batches and wait for the running one: a process that exits while the generation thread is
        inside torch aborts ("terminate called without an active exception", seen at the CLI's exit)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------------------------
    # Request preparation (runs in the caller's thread)

    def prepare(self, request: GenerateRequest, emit: Callable[[Event], None]) -> Job:
        """Validate and tokenise a request; :class:`ApiError` for anything a client did wrong."""
        if request.messages[-1].role != "user":
            raise ApiError("the last message must come from the user", param="messages")
        characters = _text_length(request)
        if characters > self.max_prompt_chars:  # before any tokenising: its time grows with the text
            raise ApiError(
                f"the messages hold {characters} characters of text; the limit is {self.max_prompt_chars}",
                param="messages",
                code="context_length_exceeded",
            )
        messages, images = self._chat_messages(request)
        image_processor = self._image_processor(request.image_aspect_ratio)
        with self._tokenizer_lock:
            ids = self.prompt_encoder.encode(messages)
        # The whole prompt is checked before it joins a batch: a mismatch here would fail everyone's generate.
        image_tokens = ids.count(self.processor.image_token_id)
        if image_tokens != len(images) * self.processor.image_seq_length:
            raise ApiError(
                f"the prompt has {image_tokens} image tokens for {len(images)} images "
                f"({self.processor.image_seq_length} each)",
                param="messages",
            )
        input_ids = torch.tensor([ids], dtype=torch.long)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if images:
            inputs["pixel_values"] = image_processor(images, return_tensors="pt")["pixel_values"]
        prompt_tokens = len(ids)
        room = self.context_length - prompt_tokens
        if room < 1:
            raise ApiError(
                f"the prompt is {prompt_tokens} tokens (images count {self.processor.image_seq_length} each); this "
                f"model's context is {self.context_length} tokens",
                param="messages",
                code="context_length_exceeded",
            )
        if request.max_new_tokens is not None and request.max_new_tokens > room:
            raise ApiError(
                f"this model's context is {self.context_length} tokens; you asked for {prompt_tokens} in the messages "
                f"+ {request.max_new_tokens} in the completion",
                param="max_tokens",
                code="context_length_exceeded",
            )
        max_new_tokens = request.max_new_tokens or min(self.default_max_new_tokens, room)
        sampling = (request.temperature, request.top_p if request.temperature > 0 else 1.0, request.ignore_eos)
        return Job(inputs, prompt_tokens, max_new_tokens, sampling, list(request.stop), emit)

    def _chat_messages(self, request: GenerateRequest) -> tuple[list[dict], list]:
        """Worker messages -> chat-template messages (image parts become ``{"type": "image"}``) + decoded images."""
        messages, images = [], []
        for index, message in enumerate(request.messages):
            param = f"messages[{index}].content"
            parts = [{"type": "text", "text": message.content}] if isinstance(message.content, str) else []
            for part in [] if isinstance(message.content, str) else message.content:
                if part.type == "text":
                    parts.append({"type": "text", "text": part.text})
                    continue
                if message.role != "user":
                    raise ApiError(f"images are accepted in user messages only, not {message.role!r}", param=param)
                if len(images) == self.media.max_images:
                    raise ApiError(f"at most {self.media.max_images} images per request", param=param)
                images.append(decode_image(decode_base64(part.image, param), self.media, param))
                parts.append({"type": "image"})
            if any(IMAGE_TOKEN in part.get("text", "") for part in parts):
                raise ApiError(f"text must not contain {IMAGE_TOKEN!r}: send images as image parts", param=param)
            if message.role == "system":
                if index != 0:
                    raise ApiError("a system message must come first", param="messages")
                messages.append({"role": "system", "content": "".join(part["text"] for part in parts)})
            else:
                messages.append({"role": message.role, "content": parts})
        return messages, images

    def _image_processor(self, aspect: str | None):
        if aspect is None:
            return self.processor.image_processor
        if aspect not in self._image_processors:
            image_processor = copy.copy(self.processor.image_processor)
            image_processor.aspect_ratio = ASPECT_MODES[aspect]
            self._image_processors[aspect] = image_processor
        return self._image_processors[aspect]

    # ------------------------------------------------------------------------------------------------------------
    # Client side

    async def open_stream(self, request: GenerateRequest) -> AsyncIterator[Event]:
        """Validate (raising :class:`ApiError` before anything streams) and queue a request; returns its events."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = await asyncio.to_thread(
            self.prepare, request, lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
        )
        self._submit(job)
        return self._drain(job, events)

    async def _drain(self, job: Job, events: asyncio.Queue) -> AsyncIterator[Event]:
        try:
            while True:
                event = await events.get()
                # Deltas that piled up while the consumer was busy leave as one event (fewer HTTP chunks under load).
                while "text" in event and not events.empty():
                    following = events.get_nowait()
                    if "text" not in following:
                        yield event
                        event = following
                        break
                    event = {"text": event["text"] + following["text"]}
                yield event
                if "text" not in event:
                    return
        finally:
            job.cancelled = True  # the client went away (or finished): free its row

    def stream(self, request: GenerateRequest) -> Iterator[Event]:
        """Blocking version of :meth:`open_stream` (CLI chat)."""
        events: queue.Queue = queue.Queue()
        job = self.prepare(request, events.put)
        self._submit(job)
        try:
            while True:
                event = events.get()
                yield event
                if "text" not in event:
                    return
        finally:
            job.cancelled = True

    def _submit(self, job: Job) -> None:
        with self._condition:
            self._pending.append(job)
            self._last_arrival = time.monotonic()
            self._condition.notify()

    # ------------------------------------------------------------------------------------------------------------
    # Batching thread

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                # Gather while requests keep arriving (each within batch_wait of the last), up to 10x batch_wait:
                # a burst of clients forms one batch even when their arrivals are spread by request parsing.
                cap = time.monotonic() + 10 * self.batch_wait
                while len(self._pending) < self.max_batch_size:
                    wait = min(self._last_arrival + self.batch_wait, cap) - time.monotonic()
                    if wait <= 0:
                        break
                    self._condition.wait(wait)
                batch = self._take_batch()
                self._running = len(batch)
            try:
                self._run_isolated(batch)
            finally:
                with self._condition:
                    self._running = 0

    def _run_isolated(self, batch: list[Job]) -> None:
        """Run a batch; if it fails, run its unfinished rows one by one, so only the row that fails on its own
        gets the error (and never the worker)."""
        try:
            self._run(batch)
            return
        except Exception:
            logger.exception("a batch of %d rows failed; retrying its rows one by one", len(batch))
        for job in batch:
            if job.done or job.cancelled:
                continue
            if job.sent:  # it already streamed text: a retry would send it twice
                job.fail(ApiError("generation failed mid-stream", 500, "server_error"))
                continue
            job.tokens.clear()
            try:
                self._run([job])
            except Exception as error:
                logger.exception("generation failed")
                job.fail(ApiError(f"generation failed: {type(error).__name__}: {error}", 500, "server_error"))

    def _take_batch(self) -> list[Job]:
        first = self._pending.popleft()
        batch, rest = [first], deque()
        while self._pending:
            job = self._pending.popleft()
            (batch if job.sampling == first.sampling and len(batch) < self.max_batch_size else rest).append(job)
        self._pending = rest
        return [job for job in batch if not job.cancelled]

    @torch.inference_mode()
    def _run(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        logger.debug("batch of %d rows", len(jobs))
        inputs = self._collate(jobs)
        temperature, top_p, ignore_eos = jobs[0].sampling
        generation = dict(max_new_tokens=max(job.max_new_tokens for job in jobs), do_sample=temperature > 0)
        if temperature > 0:
            generation.update(temperature=temperature, top_p=top_p)
        if ignore_eos:
            generation.update(suppress_tokens=sorted(self.eos_token_ids))
        tracker = RowTracker(jobs, self.tokenizer, set() if ignore_eos else self.eos_token_ids, self.stream_interval)
        self.model.generate(
            **inputs, **generation, stopping_criteria=[tracker], pad_token_id=self.tokenizer.pad_token_id
        )
        for job in jobs:
            if not job.done:  # generate stopped on its own criteria (e.g. max length)
                job.finish("length")

    def _collate(self, jobs: list[Job]) -> dict:
        """Left-pad the rows; images concatenated in row order (the order of their image tokens)."""
        length = max(job.prompt_tokens for job in jobs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(jobs), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(jobs), length), dtype=torch.long)
        for row, job in enumerate(jobs):
            input_ids[row, length - job.prompt_tokens :] = job.inputs["input_ids"][0]
            attention_mask[row, length - job.prompt_tokens :] = job.inputs["attention_mask"][0]
        batch = {"input_ids": input_ids.to(self.model.device), "attention_mask": attention_mask.to(self.model.device)}
        pixels = [job.inputs["pixel_values"] for job in jobs if "pixel_values" in job.inputs]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels).to(self.model.device, self.model.dtype)
        return batch


def _text_length(request: GenerateRequest) -> int:
    """Characters of text in a request (what tokenising it costs grows with)."""
    total = 0
    for message in request.messages:
        if isinstance(message.content, str):
            total += len(message.content)
        else:
            total += sum(len(part.text) for part in message.content if part.type == "text")
    return total


def encode_image_file(path: str) -> str:
    """Base64 of an image file, as :class:`~piip_llava.serve.protocol.WorkerImagePart` carries it."""
    with open(path, "rb") as handle:
        return base64.b64encode(handle.read()).decode()
