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
