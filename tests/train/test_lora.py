"""piip_llava/train/lora.py and scripts/merge_lora.py"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from peft import PeftModel

import piip_llava.model  # noqa: F401
from piip_llava.model import PiipLlavaForConditionalGeneration
from tests.conftest import solid_image

ROOT = Path(__file__).resolve().parents[2]


def test_lora_train_merge_load_gives_the_unmerged_logits(lora_run, tmp_path):
    base_dir, lora_dir = lora_run
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, str(ROOT / "scripts/merge_lora.py"), "--adapter", str(lora_dir),
                    "--output", str(tmp_path / "merged")], check=True, env=env, capture_output=True)  # fmt: skip

    base = PiipLlavaForConditionalGeneration.from_pretrained(base_dir).eval()
    unmerged = PeftModel.from_pretrained(PiipLlavaForConditionalGeneration.from_pretrained(base_dir),
                                         lora_dir).eval()  # fmt: skip
    merged = PiipLlavaForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    inputs = processor(text="USER: <image>\nWhat color? ASSISTANT:", images=solid_image())
    with torch.no_grad():
        base_logits, lora_logits, merged_logits = (m(**inputs).logits for m in (base, unmerged, merged))
    assert not torch.allclose(base_logits, lora_logits)  # the adapters and the projector did train
    torch.testing.assert_close(merged_logits, lora_logits, atol=1e-5, rtol=1e-5)


def test_every_tunable_part_trains_in_full_beside_the_adapters():
    """PEFT cannot wrap a ModuleList and matches names by suffix: the tower's lists are named item by item, and the
    tower's ``branches`` never catch the projector's ``branches``. Trainable = LoRA + exactly the named parts."""
    from piip_llava.model.tiny import build_tiny_model
    from piip_llava.train.lora import modules_to_save, wrap_lora
    from piip_llava.train.stages import apply_tunable_parts, part_modules

    model, _ = build_tiny_model()
    parts = ["projector", "vision_branches", "interactions", "llm"]
    names = modules_to_save(model, parts)
    assert names[0] == "model.multi_modal_projector" and not any("projector." in n for n in names)
    expected = sum(p.numel() for part in parts[:3] for module in part_modules(model)[part] for p in module.parameters())
    apply_tunable_parts(model, parts)
    peft_model = wrap_lora(model, parts, r=4, alpha=8, dropout=0.0)
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert sum(v for n, v in trainable.items() if "lora_" not in n) == expected
    assert any("vision_tower.interactions" in n for n in trainable) and any("lora_A" in n for n in trainable)
