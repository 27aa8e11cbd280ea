"""piip_llava/convert/official_piip.py"""

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPConfig, CLIPVisionConfig

import piip_llava.model  # noqa: F401  (registers the Auto classes)
from piip_llava.cli import main
from piip_llava.convert.cli import parse_branch_configs
from piip_llava.convert.common import convert_state, expected_shapes
from piip_llava.convert.official_piip import convert_official_tower, official_vision_config, tower_key_map
from piip_llava.model.builder import load_projector_weights
from piip_llava.model.projector import PiipProjector
from piip_llava.model.vision import TOWER_PRESETS, BranchConfig, PiipVisionConfig, PiipVisionModel, get_tower_config
from tests.conftest import randomize_gates
from tests.convert.layouts import (
    check_documented_shapes,
    llava_config,
    official_projector_state,
    official_tower_state,
    randomize,
    spliced_logits,
    tiny_llama,
    write_llava_checkpoint,
)

# Branch 1 (48 wide) and branch 2 (32 wide, or ConvNeXt 32/64) differ, so a swapped direction cannot fit.
CLIP_LARGE = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, patch_size=8,
                  image_size=32, hidden_act="quick_gelu")  # fmt: skip
CLIP_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                  image_size=32, hidden_act="quick_gelu")  # fmt: skip
CONVNEXT = dict(hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 2, 1])
TEXT_DIM = 64
DEFORM = dict(n_points=4, deform_num_heads=4, cffn_ratio=0.25, deform_ratio=0.5, with_cffn=True,
              interact_attn_type="deform", interaction_drop_path_rate=0.4, unfreeze="none",
              use_branch_merging=False)  # fmt: skip
# Branch 1 at 48 px with a 32 px position table: the table is interpolated, as for CLIP-L/16-224 at 256.
CLIP_BRANCH1 = dict(model_type="clip_hf", img_size=48, patch_size=8, pretrain_patch_size=8,
                    interaction_indexes=[[0, 1], [2, 3]], use_cls_token=True)  # fmt: skip
CONVNEXT_BRANCH2 = dict(model_type="convnext_timm", img_size=64, interaction_indexes=[[0, 2], [3, 7]],
                        pretrained="convnext_base.clip_laiona_augreg_320",
                        downsample_ratios=[4, 8, 8, 16, 16, 16, 32, 32])  # fmt: skip
PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]


def official_model(model_cls: str, branch1: dict, branch2: dict) -> dict:
    """The ``model`` dict of an official ``llava/configs/*.py``."""
    backbone = dict(DEFORM, model_cls=model_cls, branch1=branch1, branch2=branch2)
    return {"backbone": backbone, "projector": {"type": "separate_2branch_v1", "norm": "gn"}}


def reference_modules(config: PiipVisionConfig):
    """The tower and projector the official checkpoint is written from: every weight perturbed, gates on."""
    tower = PiipVisionModel(config).eval()
    randomize(tower)
    randomize_gates(tower)
    projector = PiipProjector(config.output_dims, TEXT_DIM, groups=32).eval()  # official: GroupNorm(32, D_llm)
    randomize(projector)
    return tower, projector


def assert_same_tower_config(converted: PiipVisionConfig, expected: PiipVisionConfig) -> None:
    for ours, theirs in zip(converted.branches, expected.branches, strict=True):
        assert (ours.backbone_type, ours.image_size, ours.interaction_ranges, ours.use_cls_token) == (
            theirs.backbone_type, theirs.image_size, theirs.interaction_ranges, theirs.use_cls_token)  # fmt: skip
        assert ours.hf_config().to_dict() == theirs.hf_config().to_dict()
    fields = ["deform_num_heads", "deform_num_points", "deform_ratio", "cffn_ratio", "interaction_drop_path_rate"]
    assert [getattr(converted, f) for f in fields] == [getattr(expected, f) for f in fields]


