"""lmms-eval model plugin: ``lmms-eval eval --model piip_llava --model_args pretrained=DIR --tasks ...``.

Registered through the ``lmms_eval.models`` entry point (``pyproject.toml``), which lmms-eval 0.7.3 reads: the
entry point returns a ``ModelManifest`` naming the class below. Generation is batched (``batch_size`` model arg)
and follows the task's ``generation_kwargs`` (``max_new_tokens``, ``temperature``, ``until``).
"""

from __future__ import annotations

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from piip_llava.model.generation import chat_prompt, generate_answers


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="piip_llava", simple_class_path="piip_llava.eval.lmms_eval_plugin.PiipLlava")]


class PiipLlava(lmms):
    is_simple = True

    def __init__(self, pretrained: str, batch_size: int | str = 8, template: str = "vicuna_v1",
                 device: str | None = None, dtype: str = "float32", **kwargs) -> None:  # fmt: skip
        super().__init__()
        from transformers import AutoProcessor

        import piip_llava.model  # noqa: F401
        from piip_llava.model import PiipLlavaForConditionalGeneration

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = PiipLlavaForConditionalGeneration.from_pretrained(pretrained, dtype=getattr(torch, dtype))
        self.model = model.to(device).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        self.batch_size_per_gpu = int(batch_size)
        self.template = template

    def generate_until(self, requests: list[Instance]) -> list[str]:
        results = []
        for start in tqdm(range(0, len(requests), self.batch_size_per_gpu), disable=self.rank != 0):
            batch = [request.args for request in requests[start : start + self.batch_size_per_gpu]]
            prompts, images = [], []
            for context, _, doc_to_visual, doc_id, task, split in batch:
                visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) if isinstance(v, Image.Image)]
                prompts.append(chat_prompt(context, self.template, len(visuals)))
                images += [v.convert("RGB") for v in visuals]
            gen_kwargs = batch[0][1]  # lmms-eval batches requests of one task, hence one set of gen kwargs
            results += generate_answers(
                self.model,
                self.processor,
                prompts,
                images,
                max_new_tokens=int(gen_kwargs.get("max_new_tokens", 128)),
                temperature=float(gen_kwargs.get("temperature") or 0),
                top_p=float(gen_kwargs.get("top_p") or 1.0),
                stop=[s for s in gen_kwargs.get("until", []) if s],
            )
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("piip_llava supports generation tasks (output_type: generate_until)")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("piip_llava does not support multi-round lmms-eval tasks")
