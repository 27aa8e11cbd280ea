"""scripts/pretrain_demo_parts.py and the committed parts in playground/demo_parts: rerunning the recorded command
for a few steps reproduces the first logged losses, a short run learns, ``--parts`` retrains one part and keeps the
others, and ``piip-llava build`` assembles a loadable model from the parts through ``--branch-weights`` / ``--llm``."""

import gzip
import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from piip_llava.cli import main as cli_main
from piip_llava.demo import DEMO_PARTS
from piip_llava.eval.questions import LETTER_ANSWER
from piip_llava.model.modeling_piip_llava import PiipLlavaForConditionalGeneration

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_demo_parts.py"
PARTS = ("clip", "convnext", "clip_96", "llm", "llm_144")


def short_run(output: Path, seed: int, branch_steps: int = 30, llm_steps: int = 4) -> list[str]:
    """Every phase: an LLM part's 2 letter steps, ``llm_steps`` of the main mix, 2 presence steps and 1 final."""
    steps = ["--branch-steps", str(branch_steps), "--llm-letter-steps", "2", "--llm-steps", str(llm_steps)]
    steps += ["--llm-presence-steps", "2", "--llm-final-steps", "1"]
    sizes = ["--batch-size", "16", "--llm-batch-size", "4", "--eval-size", "48", "--max-length", "256"]
    return ["--output", str(output), "--seed", str(seed), *steps, *sizes]


