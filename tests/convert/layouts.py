"""Source checkpoints written the way the tests' sources describe them, not by inverting the converters:

- the official PIIP-LLaVA tower and projector names and shapes of the official code (docs/design.md#checkpoint-formats)
  (CLIP without ``vision_model.``, timm ConvNeXt with the layer scale as ``.weight``, the unused CLIP
  ``post_layernorm`` and ConvNeXt ``head.*``), with the documented shapes checked;
- LLaVA's layout (docs/design.md#checkpoint-formats): the LLM as ``LlamaForCausalLM`` names, ``mm_projector.0/.2``,
  a transformers-4.x ``config.json`` with LLaVA's fields.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from transformers import LlamaConfig, LlamaForCausalLM

# Doc: injector.{ca_weight, cffn_weight, query_norm, feat_norm, attn.*, ffn.fc1, ffn.dwconv.dwconv, ffn.fc2, ffn_norm}.
DOC_INJECTOR_NAMES = {"attention_gate": "ca_weight", "ffn_gate": "cffn_weight", "query_norm": "query_norm",
                      "feature_norm": "feat_norm", "attention": "attn", "ffn.dwconv": "ffn.dwconv.dwconv",
                      "ffn.fc1": "ffn.fc1", "ffn.fc2": "ffn.fc2", "ffn_norm": "ffn_norm"}  # fmt: skip
TIMM_BLOCK_NAMES = {"dwconv": "conv_dw", "layernorm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2",
                    "layer_scale_parameter": "weight"}  # fmt: skip
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5,
                  hidden_act="silu")  # fmt: skip


@torch.no_grad()
def randomize(module: torch.nn.Module, scale: float = 0.05) -> None:
    """Perturb every parameter (LayerNorm weights, zero-initialised offsets and gates included), so that a tensor
    landing on the wrong name changes the output."""
    for parameter in module.parameters():
        parameter.add_(torch.randn_like(parameter) * scale)


def _official_clip(state: dict, width: int) -> dict:
    official = {f"encoder.{k}" if k.startswith("layers.") else k: v for k, v in state.items()}
    official["post_layernorm.weight"], official["post_layernorm.bias"] = torch.randn(width), torch.randn(width)
    return official


def _timm_convnext(state: dict, depths: list[int]) -> dict:
    places = []  # (stage, block index or "downsample") of every entry of the flat block list
    for stage, depth in enumerate(depths):
        places += [(stage, "downsample")] if stage else []
        places += [(stage, block) for block in range(depth)]
    official = {}
    for key, value in state.items():
        if key.startswith("embeddings."):
            stem = "stem.0." if key.startswith("embeddings.patch_embeddings.") else "stem.1."
            official[stem + key.split(".", 2)[2]] = value
            continue
        index, rest = re.fullmatch(r"blocks\.(\d+)\.(.+)", key).groups()
        stage, block = places[int(index)]
        if block == "downsample":
            official[f"stages.{stage}.downsample.{rest}"] = value
        else:
            name, _, suffix = rest.partition(".")
            official[f"stages.{stage}.blocks.{block}.{TIMM_BLOCK_NAMES[name]}" + (f".{suffix}" if suffix else "")] = (
                value
            )
    width = state[f"blocks.{len(places) - 1}.pwconv2.bias"].shape[0]
    official |= {"head.norm.weight": torch.randn(width), "head.norm.bias": torch.randn(width),
                 "head.pre_logits.fc.weight": torch.randn(width, width),
                 "head.pre_logits.fc.bias": torch.randn(width)}  # fmt: skip
    return official


def _injector_name(rest: str) -> str:
    for ours, doc in DOC_INJECTOR_NAMES.items():
        if rest == ours or rest.startswith(ours + "."):
            return doc + rest[len(ours) :]
    raise AssertionError(f"no documented name for {rest}")


def official_tower_state(tower) -> dict[str, torch.Tensor]:
    """A two-branch ``PiipVisionModel``'s weights under the official tower key names."""
    state = tower.state_dict()
    official = {}
    for index, branch in enumerate(tower.config.branches):
        prefix = f"branches.{index}."
        branch_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if branch.backbone_type == "clip":
            mapped, module = _official_clip(branch_state, branch.output_dim), "clip_model"
        else:
            mapped, module = _timm_convnext(branch_state, branch.convnext_depths()), "convnext_model"
        official |= {f"branch{index + 1}.{module}.{k}": v for k, v in mapped.items()}
    for key, value in state.items():
        match = re.fullmatch(r"interactions\.(\d+)\.0\.(\w+)\.(.+)", key)
        if not match:
            continue
        step, part, rest = match.groups()
        unit = f"interactions.{step}.interaction_units_12."
        name = {"small_to_large": "branch2to1_proj", "large_to_small": "branch1to2_proj",
                "update_large": "branch2to1_injector", "update_small": "branch1to2_injector"}[part]  # fmt: skip
        official[unit + name + "." + (_injector_name(rest) if name.endswith("injector") else rest)] = value
    return official


