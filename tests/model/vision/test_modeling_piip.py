"""piip_llava/model/vision/modeling_piip.py and branches.py"""

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel, ConvNextModel, SiglipVisionModel

from piip_llava.model.vision.interaction import BidirectionalInteraction
from piip_llava.model.vision.weights import load_branch_weights
from tests.conftest import TINY_TOWERS, build_tiny_tower, randomize_gates, tower_input


def run_branch_alone(tower, index, pixel_values):
    """The branch with no tower around it: its pyramid image, embedding and all blocks."""
    branch = tower.branches[index]
    image = tower.build_pyramid(pixel_values)[index]
    state = branch.embed(image)
    state = branch.run_blocks(state, 0, tower.config.branches[index].num_blocks - 1)
    return branch.feature_map(state)


@pytest.mark.parametrize("name", TINY_TOWERS)
def test_zero_gates_make_each_branch_equal_to_itself_alone_bitwise(name):
    tower = build_tiny_tower(name)
    pixel_values = tower_input(tower)
    with torch.no_grad():
        outputs = tower(pixel_values)
        for index, output in enumerate(outputs):
            assert torch.equal(output, run_branch_alone(tower, index, pixel_values)), f"branch {index}"


@pytest.mark.parametrize("name", TINY_TOWERS)
def test_nonzero_gates_change_every_branch_and_gradients_reach_every_parameter(name):
    tower = build_tiny_tower(name)
    randomize_gates(tower)
    with torch.no_grad():  # a trained state: the query steers the sampling (see test_interaction)
        for parameter_name, parameter in tower.interactions.named_parameters():
            if "sampling_offsets.weight" in parameter_name or "attention_weights.weight" in parameter_name:
                parameter.normal_(0, 0.02)
    pixel_values = tower_input(tower)
    outputs = tower(pixel_values)
    for index, output in enumerate(outputs):
        with torch.no_grad():
            alone = run_branch_alone(tower, index, pixel_values)
        assert not torch.allclose(output, alone), f"branch {index} unchanged by interactions"
    sum(output.square().mean() for output in outputs).backward()
    silent = [n for n, p in tower.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent, f"no gradient reached {silent}"


@pytest.mark.parametrize("name", TINY_TOWERS)
def test_output_shapes_and_backward(name):
    tower = build_tiny_tower(name).train()
    outputs = tower(tower_input(tower, batch=3))
    assert len(outputs) == len(tower.config.branches)
    for output, branch in zip(outputs, tower.config.branches):
        assert output.shape == (3, branch.output_dim, branch.output_grid, branch.output_grid)
    sum(o.mean() for o in outputs).backward()


def test_three_and_four_branch_interaction_order():
    """Pairs run from the high-resolution end: (3↔4), (2↔3), (1↔2), each on already-updated tokens."""
    tower = build_tiny_tower("tiny-vit-4branch")
    calls = []
    for i, interaction in enumerate(tower.interactions):
        for k, unit in enumerate(interaction):
            unit.register_forward_pre_hook(lambda module, args, i=i, k=k: calls.append((i, k)))
    with torch.no_grad():
        tower(tower_input(tower, batch=1))
    assert calls == [(0, 2), (0, 1), (0, 0), (1, 2), (1, 1), (1, 0)]


@pytest.mark.parametrize("name", ["tiny-clip-2branch", "tiny-convnext-clip"])
def test_cls_token_never_enters_an_interaction(name):
    tower = build_tiny_tower(name)
    randomize_gates(tower)
    seen = []

    def record(module, args):
        large, large_grid, small, small_grid = args
        seen.append((large.shape[1], large_grid, small.shape[1], small_grid))

    for interaction in tower.interactions:
        for unit in interaction:
            unit.register_forward_pre_hook(record)
    with torch.no_grad():
        tower(tower_input(tower, batch=1))
    assert seen
    for large_tokens, (lh, lw), small_tokens, (sh, sw) in seen:
        assert large_tokens == lh * lw and small_tokens == sh * sw
    # Interactions keep the CLS token out, and the output drops it.
    output = tower(tower_input(tower, batch=1))[0]
    assert output.shape[-1] * output.shape[-2] == tower.config.output_grids[0] ** 2


def test_clip_branch_equals_hf_clip_vision_model(tmp_path):
    tower = build_tiny_tower("tiny-clip-2branch")
    branch_config = tower.config.branches[0]  # runs at its pretraining size: no interpolation
    reference = CLIPVisionModel(branch_config.hf_config()).eval()
    reference.save_pretrained(tmp_path)
    load_branch_weights(tower.branches[0], branch_config, tmp_path)
    pixel_values = torch.randn(2, 3, branch_config.image_size, branch_config.image_size)
    with torch.no_grad():
        expected = reference(pixel_values).last_hidden_state[:, 1:]  # patch tokens, before post-LN
        state = tower.branches[0].embed(pixel_values)
        state = tower.branches[0].run_blocks(state, 0, branch_config.num_blocks - 1)
    torch.testing.assert_close(tower.branches[0].tokens(state), expected, rtol=0, atol=1e-6)


def test_clip_branch_interpolates_positions_like_hf(tmp_path):
    tower = build_tiny_tower("tiny-clip-2branch")
    branch_config = tower.config.branches[1]  # 64 px with a table pretrained at 32 px
    reference = CLIPVisionModel(branch_config.hf_config()).eval()
    reference.save_pretrained(tmp_path)
    load_branch_weights(tower.branches[1], branch_config, tmp_path)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference(pixel_values, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
        state = tower.branches[1].run_blocks(tower.branches[1].embed(pixel_values), 0, branch_config.num_blocks - 1)
    torch.testing.assert_close(tower.branches[1].tokens(state), expected, rtol=1e-5, atol=1e-5)


def test_siglip_branch_equals_hf_siglip_vision_model(tmp_path):
    tower = build_tiny_tower("tiny-siglip-clip")
    branch_config = tower.config.branches[1]  # 64 px, table pretrained at 32 px: interpolated like HF
    reference = SiglipVisionModel(branch_config.hf_config()).eval()
    reference.save_pretrained(tmp_path)
    load_branch_weights(tower.branches[1], branch_config, tmp_path)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        hidden = reference(pixel_values, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states
        state = tower.branches[1].run_blocks(tower.branches[1].embed(pixel_values), 0, branch_config.num_blocks - 1)
    torch.testing.assert_close(tower.branches[1].tokens(state), hidden[-1], rtol=1e-5, atol=1e-5)


def test_convnext_branch_equals_hf_convnext_model(tmp_path):
    tower = build_tiny_tower("tiny-convnext-clip")
    branch_config = tower.config.branches[1]
    reference = ConvNextModel(branch_config.hf_config()).eval()
    reference.save_pretrained(tmp_path)
    load_branch_weights(tower.branches[1], branch_config, tmp_path)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(pixel_values).last_hidden_state
        actual = run_branch_alone(tower, 1, pixel_values)
    assert torch.equal(actual, expected)


def test_pyramid_uses_bilinear_scale_factor():
    tower = build_tiny_tower("tiny-vit-3branch")
    pixel_values = tower_input(tower, batch=1)
    images = tower.build_pyramid(pixel_values)
    assert [image.shape[-1] for image in images] == [32, 48, 64]
    expected = F.interpolate(pixel_values, scale_factor=32 / 64, mode="bilinear", align_corners=False)
    assert torch.equal(images[0], expected) and torch.equal(images[2], pixel_values)


def test_too_small_input_is_a_clear_error():
    tower = build_tiny_tower("tiny-clip-2branch")
    with pytest.raises(ValueError, match="smaller than its"):
        tower(torch.randn(1, 3, 8, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tower(torch.randn(3, 64, 64))


@pytest.mark.parametrize("name", ["tiny-clip-2branch", "tiny-convnext-clip"])
def test_non_square_input_matches_each_hf_model_like_the_official_code(name, tmp_path):
    """Official PIIP resizes a (B, 3, H, W) input by scale factor and uses (h // patch, w // patch) grids. With zero
    gates every branch must equal its Hugging Face model on its pyramid image (positions interpolated by HF)."""
    tower = build_tiny_tower(name)
    for index, branch_config in enumerate(tower.config.branches):
        model_class = ConvNextModel if branch_config.backbone_type == "convnext" else CLIPVisionModel
        reference = model_class(branch_config.hf_config()).eval()
        reference.save_pretrained(tmp_path / str(index))
        load_branch_weights(tower.branches[index], branch_config, tmp_path / str(index))
    pixel_values = torch.randn(2, 3, 64, 48)  # taller than wide
    with torch.no_grad():
        outputs = tower(pixel_values)
        images = tower.build_pyramid(pixel_values)
        for index, branch_config in enumerate(tower.config.branches):
            scale = branch_config.image_size / tower.config.image_size
            assert images[index].shape[-2:] == (int(64 * scale), int(48 * scale))
            if branch_config.backbone_type == "convnext":
                reference = ConvNextModel.from_pretrained(tmp_path / str(index)).eval()
                expected = reference(images[index]).last_hidden_state
            else:
                reference = CLIPVisionModel.from_pretrained(tmp_path / str(index)).eval()
                hidden = reference(images[index], interpolate_pos_encoding=True).last_hidden_state[:, 1:]
                grid = (
                    images[index].shape[-2] // branch_config.patch_size,
                    images[index].shape[-1] // branch_config.patch_size,
                )
                expected = hidden.transpose(1, 2).reshape(2, -1, *grid)
            assert outputs[index].shape == expected.shape
            torch.testing.assert_close(outputs[index], expected, rtol=1e-5, atol=1e-5)
    randomize_gates(tower)  # the interactions sample non-square grids too
    mixed = tower(pixel_values)
    assert [o.shape for o in mixed] == [o.shape for o in outputs] and not torch.allclose(mixed[0], outputs[0])
    sum(o.mean() for o in mixed).backward()


@pytest.mark.parametrize("name", ["tiny-clip-2branch", "tiny-convnext-clip"])
def test_bf16_forward(name):
    tower = build_tiny_tower(name, dtype=torch.bfloat16)
    randomize_gates(tower)
    pixel_values = tower_input(tower)
    outputs = tower(pixel_values)
    assert all(o.dtype == torch.bfloat16 and torch.isfinite(o).all() for o in outputs)
    reference = build_tiny_tower(name)
    reference.load_state_dict({k: v.float() for k, v in tower.state_dict().items()})
    with torch.no_grad():
        expected = reference(pixel_values)
    for low, high in zip(outputs, expected):
        assert (low.float() - high).abs().mean() < 0.05 * high.abs().mean()


def test_gradient_checkpointing_matches():
    tower = build_tiny_tower("tiny-convnext-clip").train()
    tower.config.interaction_drop_path_rate = 0.0
    for module in tower.modules():
        if hasattr(module, "rate"):
            module.rate = 0.0
    randomize_gates(tower)
    pixel_values = tower_input(tower)
    plain = tower(pixel_values)
    sum(o.sum() for o in plain).backward()
    plain_grads = {n: p.grad.clone() for n, p in tower.named_parameters()}
    tower.zero_grad()
    tower.gradient_checkpointing = True
    checkpointed = tower(pixel_values)
    sum(o.sum() for o in checkpointed).backward()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)
    for name, parameter in tower.named_parameters():
        torch.testing.assert_close(parameter.grad, plain_grads[name], msg=name)


def test_interaction_widths_follow_convnext_stages():
    tower = build_tiny_tower("tiny-convnext-clip")
    units = [interaction[0] for interaction in tower.interactions]
    assert all(isinstance(u, BidirectionalInteraction) for u in units)
    # Ranges [0,2] ends in stage 2 (width 32), [3,7] ends in stage 4 (width 64).
    assert [u.large_to_small.out_features for u in units] == [32, 64]