def load_script():
    spec = importlib.util.spec_from_file_location("pretrain_demo_parts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_log(folder: Path, part: str) -> list[dict]:
    with gzip.open(folder / "logs" / f"{part}.jsonl.gz", "rt") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("parts")
    assert load_script().main(short_run(output, seed=3)) == 0
    return output


@pytest.mark.parametrize("part", PARTS)
def test_the_committed_parts_recorded_command_reproduces_their_first_losses(part, tmp_path):
    record = json.loads((DEMO_PARTS / "parts.json").read_text())["parts"][part]
    command = shlex.split(record["command"])
    assert command[:2] == ["python", "scripts/pretrain_demo_parts.py"] and record["seed"] == 0
    # the recorded command, cut to 3 steps (still in the warm-up, so the schedule is the same) and a small held-out set
    short = ["--output", str(tmp_path), "--parts", part, "--branch-steps", "3", "--llm-steps", "3", "--eval-size", "8"]
    short += ["--llm-presence-steps", "1", "--llm-final-steps", "1"]
    if "letter_steps" in record:  # an LLM part's letter phase comes first: its first 3 steps, on its own schedule
        short += ["--llm-letter-stop", "3"]
    assert load_script().main(command[2:] + short) == 0
    committed = [entry["loss"] for entry in read_log(DEMO_PARTS, part)[:3]]
    assert [entry["loss"] for entry in read_log(tmp_path, part)][:3] == pytest.approx(committed, rel=1e-3)
    rounds = record.get("rounds", 1) * (record.get("presence_steps", 0) + record.get("final_steps", 0))
    assert len(read_log(DEMO_PARTS, part)) == record["steps"] + record.get("letter_steps", 0) + rounds


def test_the_committed_parts_learned_what_the_demo_needs():
    record = json.loads((DEMO_PARTS / "parts.json").read_text())["parts"]
    results = {part: entry["results"]["final"] for part, entry in record.items()}
    assert results["convnext"]["small_word_token_accuracy"] > 0.5  # the detail branch reads small words
    assert results["convnext"]["shape_token_accuracy"] > 0.9 and results["clip"]["color_token_accuracy"] > 0.9
    for llm in ("llm", "llm_144"):
        assert results[llm]["answer_token_accuracy"] > 0.7, llm
        # it answers about a scene written in words (84% for llm), and writes its caption (loss 7.3 -> 0.26)
        assert results[llm]["scene_answer_accuracy"] > 0.7 and results[llm]["scene_caption_loss"] < 0.5, llm
        # and copies the letter of the option it names, about a scene too (held out, scene / text: llm 0.89 / 0.86,
        # llm_144 0.90 / 0.86 after its longer letter phase; chance 0.25)
        assert results[llm]["scene_letter_accuracy"] > 0.7 and results[llm]["letter_accuracy"] > 0.7, llm
    # and answers POPE's presence questions about a scene (the Yes / No token, 128 held out; chance 0.5): 0.52 before
    # the presence phase, 0.79 after it and the final mix, 0.88 after their second round (llm_144: 0.55, 0.62, 0.54)
    assert results["llm"]["scene_presence_accuracy"] > 0.8
    total = sum(path.stat().st_size for path in DEMO_PARTS.rglob("*") if path.is_file())
    assert total < 12e6, total  # small enough to commit (two 3.2 MB LLMs, three branches)


def test_the_demo_builds_each_tower_with_the_llm_part_of_its_visual_token_layout(tmp_path):
    """An LLM part learns one layout of visual tokens: the demo gives the 12x12 single-branch baseline ``llm_144``
    and the 8x8 pyramid ``llm``, as it gives each branch the part pretrained at its resolution."""
    from piip_llava.demo import DemoConfig, build_command
    from piip_llava.model.vision import get_tower_config

    record = json.loads((DEMO_PARTS / "parts.json").read_text())["parts"]
    for tower, llm in (("demo-clip_96", "llm_144"), ("demo-convnext-clip_128-64", "llm")):
        command = build_command(DemoConfig(output=tmp_path, tower=tower))
        assert command[command.index("--llm") + 1] == str(DEMO_PARTS / llm)
        assert record[llm]["scene_grid"] == get_tower_config(tower).output_grids[-1]
        if tower == "demo-clip_96":  # and its ViT pretrained at 96 px
            assert command[command.index("--branch-weights") + 1] == f"clip={DEMO_PARTS / 'branches' / 'clip_96'}"


def test_rerun_with_the_same_seed_reproduces_the_first_losses(parts, tmp_path):
    load_script().main(short_run(tmp_path, seed=3, branch_steps=3, llm_steps=2))
    for part in PARTS:  # an LLM part: 2 letter steps, 2 main steps, 2 presence steps, 1 final; a branch: 3 steps
        losses = [r["loss"] for r in read_log(tmp_path, part)]
        llm = part in ("llm", "llm_144")
        assert len(losses) == (7 if llm else 3)
        # up to where the step counts part the runs (the fixture has 4 main steps, this run 2): the letter steps and
        # the first 2 main steps; the later phases' reruns are test_continue_after_the_main_mix_equals_one_run's
        first = 4 if llm else 3
        assert losses[:first] == [r["loss"] for r in read_log(parts, part)][:first], part
    other_seed = tmp_path / "seed4"
    load_script().main([*short_run(other_seed, seed=4, branch_steps=1, llm_steps=1), "--parts", "clip"])
    assert read_log(other_seed, "clip")[0]["loss"] != read_log(parts, "clip")[0]["loss"]  # the seed matters


def test_parts_json_records_each_part(parts, tmp_path):
    record = json.loads((parts / "parts.json").read_text())
    assert set(record["parts"]) == set(PARTS)
    assert record["parts"]["clip"]["steps"] == 30 and record["parts"]["llm"]["steps"] == 4
    assert record["parts"]["llm"]["presence_steps"] == 2 and record["parts"]["llm"]["final_steps"] == 1
    assert all(r["seed"] == 3 and r["command"].startswith("python scripts/pretrain_demo_parts.py --output")
               for r in record["parts"].values())  # fmt: skip
    # --parts retrains one part and keeps the others' files and records
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(parts, copy)
    llm_bytes = (copy / "llm" / "model.safetensors").read_bytes()
    load_script().main([*short_run(copy, seed=5, branch_steps=2), "--parts", "convnext"])
    updated = json.loads((copy / "parts.json").read_text())["parts"]
    assert updated["convnext"]["seed"] == 5 and updated["convnext"]["steps"] == 2
    assert updated["clip"] == record["parts"]["clip"] and updated["llm"] == record["parts"]["llm"]
    assert (copy / "llm" / "model.safetensors").read_bytes() == llm_bytes


def test_each_part_learned_on_held_out_data(parts):
    # Held-out loss of this short run (30 branch steps, 4 LLM steps, still warming up), measured at seeds 3 / 5:
    # clip 8.68 -> 5.92 / 9.38 -> 5.88, convnext 8.23 -> 6.43 / 8.27 -> 6.10, clip_96 8.67 -> 5.24 / 9.22 -> 5.49,
    # llm 7.36 -> 6.52 / 7.06 -> 6.35, llm_144 7.36 -> 6.48 / 7.06 -> 6.35; the margins are about half of the smallest
    # drop.
    results = json.loads((parts / "parts.json").read_text())["parts"]
    for part, margin in (("clip", 1.3), ("convnext", 0.9), ("clip_96", 1.5), ("llm", 0.35), ("llm_144", 0.35)):
        initial, final = results[part]["results"]["initial"]["loss"], results[part]["results"]["final"]["loss"]
        assert final < initial - margin, (part, initial, final)
    # colour of the item tokens, 8 classes (chance 1/8): measured 0.03-0.17 -> 0.57-0.77
    for part in ("clip", "convnext", "clip_96"):
        initial, final = (results[part]["results"][when]["color_token_accuracy"] for when in ("initial", "final"))
        assert final > max(0.4, initial + 0.2), (part, initial, final)


def _branch_tensors_come_from(branch_state: dict, part_file: Path) -> None:
    part_tensors = list(load_file(part_file).values())
    for name, tensor in branch_state.items():
        assert any(t.shape == tensor.shape and torch.equal(t, tensor) for t in part_tensors), name


def test_build_from_the_parts_loads_with_their_weights(parts, tmp_path):
    branch_args = [f"{name}={parts / 'branches' / name}" for name in ("clip", "convnext")]
    built = tmp_path / "built"
    argv = ["build", "--tower", "demo-convnext-clip_128-64", "--llm", str(parts / "llm"), "--output", str(built)]
    assert cli_main([*argv, "--branch-weights", *branch_args]) == 0
    model = PiipLlavaForConditionalGeneration.from_pretrained(built)
    tower = model.model.vision_tower
    for module, config in zip(tower.branches, tower.config.branches):
        _branch_tensors_come_from(module.state_dict(), parts / "branches" / config.name / "model.safetensors")
    llm_state = load_file(parts / "llm" / "model.safetensors")
    embeddings = model.model.language_model.get_input_embeddings().weight
    assert torch.equal(embeddings, llm_state["model.embed_tokens.weight"])
    assert torch.equal(model.lm_head.weight, llm_state["lm_head.weight"])


@pytest.mark.parametrize("cell_positions", [False, True])
def test_a_scene_in_words_puts_the_item_and_colour_embeddings_in_its_cells(cell_positions):
    """Hand computation: a scene with one red circle at the top left and the word "cake" in blue at the center;
    every visual token must be the image token's embedding plus, on the cells ``dense_targets`` gives the item, its
    name's and colour's (and with ``--llm-cell-positions`` its position's words: "top" + "left", "center"), and the
    text around the image must keep its own embeddings."""
    from piip_llava.data.scenes import Item, Scene
    from piip_llava.model.tiny import train_tokenizer

    script, tokenizer = load_script(), train_tokenizer()
    llm = script.build_llm(tokenizer, seed=0)
    llm.scene_positions = cell_positions
    scene = Scene((Item("circle", "red", 0), Item("word", "blue", 4, text="cake", text_size="medium")))
    items, colors, _, positions = script.dense_targets(scene, 128, script.SCENE_GRID)
    turns = [{"from": "human", "value": "<image>\nWhat color is the circle?"}, {"from": "gpt", "value": "red"}]
    sample = script.tokenize_conversation(turns, tokenizer, "vicuna_v1", script.VISUAL_TOKENS, 1, 512)
    batch = script.conversation_batch([sample], [(items, colors, positions)])
    embeds = script.embed_scenes(llm, tokenizer, batch)[0]

    table = llm.get_input_embeddings().weight
    word = {name: table[tokenizer(" " + name, add_special_tokens=False)["input_ids"][0]] for name in
            ("circle", "cake", "red", "blue", "top", "left", "center")}  # fmt: skip
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    cells = (sample.input_ids == image_id).nonzero().flatten()
    assert len(cells) == 64
    for cell, position in enumerate(cells):
        expected = table[image_id].clone()
        if items[cell] > 0:
            name = "circle" if items[cell] == script.ITEM_CLASSES.index("circle") else "cake"
            assert script.ITEM_CLASSES[items[cell]] in (name, f"word:{name}")
            expected += word[name] + word["red" if name == "circle" else "blue"]
            assert positions[cell] == (1 if name == "circle" else 5)  # 1 + the index in POSITIONS
            if cell_positions:
                expected += word["top"] + word["left"] if name == "circle" else word["center"]
        else:
            assert positions[cell] == 0
        torch.testing.assert_close(embeds[position], expected)
    text = sample.input_ids != image_id
    torch.testing.assert_close(embeds[text], table[sample.input_ids[text]])
    for name in ("circle", "word:cake"):
        assert (items == script.ITEM_CLASSES.index(name)).any()


def test_scene_kinds_reweight_the_scene_conversations():
    """``--llm-scene-kinds yesno=1`` gives scene conversations made of presence questions only (the 5% caption
    conversations aside); a kind outside the stage-2 mix is refused."""
    import random

    from piip_llava.data.scene_sets import QUESTION_KINDS, TRAIN_SCENE, instruct_turns, scene_with_items

    script = load_script()
    args = script.parse_args(["--llm-scene-kinds", "yesno=1"])
    assert args.llm_scene_kinds == {**dict.fromkeys(QUESTION_KINDS, 0.0), "yesno": 1.0}
    assert script.part_settings(args, "llm")["scene_kinds"] == args.llm_scene_kinds
    assert "scene_kinds" not in script.part_settings(script.parse_args([]), "llm")  # default: the mix's
    rng, questions = random.Random(0), []
    for _ in range(200):
        turns = instruct_turns(scene_with_items(rng, TRAIN_SCENE), rng, kind_weights=args.llm_scene_kinds)
        questions += [turn["value"].removeprefix("<image>\n") for turn in turns[::2]]
    presence = [q for q in questions if q.startswith("Is there")]
    assert len(presence) > 0.9 * len(questions) and len(questions) > 300
    with pytest.raises(SystemExit):
        script.parse_args(["--llm-scene-kinds", "counting=1"])


def test_the_letter_phase_asks_for_a_pick_then_its_letter():
    """Hand check of ``letter_turns``: one question per conversation, "Choose one of the options." over four options
    of one kind (colours, shapes or written words) in MMBench's prompt; the answer is one of them, then its letter,
    so the letter can only be read off the option the answer names. Every option and every letter is picked."""
    import random

    script, rng = load_script(), random.Random(0)
    kinds = [set(script.COLORS), set(script.SHAPES), set(script.VOCABULARY)]
    picked, letters = set(), set()
    for _ in range(400):
        turns = script.letter_turns(rng)
        question, answer = turns
        assert len(turns) == 2 and question["from"] == "human" and answer["from"] == "gpt"
        lines = question["value"].split("\n")
        assert lines[0] == "Choose one of the options." and lines[-1] == LETTER_ANSWER
        options = dict(line.split(". ", 1) for line in lines[1:-1])
        assert list(options) == ["A", "B", "C", "D"] and len(set(options.values())) == 4
        assert any(set(options.values()) <= kind for kind in kinds)
        named, letter = answer["value"].split(" ")
        assert options[letter] == named
        picked.add(named)
        letters.add(letter)
    assert letters == set("ABCD") and picked == set().union(*kinds)
    image = script.letter_turns(rng, image=True)
    assert image[0]["value"].startswith("<image>\nChoose one of the options.")


def test_the_letter_phase_runs_first_and_is_recorded(tmp_path):
    """``--llm-letter-steps N``: N letter steps are logged before the main mix's, with held-out metrics at their
    end in ``results.after_letters``, and the settings in ``parts.json``; with ``--llm-letter-scenes`` some of its
    conversations are about scenes in words (their visual tokens in the batch), and the flags of the tries in
    docs/quickstart.md are recorded. The defaults are the committed parts' letter phase; ``--llm-letter-steps 0``
    leaves it out and records none of its settings."""
    script = load_script()
    argv = [*short_run(tmp_path, seed=3, llm_steps=2), "--parts", "llm", "--llm-letter-steps", "3"]
    flags = ["--llm-letter-batch-size", "4", "--llm-letter-scenes", "0.5", "--llm-one-lettered", "--llm-layers", "2"]
    assert script.main([*argv, *flags]) == 0
    log = read_log(tmp_path, "llm")
    assert [entry.get("phase") for entry in log] == ["letters"] * 3 + [None] * 2 + ["presence"] * 2 + ["final"]
    assert [entry["step"] for entry in log] == [1, 2, 3, 1, 2, 1, 2, 1]
    record = json.loads((tmp_path / "parts.json").read_text())["parts"]["llm"]
    assert record["letter_steps"] == 3 and record["letter_batch_size"] == 4 and record["letter_lr"] == 1e-3
    assert record["letter_scenes"] == 0.5 and record["one_lettered"] is True and record["layers"] == 2
    assert set(record["results"]) == {"initial", "after_letters", "after_mix", "after_presence", "final"}
    assert "letter_accuracy" in record["results"]["after_letters"]
    import random

    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "llm").num_hidden_layers == 2
    tokenizer = script.train_tokenizer()
    batch = script.letter_batch(random.Random(0), tokenizer, 16, 512, scene_fraction=0.5)
    scene_rows = (batch["items"] > 0).any(dim=1)
    assert 0 < scene_rows.sum() < 16
    image_id = tokenizer.convert_tokens_to_ids(script.IMAGE_TOKEN)
    assert ((batch["input_ids"] == image_id).sum(dim=1)[scene_rows] == script.VISUAL_TOKENS).all()
    default = script.part_settings(script.parse_args([]), "llm")
    assert {key: default[key] for key in ("letter_steps", "letter_prefix_ramp", "letter_scenes", "one_lettered")} == {
        "letter_steps": 6000, "letter_prefix_ramp": 0.5, "letter_scenes": 0.5, "one_lettered": True}  # fmt: skip
    none = script.part_settings(script.parse_args(["--llm-letter-steps", "0", "--no-llm-one-lettered"]), "llm")
    assert not {"letter_steps", "letter_prefix_ramp", "letter_scenes", "letter_lr", "one_lettered", "layers"} & set(
        none
    )