def assert_reproduces(directory, tower, projector) -> None:
    """The converted tower + projector give the official outputs (fp32, 1e-5)."""
    converted = PiipVisionModel.from_pretrained(directory).eval()
    converted_projector = PiipProjector(converted.config.output_dims, TEXT_DIM, groups=32).eval()
    load_projector_weights(converted_projector, directory / "mm_projector.safetensors")
    pixel_values = torch.randn(2, 3, tower.config.image_size, tower.config.image_size)
    with torch.no_grad():
        expected, actual = tower(pixel_values), converted(pixel_values)
        for expected_map, actual_map in zip(expected, actual, strict=True):
            torch.testing.assert_close(actual_map, expected_map, rtol=0, atol=1e-5)
        torch.testing.assert_close(converted_projector(actual), projector(expected), rtol=0, atol=1e-5)


def test_tower_only_vit_vit_from_config_directories(tmp_path):
    CLIPVisionConfig(**CLIP_LARGE).save_pretrained(tmp_path / "clip-l")
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    CLIPConfig(vision_config=CLIP_SMALL, text_config=text).save_pretrained(tmp_path / "clip-b")  # a full CLIP
    branch2 = dict(model_type="clip_hf", img_size=64, patch_size=8, pretrain_patch_size=8,
                   interaction_indexes=[[0, 0], [1, 1]], pretrained=str(tmp_path / "clip-b"))  # fmt: skip
    model = official_model("2branch_v1", dict(CLIP_BRANCH1, pretrained=str(tmp_path / "clip-l")), branch2)
    (tmp_path / "official.json").write_text(json.dumps(model))
    expected_config = PiipVisionConfig(
        branches=[BranchConfig("branch1", "clip", 48, [[0, 1], [2, 3]], CLIP_LARGE),
                  BranchConfig("branch2", "clip", 64, [[0, 0], [1, 1]], CLIP_SMALL)],
        deform_num_heads=4,
    )  # fmt: skip
    tower, projector = reference_modules(expected_config)
    official = official_tower_state(tower)
    check_documented_shapes(official, [48, 48], [32, 32], heads=4)
    torch.save(official, tmp_path / "tower.bin")
    torch.save(official_projector_state(projector), tmp_path / "projector.bin")
    output = tmp_path / "converted"
    code = main(["convert", "--from", "piip-official", "--tower-only", "--official-config",
                 str(tmp_path / "official.json"), "--projector", str(tmp_path / "projector.bin"),
                 str(tmp_path / "tower.bin"), str(output)])  # fmt: skip
    assert code == 0
    assert_same_tower_config(PiipVisionConfig.from_pretrained(output), expected_config)
    assert_reproduces(output, tower, projector)
    report = json.loads((output / "conversion.json").read_text())
    assert sorted(report["dropped"]) == [
        f"branch{j}.clip_model.post_layernorm.{p}" for j in (1, 2) for p in ("bias", "weight")
    ]


def test_tower_only_vit_convnext_from_inline_configs(tmp_path):
    model = official_model("2branch_mix", dict(CLIP_BRANCH1, pretrained="OpenGVLab/clip-vit-large-patch14to16-224"),
                           CONVNEXT_BRANCH2)  # fmt: skip
    branch_configs = {"branch1": dict(CLIP_LARGE, model_type="clip_vision_model"),
                      "branch2": dict(CONVNEXT, model_type="convnext")}  # fmt: skip
    config = official_vision_config({"model": model}, branch_configs)
    expected_config = PiipVisionConfig(
        branches=[BranchConfig("branch1", "clip", 48, [[0, 1], [2, 3]], CLIP_LARGE),
                  BranchConfig("branch2", "convnext", 64, [[0, 2], [3, 7]], CONVNEXT)],
        deform_num_heads=4,
    )  # fmt: skip
    assert_same_tower_config(config, expected_config)
    tower, projector = reference_modules(expected_config)
    official = official_tower_state(tower)
    check_documented_shapes(official, [48, 48], [32, 64], heads=4)
    assert "branch2.convnext_model.stages.2.blocks.1.weight" in official  # the layer scale, saved as .weight
    key_map = convert_official_tower(official, tmp_path, config, official_projector_state(projector))
    assert_reproduces(tmp_path, tower, projector)
    assert sorted(key_map.dropped) == [
        "branch1.clip_model.post_layernorm.bias", "branch1.clip_model.post_layernorm.weight",
        "branch2.convnext_model.head.norm.bias", "branch2.convnext_model.head.norm.weight",
        "branch2.convnext_model.head.pre_logits.fc.bias", "branch2.convnext_model.head.pre_logits.fc.weight",
    ]  # fmt: skip


