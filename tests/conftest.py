"""Shared fixtures: tiny towers built from the preset registry, deterministic seeds, no network."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_TOWERS = ["tiny-clip-2branch", "tiny-convnext-clip", "tiny-siglip-clip", "tiny-vit-3branch", "tiny-vit-4branch"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def build_tiny_tower(name: str, dtype: torch.dtype = torch.float32):
    """A random-weight tiny tower in eval mode (DropPath off)."""
    from piip_llava.model.vision import PiipVisionModel, get_tower_config

    return PiipVisionModel(get_tower_config(name)).to(dtype).eval()


def randomize_gates(tower, scale: float = 0.5) -> None:
    """Give every interaction gate non-zero values so interactions change the branches."""
    with torch.no_grad():
        for name, parameter in tower.interactions.named_parameters():
            if name.endswith("_gate"):
                parameter.uniform_(-scale, scale)


def tower_input(tower, batch: int = 2) -> torch.Tensor:
    size = tower.config.image_size
    return torch.randn(batch, 3, size, size)


@pytest.fixture(scope="session")
def tiny_llava():
    """A random tiny PIIP-LLaVA (CLIP-B/L-shaped tiny tower, tiny Llama, local BPE tokenizer) and its processor."""
    from piip_llava.model.tiny import build_tiny_model

    return build_tiny_model()


def solid_image(color=(255, 0, 0), size=(80, 56)):
    from PIL import Image

    return Image.new("RGB", size, color)


def write_llava_data(folder, bad: bool = False, count: int = 12, suffix: str = ".json"):
    """A small LLaVA-format data file with solid-colour images; ``bad`` adds a corrupt image, a missing image and a
    malformed record. Returns the data file path."""
    import json
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    colors = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    records = []
    for i in range(count):
        name = list(colors)[i % 3]
        Image.new("RGB", (48 + 8 * (i % 4), 40), colors[name]).save(folder / "images" / f"{i}.png")
        records.append({"id": f"s{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the image?"},
            {"from": "gpt", "value": f"The image is {name}."}]})  # fmt: skip
    text_only = [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]
    records.append({"id": "text", "conversations": text_only})
    if bad:
        (folder / "images" / "corrupt.png").write_bytes(b"not a png at all")
        records.insert(2, {"id": "corrupt", "image": "corrupt.png", "conversations": records[0]["conversations"]})
        records.insert(5, {"id": "missing", "image": "nowhere.png", "conversations": records[0]["conversations"]})
        records.insert(7, {"id": "malformed", "conversation": "oops"})
    path = folder / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    else:
        path.write_text(json.dumps(records))
    return path