def test_the_letter_prefix_grows_a_grid_row_at_a_time_and_is_empty(tmp_path):
    """``--llm-letter-prefix-ramp 0.8`` over 3,000 letter steps on the 8x8 part: no image for the first 299 steps,
    then 8 more empty visual tokens every 300 steps, all 64 from step 2,400 (hand computation); ``llm_144`` grows by
    its 12-token rows to 144. The text conversations then open with that many image tokens whose embeddings are
    the image token's alone, and the held-out conversations sit behind the whole prefix. A run logs the prefix of
    each step and records the ramp."""
    import random

    script = load_script()
    args = script.parse_args(["--llm-letter-steps", "3000", "--llm-letter-prefix-ramp", "0.8"])
    prefixes = [script.letter_prefix(step, args, 8) for step in range(1, 3001)]
    assert prefixes[:299] == [0] * 299 and prefixes[299] == 8 and prefixes[599] == 16
    assert prefixes[2398] == 56 and set(prefixes[2399:]) == {64}
    assert sorted(set(prefixes)) == list(range(0, 65, 8))
    assert script.letter_prefix(3000, args, 12) == 144 and script.letter_prefix(300, args, 12) == 12
    assert script.letter_prefix(3000, script.parse_args(["--llm-letter-prefix-ramp", "0"]), 8) == 0  # none
    default = script.parse_args([])  # 6,000 steps, whole by step 3,000
    assert script.letter_prefix(374, default, 8) == 0 and script.letter_prefix(3000, default, 8) == 64

    tokenizer = script.train_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids(script.IMAGE_TOKEN)
    batch = script.letter_batch(random.Random(0), tokenizer, 8, 512, prefix=24)
    assert ((batch["input_ids"] == image_id).sum(dim=1) == 24).all() and batch["items"].shape == (8, 24)
    assert not batch["items"].any() and not batch["colors"].any()
    llm = script.build_llm(tokenizer, seed=0, layers=1)
    embeds = script.embed_scenes(llm, tokenizer, batch)
    table = llm.get_input_embeddings().weight
    torch.testing.assert_close(embeds[batch["input_ids"] == image_id], table[image_id].expand(8 * 24, -1))
    plain = script.letter_batch(random.Random(0), tokenizer, 8, 512)
    assert "items" not in plain and not (plain["input_ids"] == image_id).any()

    # A run: the prefix of each step in the log; scene questions (--llm-letter-scenes) only behind the whole image.
    calls, letter_batch = [], script.letter_batch

    def recording_letter_batch(rng, tokenizer, batch_size, max_length, scene_fraction=0.0, grid=8, prefix=0,
                               presence=0.0):  # fmt: skip
        calls.append((scene_fraction, prefix) + ((presence,) if presence else ()))
        return letter_batch(rng, tokenizer, batch_size, max_length, scene_fraction, grid, prefix, presence)

    script.letter_batch = recording_letter_batch
    argv = [*short_run(tmp_path, seed=4, llm_steps=1), "--parts", "llm", "--llm-letter-steps", "4"]
    flags = ["--llm-letter-prefix-ramp", "0.5", "--llm-letter-scenes", "0.5", "--llm-layers", "1"]
    assert script.main([*argv, *flags]) == 0
    letters = [entry for entry in read_log(tmp_path, "llm") if entry.get("phase") == "letters"]
    assert [entry["prefix"] for entry in letters] == [32, 64, 64, 64]  # 8 rows over 2 steps: 4 a step
    assert calls[0] == (1.0, 0, 1.0)  # the held-out presence questions
    assert calls[1:3] == [(0.5, 64), (1.0, 0)]  # held out: behind the whole image; scene questions alone
    assert calls[3:7] == [(0.0, 32), (0.5, 64), (0.5, 64), (0.5, 64)]
    assert calls[7:] == [(1.0, 0, 0.25)] * 2  # the presence phase: scenes alone, a quarter presence questions
    record = json.loads((tmp_path / "parts.json").read_text())["parts"]["llm"]
    assert record["letter_prefix_ramp"] == 0.5 and record["letter_scenes"] == 0.5
    assert 0 <= record["results"]["after_letters"]["scene_letter_accuracy"] <= 1
    for bad in (["--llm-letter-prefix-ramp", "-0.5"], ["--llm-letter-steps", "5", "--llm-letter-prefix-ramp", "2"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)


def test_the_presence_phase_asks_pope_questions_about_the_scene():
    """Hand check of ``scene_letter_sample(presence=1)``: "Is there a <colour> <shape> in the image?" with the
    short-answer suffix, answered Yes exactly when the scene has that item; both answers come up about equally, and
    the negatives share a colour or shape with the scene half the time or more (POPE's adversarial half). At
    ``presence=0.5`` about half the scene questions are presence questions."""
    import random

    from piip_llava.eval.questions import SHORT_ANSWER

    script, tokenizer = load_script(), None
    rng, answers, near = random.Random(0), [], 0
    script.scene_row = lambda scene, turns, *args: (scene, turns)  # the conversation before tokenization
    for _ in range(400):
        scene, turns = script.scene_letter_sample(rng, tokenizer, 512, 8, presence=1.0)
        question, answer = turns[0]["value"], turns[1]["value"]
        head, suffix = question.removeprefix("<image>\n").split("\n")
        assert suffix == SHORT_ANSWER and head.startswith("Is there ") and head.endswith(" in the image?")
        color, kind = head.removesuffix(" in the image?").split(" ")[-2:]
        present = {(item.color, item.kind) for item in scene.shapes}
        assert answer == ("Yes" if (color, kind) in present else "No"), (head, present)
        answers.append(answer)
        if answer == "No":
            near += any(color == c or kind == k for c, k in present)
    assert 0.35 < answers.count("Yes") / len(answers) < 0.65 and near > 0.5 * answers.count("No")
    mixed = [script.scene_letter_sample(rng, tokenizer, 512, 8, presence=0.5)[1] for _ in range(400)]
    share = sum(turns[0]["value"].startswith("<image>\nIs there") for turns in mixed) / len(mixed)
    assert 0.4 < share < 0.6


def test_more_rounds_continued_equal_one_run_and_each_round_draws_new_data(tmp_path):
    """``--llm-rounds 2``: the presence phase and the final mix run twice, the second time on new data; a one-round
    part continued with ``--llm-rounds 2 --llm-continue`` has the same log, weights and results as one run of two
    rounds. Its record has ``after_round_1`` (the one-round part's final results). A continue that asks no new
    round, or other round settings, is refused."""
    script = load_script()
    base = [*short_run(tmp_path / "two", seed=3, llm_steps=2), "--parts", "llm", "--llm-layers", "2"]
    assert script.main(base) == 0
    first = json.loads((tmp_path / "two" / "parts.json").read_text())["parts"]["llm"]
    with pytest.raises(SystemExit, match="settings that differ: \\['final_steps'\\]"):
        script.main([*base, "--llm-rounds", "2", "--llm-continue", "--llm-final-steps", "2"])
    assert script.main([*base, "--llm-rounds", "2", "--llm-continue"]) == 0
    one = [*short_run(tmp_path / "one", seed=3, llm_steps=2), "--parts", "llm", "--llm-layers", "2",
           "--llm-rounds", "2"]  # fmt: skip
    assert script.main(one) == 0
    two_log, one_log = read_log(tmp_path / "two", "llm"), read_log(tmp_path / "one", "llm")
    phases = ["letters"] * 2 + [None] * 2 + ["presence"] * 2 + ["final", "presence-2", "presence-2", "final-2"]
    assert [entry.get("phase") for entry in two_log] == phases
    assert [entry["loss"] for entry in two_log] == [entry["loss"] for entry in one_log]
    for name, tensor in load_file(tmp_path / "two" / "llm" / "model.safetensors").items():
        assert torch.equal(tensor, load_file(tmp_path / "one" / "llm" / "model.safetensors")[name]), name
    two = json.loads((tmp_path / "two" / "parts.json").read_text())["parts"]["llm"]
    one = json.loads((tmp_path / "one" / "parts.json").read_text())["parts"]["llm"]
    assert two["results"] == one["results"] and two["rounds"] == 2
    assert two["results"]["after_round_1"] == first["results"]["final"]
    assert {"after_presence", "after_presence_2", "final"} <= set(two["results"])
    # the second round's batches are new: its losses are not the first round's
    assert [e["loss"] for e in two_log if e.get("phase") == "presence-2"] != [
        e["loss"] for e in two_log if e.get("phase") == "presence"]  # fmt: skip
    with pytest.raises(SystemExit, match="2 round\\(s\\) of the later phases"):
        script.main([*base, "--llm-rounds", "2", "--llm-continue"])


def test_continue_after_the_main_mix_equals_one_run(tmp_path):
    """``--llm-continue``: a part made up to its main mix (``--llm-presence-steps 0 --llm-final-steps 0``), then
    continued with the later phases, has the same log, weights and results as one run of the whole command; its
    record names that command and both runs. ``--llm-cell-positions`` is a setting of the later phases alone: the
    continued run may add it. A part made with other early settings is refused."""
    script = load_script()
    base = [*short_run(tmp_path / "two", seed=3, llm_steps=3), "--parts", "llm", "--llm-layers", "2"]
    assert script.main([*base, "--llm-presence-steps", "0", "--llm-final-steps", "0"]) == 0
    base.append("--llm-cell-positions")
    assert script.main([*base, "--llm-continue"]) == 0
    one = [*short_run(tmp_path / "one", seed=3, llm_steps=3), "--parts", "llm", "--llm-layers", "2",
           "--llm-cell-positions"]  # fmt: skip
    assert script.main(one) == 0
    two_log, one_log = read_log(tmp_path / "two", "llm"), read_log(tmp_path / "one", "llm")
    assert [entry.get("phase") for entry in two_log] == ["letters"] * 2 + [None] * 3 + ["presence"] * 2 + ["final"]
    assert [entry["loss"] for entry in two_log] == [entry["loss"] for entry in one_log]
    assert load_file(tmp_path / "two" / "llm" / "model.safetensors").keys() == load_file(
        tmp_path / "one" / "llm" / "model.safetensors").keys()  # fmt: skip
    for name, tensor in load_file(tmp_path / "two" / "llm" / "model.safetensors").items():
        assert torch.equal(tensor, load_file(tmp_path / "one" / "llm" / "model.safetensors")[name]), name
    two = json.loads((tmp_path / "two" / "parts.json").read_text())["parts"]["llm"]
    one = json.loads((tmp_path / "one" / "parts.json").read_text())["parts"]["llm"]
    assert two["results"] == one["results"] and "scene_presence_accuracy" in two["results"]["after_presence"]
    assert two["cell_positions"] is True
    # Without the position words the early steps are the same and the later ones differ: the flag acts, and late.
    assert script.main([*short_run(tmp_path / "none", seed=3, llm_steps=3), "--parts", "llm", "--llm-layers", "2"]) == 0
    none_losses = [entry["loss"] for entry in read_log(tmp_path / "none", "llm")]
    assert none_losses[:5] == [entry["loss"] for entry in one_log][:5]
    assert none_losses[5:] != [entry["loss"] for entry in one_log][5:]
    assert two["command"] == shlex.join(["python", "scripts/pretrain_demo_parts.py", *base])
    ends = ("--llm-final-steps 0", "--llm-continue")
    assert len(two["runs"]) == 2 and all(run["command"].endswith(end) for run, end in zip(two["runs"], ends))
    assert two["seconds"] == pytest.approx(sum(run["seconds"] for run in two["runs"]), abs=0.2)
    with pytest.raises(SystemExit, match="settings that differ: \\['seed'\\]"):
        script.main([*base, "--llm-continue", "--seed", "4"])
    with pytest.raises(SystemExit, match="later phases"):  # already continued
        script.main([*base, "--llm-continue"])
