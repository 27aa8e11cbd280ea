"""Fixtures of the conversion tests: an LLM tokenizer without ``<image>`` (a user's Vicuna has none), and a tiny
LLaVA-1.5 checkpoint (original layout, sharded safetensors, CLIP in its own directory) with its conversion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from tests.convert.layouts import llava_config, randomize, tiny_llama, write_llava_checkpoint

TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, patch_size=8,
                 image_size=32, hidden_act="quick_gelu")  # fmt: skip


@pytest.fixture(scope="session")
def llm_tokenizer():
    from piip_llava.model.tiny import train_tokenizer

    return train_tokenizer(with_image_token=False)


@pytest.fixture(scope="session")
def llava15(tmp_path_factory, llm_tokenizer):
    """``root/llava`` (LlavaLlamaForCausalLM keys, mlp2x_gelu, a legacy rotary buffer), ``root/clip`` (the tower),
    and the modules they were written from."""
    root = tmp_path_factory.mktemp("llava15")
    torch.manual_seed(1)
    clip = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).eval()
    randomize(clip)
    clip.save_pretrained(root / "clip")
    llm = tiny_llama(len(llm_tokenizer), llm_tokenizer)
    mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64)).eval()  # LLaVA's mlp2x_gelu
    state = dict(llm.state_dict()) | {f"model.mm_projector.{k}": v for k, v in mlp.state_dict().items()}
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, 16, 2) / 16)
    config = llava_config(len(llm_tokenizer), llm_tokenizer, mm_vision_tower="openai/clip-vit-large-patch14-336",
                          mm_projector_type="mlp2x_gelu", mm_hidden_size=32, mm_vision_select_layer=-2,
                          mm_vision_select_feature="patch")  # fmt: skip
    write_llava_checkpoint(root / "llava", state, config, llm_tokenizer, safetensors=True)
    return SimpleNamespace(root=root, clip=clip, llm=llm, mlp=mlp, config=config)


@pytest.fixture(scope="session")
def llava15_converted(llava15):
    """``piip-llava convert --from llava`` of :func:`llava15`: our single-branch baseline directory."""
    from piip_llava.cli import main

    output = llava15.root / "ours"
    args = ["convert", "--from", "llava", "--vision-tower", str(llava15.root / "clip"), str(llava15.root / "llava")]
    assert main([*args, str(output)]) == 0
    return output
