"""``import piip_llava`` registers the Auto classes, lazily (piip_llava/registration.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_loads_neither_torch_nor_transformers():
    out = run_python("import sys, piip_llava; print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def saved_tiny(tiny_llava, tmp_path_factory):
    model, processor = tiny_llava
    directory = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


LOAD = """
{imports}
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from PIL import Image

directory = {directory!r}
config = AutoConfig.from_pretrained(directory)
model = AutoModelForImageTextToText.from_pretrained(directory).eval()
processor = AutoProcessor.from_pretrained(directory)
base = AutoModel.from_pretrained(directory)
inputs = processor(text="USER: <image>\\nHi ASSISTANT:", images=Image.new("RGB", (40, 30), (9, 99, 200)))
with torch.no_grad():
    logits = model(**inputs).logits
torch.save(logits, {logits_path!r})
print(type(config).__name__, type(model).__name__, type(processor).__name__, type(base).__name__)
"""


@pytest.mark.parametrize(
    "imports",
    ["import piip_llava", "import transformers.models.auto.modeling_auto\nimport piip_llava"],
    ids=["piip-first", "transformers-first"],
)
def test_auto_classes_load_a_saved_model_after_import_piip_llava(saved_tiny, tiny_llava, tmp_path, imports):
    import torch

    logits_path = tmp_path / "logits.pt"
    out = run_python(LOAD.format(imports=imports, directory=str(saved_tiny), logits_path=str(logits_path)))
    assert out.split() == [
        "PiipLlavaConfig",
        "PiipLlavaForConditionalGeneration",
        "PiipLlavaProcessor",
        "PiipLlavaModel",
    ]
    model, processor = tiny_llava
    from PIL import Image

    inputs = processor(text="USER: <image>\nHi ASSISTANT:", images=Image.new("RGB", (40, 30), (9, 99, 200)))
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
    torch.testing.assert_close(torch.load(logits_path), expected)


def test_without_import_the_model_type_is_unknown(saved_tiny):
    code = f"""
from transformers import AutoConfig
try:
    AutoConfig.from_pretrained({str(saved_tiny)!r})
except ValueError as error:
    print("piip_llava" in str(error))
"""
    assert run_python(code).strip() == "True"


def test_a_failed_registration_never_fails_the_transformers_import():
    """A registration that raises (seen under threaded imports in the serving tests) must not fail the import of the
    Auto module it waited for: importlib would drop that module while ``transformers.AutoModel`` keeps its mapping,
    and every later registration would go to a second copy. It is retried at the next watched import."""
    out = run_python(
        """
import sys
import piip_llava.registration as registration
finder = next(f for f in sys.meta_path if isinstance(f, registration._AutoModuleFinder))
real = finder.pending["transformers.models.auto.modeling_auto"]
calls = []
def flaky(module):
    calls.append(module)
    if len(calls) == 1:
        raise ImportError("simulated failure")
    real(module)
finder.pending["transformers.models.auto.modeling_auto"] = flaky
from transformers import AutoModel
import transformers.models.auto.modeling_auto as modeling_auto
assert AutoModel._model_mapping is modeling_auto.MODEL_MAPPING and str(finder.error) == "simulated failure"
from piip_llava.model.vision import get_tower_config
import piip_llava.model.vision.modeling_piip
print(type(AutoModel.from_config(get_tower_config("tiny-vit-3branch"))).__name__, len(calls))
"""
    )
    assert out.split() == ["PiipVisionModel", "2"]
