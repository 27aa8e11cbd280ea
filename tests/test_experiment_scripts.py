"""The experiment scripts (scripts/experiments/): the likelihood probe, the report, the tower probe and the LLM's
per-skill ceiling on scenes written in words."""

import importlib.util
import json
from pathlib import Path

import torch
from PIL import Image

from piip_llava.model.tiny import build_tiny_model

EXPERIMENTS = Path(__file__).resolve().parents[1] / "scripts" / "experiments"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batched_answer_scores_equal_each_answer_scored_alone():
    rank = load_script("rank_small_text")
    torch.manual_seed(0)
    model, processor = build_tiny_model()
    model.eval()
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    question = "What is written at the top?\nAnswer the question using a single word or phrase."
    words = ["lamp", "a much longer answer of several words", "frog"]  # different lengths: the batch is padded
    batched = rank.answer_log_probs(model, processor, question, image, words)
    prompt_ids = processor(text=[rank.conversation(question, None)], images=[image])["input_ids"][0].tolist()
    for word, score in zip(words, batched):
        inputs = processor(text=[rank.conversation(question, word)], images=[image])
        ids = inputs["input_ids"][0]
        assert ids[: len(prompt_ids)].tolist() == prompt_ids  # the answer only appends tokens
        with torch.no_grad():
            log_probs = model(**inputs).logits[0].float().log_softmax(-1)
        expected = sum(log_probs[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids)))
        assert abs(score - expected) < 1e-3, (word, score, expected)
    assert len(set(batched)) == len(words)


def test_report_averages_seeds_and_draws_the_plot(tmp_path):
    report = load_script("report_pyramid_vs_single")
    for seed, offset in (("seed0", 0.0), ("seed1", 10.0)):
        for arm, mflops in (("piip", 28.2), ("single", 31.6)):
            scores = {name: {"accuracy": offset + index} for index, name in enumerate(report.COLUMNS)}
            scores["mmbench"]["categories"] = {"count": 50.0 + offset, "color": offset}
            results = {"build": {"vision_mflops": mflops, "visual_tokens": 64}, "eval": {"scores": scores}}
            (tmp_path / seed / arm).mkdir(parents=True)
            (tmp_path / seed / arm / "results.json").write_text(json.dumps(results))
    runs = report.read_runs(tmp_path)
    assert set(runs) == {"piip", "single"} and all(len(rows) == 2 for rows in runs.values())
    table = report.table(runs)
    # first column of scores: 0 and 10 -> mean 5.0; mean of four: 1.5 and 11.5 -> 6.5
    assert "| **5.0** (0.0 / 10.0) |" in table and "**6.5** (1.5 / 11.5) | 2 |" in table
    # MMBench's categories, averaged over the seeds: count 50 and 60, colour 0 and 10
    assert "| (b) single ViT @96 | 5.0 | 55.0 |" in report.category_table(runs).splitlines()
    report.plot(runs, tmp_path / "plot.png")
    assert Image.open(tmp_path / "plot.png").size == (900, 440)


def test_tower_probe_configs_load_the_committed_parts_and_a_short_run_reports(tmp_path):
    probe = load_script("tower_probe")
    from piip_llava.model.vision.flops import count_tower_flops

    flops = {name: count_tower_flops(probe.tower_config(*sizes)).vision_gflops for name, sizes in probe.TOWERS.items()}
    assert flops["single@64"] < flops["single@96"] < flops["single@128"]  # the sweep is ordered by FLOPs
    assert flops["pyramid@64-128"] < flops["single@128"]
    # the demo preset is the sweep's 64-128 pyramid, FLOPs for FLOPs
    from piip_llava.model.vision import get_tower_config

    assert abs(count_tower_flops(get_tower_config("demo-convnext-clip_128-64")).vision_gflops
               - flops["pyramid@64-128"]) < 1e-9  # fmt: skip
    output = tmp_path / "probe.json"
    argv = ["--towers", "single@64", "pyramid@48-96", "--steps", "2", "--batch-size", "4", "--eval-size", "8",
            "--output", str(output)]  # fmt: skip
    assert probe.main(argv) == 0
    runs = json.loads(output.read_text())["runs"]
    assert [run["tower"] for run in runs] == ["single@64", "pyramid@48-96"]
    assert all(0.0 <= run["accuracy"] <= 1.0 and run["steps"] == 2 for run in runs)
    # one small word per scene, its vocabulary index the label
    import random

    from piip_llava.data.scenes import VOCABULARY, random_scene

    pixels, labels = probe.batch(random.Random(0), 3)
    scenes = [random_scene(rng, probe.DETAIL_SCENE) for rng in [random.Random(0)] for _ in range(3)]
    assert pixels.shape == (3, 3, 128, 128)
    assert probe.batch(random.Random(0), 2, 96)[0].shape == (2, 3, 96, 96)  # resized to the tower's input size
    assert labels.tolist() == [VOCABULARY.index(scene.words[0].text) for scene in scenes]
    assert all(len(scene.words) == 1 and scene.words[0].text_size == "small" for scene in scenes)