def test_every_released_tower_maps_onto_the_official_layout():
    """Full-size shapes on ``meta``: 39-block ConvNeXt-B/L lists, 2/12/24 interactions, per-interaction widths."""
    for name in [name for name in TOWER_PRESETS if name.startswith("piip-llava")]:
        config = get_tower_config(name)
        with torch.device("meta"):
            tower = PiipVisionModel(config)
            official = official_tower_state(tower)
        check_documented_shapes(official, *[branch.interaction_dims() for branch in config.branches], heads=16)
        key_map = tower_key_map(config, official)
        convert_state(official, key_map, expected_shapes(tower), name)
        assert len(key_map.dropped) == (6 if config.branches[1].backbone_type == "convnext" else 4)


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory, llm_tokenizer):
    """A stage-2 checkpoint (LLaVA layout, sharded ``pytorch_model-*.bin``) and a stage-1 ``mm_projector.bin``."""
    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(2)
    tower, projector = reference_modules(get_tower_config("tiny-convnext-clip"))
    llm = tiny_llama(len(llm_tokenizer), llm_tokenizer)
    projector_state = {f"model.mm_projector.{k}": v for k, v in official_projector_state(projector).items()}
    state = dict(llm.state_dict()) | projector_state
    state |= {f"model.vision_tower.vision_tower.{k}": v for k, v in official_tower_state(tower).items()}
    config = llava_config(len(llm_tokenizer), llm_tokenizer, mm_vision_tower="llava/configs/piip-llava_tiny.py",
                          mm_projector_type="separate_2branch_v1", mm_hidden_size=32)  # fmt: skip
    write_llava_checkpoint(root / "stage2", state, config, llm_tokenizer, safetensors=False)
    (root / "stage1").mkdir()
    torch.save(projector_state, root / "stage1" / "mm_projector.bin")
    return SimpleNamespace(root=root, tower=tower, projector=projector, llm=llm)


def test_stage2_checkpoint_converts_to_a_from_pretrained_model_with_the_same_logits(official_checkpoint, tmp_path):
    source = official_checkpoint
    code = main(["convert", "--from", "piip-official", "--config", "tiny-convnext-clip", str(source.root / "stage2"),
                 str(tmp_path)])  # fmt: skip
    assert code == 0
    model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    vocab = source.llm.config.vocab_size
    assert model.config.image_token_id == vocab and model.config.text_config.vocab_size % 64 == 0
    assert model.config.projector_norm_groups == 32 and model.config.image_aspect_ratio == "pad"
    prompt = processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=prompt, images=Image.new("RGB", (80, 56), (200, 30, 30)))
    with torch.no_grad():
        logits = model(**inputs).logits
        features = source.projector(source.tower(inputs["pixel_values"]))
        expected, embeddings = spliced_logits(source.llm, inputs["input_ids"], model.config.image_token_id, features)
        torch.testing.assert_close(logits[..., :vocab], expected, rtol=1e-5, atol=1e-5)
        # The new rows (<image>, padding to 64) are the mean row: their logit is the mean logit, never the greedy pick.
        torch.testing.assert_close(logits[..., vocab:], expected.mean(-1, keepdim=True).expand_as(logits[..., vocab:]))
        ours = model.generate(**inputs, max_new_tokens=6, do_sample=False)[:, inputs["input_ids"].shape[1] :]
        theirs = source.llm.generate(inputs_embeds=embeddings, max_new_tokens=6, do_sample=False)
    assert ours.tolist() == theirs.tolist()
    dropped = json.loads((tmp_path / "conversion.json").read_text())["dropped"]
    prefix = "model.vision_tower.vision_tower."
    assert {
        f"{prefix}branch1.clip_model.post_layernorm.weight",
        f"{prefix}branch2.convnext_model.head.norm.bias",
    } <= set(dropped)