def official_projector_state(projector) -> dict[str, torch.Tensor]:
    """A ``PiipProjector``'s weights under ``TwoBranchMLP`` names: ``branch{j}.{1,3,6}``."""
    layers = {"linear_1": "1", "norm": "3", "linear_2": "6"}
    official = {}
    for key, value in projector.state_dict().items():
        index, layer, param = re.fullmatch(r"branches\.(\d+)\.(\w+)\.(weight|bias)", key).groups()
        official[f"branch{int(index) + 1}.{layers[layer]}.{param}"] = value
    return official


def check_documented_shapes(official: dict, dims1: list[int], dims2: list[int], heads: int) -> None:
    """The doc's shapes: ``branch2to1`` updates branch 1 with width D1, projections are Linear D2→D1 / D1→D2."""
    for step, (d1, d2) in enumerate(zip(dims1, dims2)):
        unit = f"interactions.{step}.interaction_units_12."
        assert official[unit + "branch2to1_proj.weight"].shape == (d1, d2)
        assert official[unit + "branch1to2_proj.weight"].shape == (d2, d1)
        for injector, width in (("branch2to1_injector.", d1), ("branch1to2_injector.", d2)):
            expected = {"ca_weight": (width,), "cffn_weight": (width,), "feat_norm.weight": (width,),
                        "attn.sampling_offsets.weight": (heads * 4 * 2, width),
                        "attn.attention_weights.weight": (heads * 4, width),
                        "attn.value_proj.weight": (width // 2, width), "attn.output_proj.weight": (width, width // 2),
                        "ffn.fc1.weight": (width // 4, width), "ffn.dwconv.dwconv.weight": (width // 4, 1, 3, 3),
                        "ffn.fc2.weight": (width, width // 4)}  # fmt: skip
            for name, shape in expected.items():
                assert official[unit + injector + name].shape == shape, name
    assert not any(key.endswith("position_ids") for key in official)


def tiny_llama(vocab_size: int, tokenizer) -> LlamaForCausalLM:
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = LlamaConfig(vocab_size=vocab_size, **special, **TINY_LLAMA)
    return LlamaForCausalLM(config).eval()


def llava_config(vocab_size: int, tokenizer, **multimodal) -> dict:
    """A LLaVA ``config.json`` as transformers 4.x wrote it for ``LlavaLlamaForCausalLM``."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "_name_or_path": "vicuna-7b-v1.5",
        "transformers_version": "4.37.2", "torch_dtype": "float32", "vocab_size": vocab_size, **TINY_LLAMA,
        "initializer_range": 0.02, "pretraining_tp": 1, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "use_cache": True, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "image_aspect_ratio": "pad", "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right",
        "use_mm_proj": True, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "mm_patch_merge_type": "flat", **multimodal,
    }  # fmt: skip


def write_llava_checkpoint(directory: Path, state: dict, config: dict, tokenizer, safetensors: bool) -> None:
    """Config, tokenizer, and the weights in two shards with an index (safetensors or ``pytorch_model-*.bin``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(directory)
    size = sum(t.numel() * t.element_size() for t in state.values())
    save_torch_state_dict({k: v.clone() for k, v in state.items()}, directory, max_shard_size=size // 2 + 1,
                          safe_serialization=safetensors)  # fmt: skip
    index = "model.safetensors.index.json" if safetensors else "pytorch_model.bin.index.json"
    assert (directory / index).exists(), "the source is sharded"


def spliced_logits(llm: LlamaForCausalLM, input_ids: torch.Tensor, image_token_id: int, features: torch.Tensor):
    """LLaVA's forward: the image features replace the image positions (the placeholder id is not in this LLM's
    vocabulary), then the plain LLM runs on the embeddings."""
    mask = input_ids == image_token_id
    embeddings = llm.get_input_embeddings()(input_ids.masked_fill(mask, 0))
    embeddings[mask] = features.reshape(-1, features.shape[-1])
    return llm(inputs_embeds=embeddings).logits, embeddings


def llava15_logits(source, input_ids: torch.Tensor, pixel_values: torch.Tensor, image_token_id: int):
    """LLaVA-1.5's forward (``source``: the ``llava15`` fixture): CLIP ``hidden_states[-2]`` without CLS →
    mlp2x_gelu → spliced into the LLM."""
    hidden = source.clip(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
    return spliced_logits(source.llm, input_ids, image_token_id, source.mlp(hidden))