class _NextTokenOracle(torch.nn.Module):
    """An "LLM" whose input embeddings are one-hot and whose logits at t are the input at t + 1 (shift=1: it always
    predicts the next token) or at t (shift=0: it repeats the current one)."""

    def __init__(self, vocab: int, shift: int) -> None:
        super().__init__()
        self.embedding, self.shift = torch.nn.Embedding(vocab, vocab), shift
        self.embedding.weight.data = torch.eye(vocab)

    def get_input_embeddings(self):
        return self.embedding

    def forward(self, inputs_embeds, attention_mask):
        logits = torch.roll(inputs_embeds, -self.shift, dims=1) if self.shift else inputs_embeds
        return type("Output", (), {"logits": logits})()


def test_scene_skill_accuracy_scores_the_first_answer_token_against_an_oracle(tmp_path):
    """The next-token oracle scores 100 on every skill, with the scene or blanked; repeating the current token (the
    separator before the answer) scores 0: the score reads the answer's first token (a lettered answer's tokens up
    to its letter), not its neighbour."""
    from piip_llava.model.tiny import train_tokenizer

    skills, tokenizer = load_script("llm_scene_skills"), train_tokenizer()
    for shift, expected in ((1, 100.0), (0, 0.0)):
        table = skills.skill_table(_NextTokenOracle(len(tokenizer), shift), tokenizer, samples=60, seed=1)
        assert sum(row["questions"] for row in table.values()) == 60
        assert {"presence", "color"} <= set(table) and any(skill.startswith("letter: ") for skill in table)
        for row in table.values():
            assert row["scene"] == row["blank"] == expected
    # An oracle that names the option but writes the letter after the right one: lettered skills score 0, the rest 100.
    letters = [tokenizer.convert_tokens_to_ids(letter) for letter in "ABCD"]
    oracle = _NextTokenOracle(len(tokenizer), 1)
    oracle.embedding.weight.data[letters] = oracle.embedding.weight.data[letters[1:] + letters[:1]]
    for skill, row in skills.skill_table(oracle, tokenizer, samples=60, seed=1).items():
        assert row["scene"] == row["blank"] == (0.0 if skill.startswith("letter: ") else 100.0), skill


def test_scene_skills_runs_on_an_llm_part(tmp_path, capsys):
    from piip_llava.model.tiny import train_tokenizer

    skills, tokenizer = load_script("llm_scene_skills"), train_tokenizer()
    skills.parts_script().build_llm(tokenizer, seed=0).save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    assert skills.main(["--llm", str(tmp_path / "llm"), "--samples", "30", "--json", str(tmp_path / "t.json")]) == 0
    table = json.loads((tmp_path / "t.json").read_text())
    assert sum(row["questions"] for row in table.values()) == 30
    assert all(0 <= row[mode] <= 100 for row in table.values() for mode in ("scene", "blank"))
    assert "| presence |" in capsys.readouterr().out


def test_held_out_questions_are_answered_by_their_scenes(tmp_path):
    """The browser check's four questions: each answer follows from its scene's caption (a hand check), the images
    exist, and the same seed draws the same scenes."""
    rows = load_script("held_out_questions").held_out_questions(tmp_path / "a")
    assert [row["kind"] for row in rows] == ["count", "color", "reading", "presence"]
    by_kind = {row["kind"]: row for row in rows}
    count = by_kind["count"]
    shapes = [part for part in count["caption"].rstrip(".").replace(" and ", ", ").split(", ") if "word" not in part]
    assert count["answer"] == str(len(shapes))
    color = by_kind["color"]
    shape = color["question"].split("the ")[1].split("?")[0]
    assert f"{color['answer']} {shape}" in color["caption"]
    reading = by_kind["reading"]
    assert f"the word {reading['answer']} " in reading["caption"] and reading["caption"].count("the word") == 1
    presence = by_kind["presence"]
    thing = presence["question"].removeprefix("Is there ").split(" in the image")[0].split(" ", 1)[1]
    assert (thing in presence["caption"]) == (presence["answer"] == "Yes")
    assert all(Path(row["image"]).is_file() for row in rows)
    again = load_script("held_out_questions").held_out_questions(tmp_path / "b")
    assert [row["caption"] for row in again] == [row["caption"] for row in rows]
