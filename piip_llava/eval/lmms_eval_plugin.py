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

from piip_llava.model.conversation import get_conversation
from piip_llava.model.processing_piip_llava import IMAGE_TOKEN


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

    def _prompt(self, context: str, image_count: int) -> str:
        if IMAGE_TOKEN not in context:
            context = f"{IMAGE_TOKEN}\n" * image_count + context
        conv = get_conversation(self.template)
        conv.append_message(conv.roles[0], context)
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    @torch.inference_mode()
    def generate_until(self, requests: list[Instance]) -> list[str]:
        results = []
        for start in tqdm(range(0, len(requests), self.batch_size_per_gpu), disable=self.rank != 0):
            batch = [request.args for request in requests[start : start + self.batch_size_per_gpu]]
            prompts, images = [], []
            for context, _, doc_to_visual, doc_id, task, split in batch:
                visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) if isinstance(v, Image.Image)]
                prompts.append(self._prompt(context, len(visuals)))
                images += [v.convert("RGB") for v in visuals]
            gen_kwargs = dict(batch[0][1])  # lmms-eval groups requests by generation kwargs only in some tasks
            until = [s for s in gen_kwargs.pop("until", []) if s]
            temperature = float(gen_kwargs.get("temperature", 0) or 0)
            generation = dict(max_new_tokens=int(gen_kwargs.get("max_new_tokens", 128)), do_sample=temperature > 0)
            if temperature > 0:
                generation.update(temperature=temperature, top_p=float(gen_kwargs.get("top_p") or 1.0))
            inputs = self.processor(text=prompts, images=images or None).to(self.model.device)
            output = self.model.generate(**inputs, **generation)
            texts = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for text in texts:
                for stop in until:
                    text = text.split(stop)[0]
                results.append(text.strip())
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("piip_llava supports generation tasks (output_type: generate_until)")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("piip_llava does not support multi-round lmms-eval tasks")
