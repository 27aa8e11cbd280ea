"""Shared fixtures: tiny towers built from the preset registry, deterministic seeds, no network."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# tests/vllm run in their own venv (.venv-vllm, `make test` creates it): vLLM needs an older transformers.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm"]

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
    from piip_llava.data.synthetic import write_color_dataset

    return write_color_dataset(folder, count=count, bad=bad, suffix=suffix)


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory):
    """``(base_dir, lora_dir)``: a tiny model and one short ``piip-llava train --lora_enable`` run on it (LoRA on the
    LLM, the projector trained in full), shared by the LoRA, loading and serving tests."""
    from piip_llava.model.tiny import save_tiny_model
    from piip_llava.train.train import train

    root = tmp_path_factory.mktemp("lora")
    save_tiny_model(root / "base")
    data = write_llava_data(root / "data")
    code = train(["--model_name_or_path", str(root / "base"), "--data_path", str(data), "--image_folder",
                  str(data.parent / "images"), "--tunable_parts", "projector,llm", "--lora_enable", "--lora_r", "8",
                  "--lora_alpha", "16", "--learning_rate", "5e-3", "--projector_lr", "1e-3", "--max_steps", "4",
                  "--per_device_train_batch_size", "4", "--output_dir", str(root / "lora"), "--report_to", "none",
                  "--use_cpu", "--save_strategy", "no"])  # fmt: skip
    assert code == 0 and (root / "lora" / "adapter_model.safetensors").exists()
    return root / "base", root / "lora"