def test_stage1_mm_projector_becomes_a_projector_for_stage2(official_checkpoint, tmp_path):
    source = official_checkpoint
    code = main(["convert", "--from", "piip-official", "--config", "tiny-convnext-clip", "--projector-only",
                 str(source.root / "stage1"), str(tmp_path)])  # fmt: skip
    assert code == 0
    projector = PiipProjector(source.tower.config.output_dims, TEXT_DIM, groups=32).eval()
    load_projector_weights(projector, tmp_path / "mm_projector.safetensors")  # what build --projector does
    with torch.no_grad():
        features = source.tower(torch.randn(1, 3, 64, 64))
        torch.testing.assert_close(projector(features), source.projector(features), rtol=0, atol=1e-6)


def test_unaccounted_missing_and_misshapen_keys_are_errors_naming_them(tmp_path, capsys):
    config = get_tower_config("tiny-clip-2branch")
    official = official_tower_state(PiipVisionModel(config))
    unit = "interactions.0.interaction_units_12.branch2to1_injector."
    with pytest.raises(ValueError, match=rf"unexpected source keys.*{unit}gamma"):
        convert_official_tower(dict(official, **{unit + "gamma": torch.zeros(32)}), tmp_path, config)
    missing = {k: v for k, v in official.items() if k != "branch1.clip_model.encoder.layers.1.mlp.fc2.bias"}
    with pytest.raises(ValueError, match=r"missing keys: branches\.0\.layers\.1\.mlp\.fc2\.bias"):
        convert_official_tower(missing, tmp_path, config)
    misshapen = dict(official, **{"branch2.clip_model.pre_layrnorm.weight": torch.zeros(7)})
    with pytest.raises(ValueError, match=r"shape mismatches: branch2\.clip_model\.pre_layrnorm\.weight: \(7,\)"):
        convert_official_tower(misshapen, tmp_path, config)
    torch.save(dict(official, **{unit + "gamma": torch.zeros(32)}), tmp_path / "tower.bin")
    args = ["convert", "--from", "piip-official", "--tower-only", "--config", "tiny-clip-2branch"]
    assert main([*args, str(tmp_path / "tower.bin"), str(tmp_path / "out")]) == 2
    assert f"{unit}gamma" in capsys.readouterr().err
    assert main(["convert", "--from", "piip-official", "--vision-tower", "x", "src", "dst"]) == 2
    assert "--vision-tower not used with piip-official" in capsys.readouterr().err


def test_official_config_errors_name_the_field():
    hub_name = dict(CLIP_BRANCH1, pretrained="OpenGVLab/clip-vit-large-patch14to16-224")
    model = official_model("2branch_mix", hub_name, CONVNEXT_BRANCH2)
    with pytest.raises(
        ValueError, match=r"branch1: 'OpenGVLab/clip-vit-large-patch14to16-224' is not a local HF config"
    ):
        official_vision_config(model)
    configs = {"branch1": CLIP_LARGE, "branch2": CONVNEXT}
    with pytest.raises(ValueError, match=r"model_cls='3branch' is not one of \['2branch_mix', '2branch_v1'\]"):
        official_vision_config(dict(model, backbone=dict(model["backbone"], model_cls="3branch")), configs)
    with pytest.raises(ValueError, match=r"backbone.interact_attn_type='normal' is not supported"):
        official_vision_config(dict(model, backbone=dict(model["backbone"], interact_attn_type="normal")), configs)
    strides = dict(CONVNEXT_BRANCH2, downsample_ratios=[4] * 8)
    with pytest.raises(ValueError, match=r"branch2.downsample_ratios=\[4, 4, 4, 4, 4, 4, 4, 4\] do not match"):
        official_vision_config(official_model("2branch_mix", hub_name, strides), configs)
    with pytest.raises(ValueError, match=r"branch1.patch_size=16 but the HF config has patch_size 8"):
        official_vision_config(official_model("2branch_mix", dict(hub_name, patch_size=16), CONVNEXT_BRANCH2), configs)
    assert parse_branch_configs(["branch1=/cfg/clip", 'branch2={"depths": [1, 1, 2, 1]}']) == {
        "branch1": "/cfg/clip", "branch2": {"depths": [1, 1, 2, 1]}}  # fmt: skip
