"""``piip-llava convert --to remote-code SRC DST``: a saved model that loads with ``transformers`` alone.

DST is a copy of SRC with our modelling files next to the weights and an ``auto_map`` in ``config.json`` and
``processor_config.json`` (what ``register_for_auto_class`` writes), so that

    AutoModelForImageTextToText.from_pretrained(DST, trust_remote_code=True)
    AutoProcessor.from_pretrained(DST, trust_remote_code=True)

work where ``piip_llava`` is not installed. ``transformers`` loads such code from one flat folder, so the files of
``piip_llava/model/`` and ``piip_llava/model/vision/`` are written side by side and the imports between them are
rewritten to match (``from .vision.modeling_piip import`` becomes ``from .modeling_piip import``). Everything
they import outside themselves is ``torch``, ``transformers`` and their dependencies.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

MODEL_PACKAGE = Path(__file__).resolve().parents[1] / "model"

# The modules a loaded model, config or processor needs, relative to piip_llava/model/.
REMOTE_CODE_FILES = (
    "compat.py",
    "configuration_piip_llava.py",
    "conversation.py",
    "modeling_piip_llava.py",
    "processing_piip_llava.py",
    "projector.py",
    "vision/branches.py",
    "vision/configuration_piip.py",
    "vision/deformable_attention.py",
    "vision/interaction.py",
    "vision/modeling_piip.py",
    "vision/presets.py",
)

CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_piip_llava.PiipLlavaConfig",
    "AutoModel": "modeling_piip_llava.PiipLlavaModel",
    "AutoModelForImageTextToText": "modeling_piip_llava.PiipLlavaForConditionalGeneration",
}
PROCESSOR_AUTO_MAP = {
    "AutoProcessor": "processing_piip_llava.PiipLlavaProcessor",
    "AutoImageProcessor": "processing_piip_llava.PiipLlavaImageProcessor",
}

_RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)\.(\.?)([\w.]+)(\s+import\b)", flags=re.MULTILINE)


def flat_source(path: Path) -> str:
    """The file's source with its relative imports pointing into one flat folder."""
    flat_names = {Path(name).stem for name in REMOTE_CODE_FILES}

    def rewrite(match: re.Match) -> str:
        module = match.group(3).split(".")[-1]
        if match.group(2) or module not in flat_names:
            raise ValueError(f"{path}: `{match.group(0).strip()}` leaves the remote-code files {REMOTE_CODE_FILES}")
        return f"{match.group(1)}.{module}{match.group(4)}"

    return _RELATIVE_IMPORT.sub(rewrite, path.read_text())


def write_remote_code(directory: str | Path) -> Path:
    """Add the modelling files and the ``auto_map`` entries to a saved model directory, in place."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: give a directory written by `piip-llava build` or `train`")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "piip_llava":
        raise ValueError(f"{config_path}: model_type {config.get('model_type')!r} is not 'piip_llava'")
    for name in REMOTE_CODE_FILES:
        (directory / Path(name).name).write_text(flat_source(MODEL_PACKAGE / name))
    config["auto_map"] = CONFIG_AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    processor_path = directory / "processor_config.json"
    if processor_path.exists():
        processor = json.loads(processor_path.read_text())
        processor["auto_map"] = PROCESSOR_AUTO_MAP
        if isinstance(processor.get("image_processor"), dict):  # the image processor's own settings, nested
            processor["image_processor"]["auto_map"] = PROCESSOR_AUTO_MAP
        processor_path.write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    return directory


def export_remote_code(src: str | Path, dst: str | Path) -> Path:
    """Copy the saved model ``src`` to ``dst`` and make the copy load with ``trust_remote_code=True``."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty: give a new output directory")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return write_remote_code(dst)
