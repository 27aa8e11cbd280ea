"""piip_llava/convert/remote_code.py: a converted directory loads with ``transformers`` alone
(``trust_remote_code=True``), in a Python that cannot import ``piip_llava``, and gives our logits."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

import pytest
import torch

from piip_llava.cli import main
from tests.conftest import solid_image

PROMPT = "USER: <image>\nWhat color is it? ASSISTANT:"

# Run with `python -S`: no site processing, so neither the editable install's finder (a .pth file) nor the repository
# (the working directory is elsewhere) is on the path; only the site-packages folder that holds torch/transformers.
CHILD = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", {repo!r})] + [{site!r}]
try:
    import piip_llava
    raise SystemExit("piip_llava is importable: the check would prove nothing")
except ModuleNotFoundError:
    pass
import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

directory = {directory!r}
config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
inputs = torch.load({inputs!r})
with torch.no_grad():
    logits = model(**inputs).logits
from PIL import Image
own = processor(text={prompt!r}, images=Image.open({image!r}))
torch.save({{"logits": logits, "input_ids": own["input_ids"], "pixel_values": own["pixel_values"]}}, {output!r})
print(type(config).__module__, type(model).__name__, type(processor).__name__)
"""


@pytest.fixture(scope="module")
def remote_dir(tiny_llava, tmp_path_factory):
    model, processor = tiny_llava
    root = tmp_path_factory.mktemp("remote")
    model.save_pretrained(root / "saved")
    processor.save_pretrained(root / "saved")
    assert main(["convert", "--to", "remote-code", str(root / "saved"), str(root / "remote")]) == 0
    return root / "remote"


def test_remote_code_loads_without_our_package_and_gives_our_logits(tiny_llava, remote_dir, tmp_path):
    model, processor = tiny_llava
    image = tmp_path / "image.png"
    solid_image((30, 140, 220)).save(image)
    from PIL import Image

    inputs = processor(text=PROMPT, images=Image.open(image))
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = CHILD.format(repo=repo, site=sysconfig.get_paths()["purelib"], directory=str(remote_dir),
                        inputs=str(tmp_path / "inputs.pt"), prompt=PROMPT, image=str(image),
                        output=str(tmp_path / "out.pt"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config_module, model_class, processor_class = result.stdout.split()
    assert config_module.startswith("transformers_modules.")  # the copied code, not ours
    assert (model_class, processor_class) == ("PiipLlavaForConditionalGeneration", "PiipLlavaProcessor")
    out = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(out["logits"], expected)
    assert torch.equal(out["input_ids"], inputs["input_ids"])
    torch.testing.assert_close(out["pixel_values"], inputs["pixel_values"])


def test_remote_code_directory_still_loads_with_our_package(tiny_llava, remote_dir):
    from piip_llava.model import PiipLlavaForConditionalGeneration

    model, _ = tiny_llava
    loaded = PiipLlavaForConditionalGeneration.from_pretrained(remote_dir)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_remote_code_refuses_a_non_model_directory_and_a_used_output(remote_dir, tmp_path):
    from piip_llava.convert.remote_code import export_remote_code, write_remote_code

    with pytest.raises(FileNotFoundError, match="config.json"):
        write_remote_code(tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        export_remote_code(remote_dir, remote_dir)
