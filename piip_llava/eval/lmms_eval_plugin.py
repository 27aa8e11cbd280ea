"""lmms-eval model plugin: ``lmms-eval eval --model piip_llava --model_args pretrained=DIR --tasks ...``.

Registered through the ``lmms_eval.models`` entry point (``pyproject.toml``), which lmms-eval 0.7.3 reads: the
entry point returns a ``ModelManifest`` naming the class below. As lmms-eval's own models (``llava_hf``):

* data parallel under ``accelerate launch --num_processes N -m lmms_eval ...``: each process loads the model on its
  device, lmms-eval shards the requests by rank and gathers the results;
* ``generate_until`` groups requests by their generation settings (``utils.Collator``), so one batch never mixes
  e.g. greedy and sampled requests, or two ``max_new_tokens``; answers return in request order;
* ``loglikelihood`` returns ``(mean negative log-likelihood of the continuation tokens, is_greedy)``: lmms-eval's
  ``multiple_choice`` takes the *argmin* of that value (its models return the loss, not lm-eval's log-probability).

Model args: ``pretrained``, ``batch_size`` (8), ``template`` (default: the model's), ``device``/``dtype``
(``auto``: bf16 on CUDA, fp32 on CPU), ``image_aspect_ratio`` (default: the model's).
"""

from __future__ import annotations

from lmms_eval import utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger as eval_logger  # lmms-eval's logger: shown on every rank
from PIL import Image
from tqdm import tqdm

from piip_llava.model.generation import chat_continuation, chat_prompt, continuation_log_probs, generate_answers


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="piip_llava", simple_class_path="piip_llava.eval.lmms_eval_plugin.PiipLlava")]


class PiipLlava(lmms):
    is_simple = True

    def __init__(self, pretrained: str, batch_size: int | str = 8, template: str | None = None, device: str = "auto",
                 dtype: str = "auto", image_aspect_ratio: str | None = None, model_base: str | None = None,
                 load_8bit: bool = False, load_4bit: bool = False, **kwargs) -> None:  # fmt: skip
        super().__init__()
        from accelerate import Accelerator

        from piip_llava.model.loading import apply_config_preprocessing, load_for_inference

        if kwargs:
            raise ValueError(f"unknown piip_llava model args: {', '.join(sorted(kwargs))}")
        # lmms-eval made the (shared) accelerator state already; on CPU it is multi-process only when the launcher
        # set ACCELERATE_USE_CPU=1 (see README "Evaluate").
        accelerator = Accelerator()
        if accelerator.num_processes > 1:
            device = str(accelerator.device)  # one replica per process: cuda:LOCAL_RANK, or cpu
        self.model, self.processor = load_for_inference(
            pretrained, device=device, dtype=dtype, model_base=model_base, load_8bit=load_8bit, load_4bit=load_4bit
        )
        apply_config_preprocessing(self.processor, self.model.config, image_aspect_ratio)
        self.template = template or self.model.config.template
        self.batch_size_per_gpu = int(batch_size)
        self.accelerator = accelerator
        self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        self._device = self.model.device
        eval_logger.info(f"piip_llava: process {self._rank} of {self._world_size} on {self._device}")

    @property
    def device(self):
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _visuals(self, doc_to_visual, doc_id: int, task: str, split: str) -> list[Image.Image]:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        return [visual.convert("RGB") for visual in visuals if isinstance(visual, Image.Image)]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        # Longest prompts first (a memory error shows at once); grouped by generation settings (x[1]).
        collator = utils.Collator([request.args for request in requests], lambda x: (-len(x[0]), x[0]), grouping=True)
        results = []
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="piip_llava generate")
        for batch in collator.get_batched(n=self.batch_size_per_gpu):
            prompts, images = [], []
            for context, _, doc_to_visual, doc_id, task, split in batch:
                visuals = self._visuals(doc_to_visual, doc_id, task, split)
                prompts.append(chat_prompt(context, self.template, len(visuals)))
                images += visuals
            settings = dict(batch[0][1])  # one group: every request of the batch has these settings
            until = settings.get("until") or []
            results += generate_answers(
                self.model,
                self.processor,
                prompts,
                images,
                max_new_tokens=int(settings.get("max_new_tokens", 128)),
                temperature=float(settings.get("temperature") or 0),
                top_p=float(settings.get("top_p") or 1.0),
                stop=[until] if isinstance(until, str) else [s for s in until if s],
            )
            progress.update(len(batch))
        progress.close()
        return collator.get_original(results)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="piip_llava loglikelihood")
        for start in range(0, len(requests), self.batch_size_per_gpu):
            prompts, wholes, images = [], [], []
            for context, target, doc_to_visual, doc_id, task, split in (
                request.args for request in requests[start : start + self.batch_size_per_gpu]
            ):
                continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
                visuals = self._visuals(doc_to_visual, doc_id, task, split)
                prompts.append(chat_prompt(context, self.template, len(visuals)))
                wholes.append(chat_continuation(context, str(continuation), self.template, len(visuals)))
                images += visuals
            for log_prob, count, greedy in continuation_log_probs(self.model, self.processor, prompts, wholes, images):
                results.append((-log_prob / count, greedy))
            progress.update(len(prompts))
        progress.close()
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("piip_llava does not support multi-round lmms-eval tasks")
