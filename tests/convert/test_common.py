"""piip_llava/convert/common.py"""

import pytest
import torch

from piip_llava.convert.common import KeyMap, Rule, branch_key_map, convert_state, hf_backbone_config, map_keys
from piip_llava.model.vision import get_tower_config


def test_the_first_matching_rule_decides_and_drops_carry_their_reason():
    rules = [Rule(r"a\.skip", None, "not needed"), Rule(r"a\.(\w+)", r"b.\1")]
    key_map = map_keys(["a.skip", "a.x", "c.y"], rules)
    assert (key_map.renamed, key_map.dropped, key_map.unexpected) == ({"a.x": "b.x"}, {"a.skip": "not needed"}, ["c.y"])
    merged = KeyMap()
    merged.update(key_map, "src.", "ours.")
    assert merged.renamed == {"src.a.x": "ours.b.x"} and merged.unexpected == ["src.c.y"]


def test_convert_state_names_every_problem_at_once():
    source = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1), "d": torch.zeros(1)}
    key_map = KeyMap(renamed={"a": "x", "b": "y", "c": "z"}, unexpected=["d"])
    with pytest.raises(ValueError) as error:
        convert_state(source, key_map, {"x": torch.Size([2]), "y": torch.Size([4]), "w": torch.Size([1])}, "ckpt")
    message = str(error.value)
    assert "unexpected source keys (neither used nor a known unused tensor): d" in message
    assert "missing keys: w" in message and "keys the model does not have: c -> z" in message
    assert "shape mismatches: b: (3,) vs model (4,)" in message
    state = convert_state({"a": torch.ones(2)}, KeyMap(renamed={"a": "x"}), {"x": torch.Size([2])}, "ckpt")
    assert torch.equal(state["x"], torch.ones(2))


def test_branch_key_map_reads_hf_clip_names_with_the_vision_model_prefix():
    branch = get_tower_config("tiny-clip-2branch").branches[0]
    keys = ["vision_model.encoder.layers.0.mlp.fc1.weight", "vision_model.pre_layrnorm.bias",
            "vision_model.post_layernorm.weight", "text_model.embeddings.token_embedding.weight"]  # fmt: skip
    key_map = branch_key_map(branch, keys)
    assert key_map.renamed == {"vision_model.encoder.layers.0.mlp.fc1.weight": "layers.0.mlp.fc1.weight",
                               "vision_model.pre_layrnorm.bias": "pre_layrnorm.bias"}  # fmt: skip
    assert list(key_map.dropped) == ["vision_model.post_layernorm.weight"]
    assert key_map.unexpected == ["text_model.embeddings.token_embedding.weight"]


def test_hf_backbone_config_takes_the_architecture_fields():
    clip = hf_backbone_config("clip", {"model_type": "clip", "vision_config": {"hidden_size": 48}}, "branch1")
    assert clip["hidden_size"] == 48 and clip["patch_size"] == 32 and "projection_dim" not in clip
    with pytest.raises(ValueError, match="branch2: model_type 'clip_vision_model' is not a convnext config"):
        hf_backbone_config("convnext", {"model_type": "clip_vision_model"}, "branch2")
