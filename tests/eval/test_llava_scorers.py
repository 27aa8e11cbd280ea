"""POPE and ScienceQA on files shaped like the official ones, scored by LLaVA's eval_pope.py and eval_science_qa.py
run as LLaVA's scripts run them."""

import json
import random
import re

import pytest

from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.records import read_answers

from .llava_oracle import run_llava_script
from .official_files import write_jsonl, write_pope, write_scienceqa


def llava_pope(question_file, coco, answers) -> dict[str, dict[str, float]]:
    """eval_pope.py's printed metrics per category (fractions), e.g. {"random": {"Accuracy": 0.5, ...}}."""
    printed = run_llava_script("eval_pope", "--annotation-dir", coco, "--question-file", question_file,
                               "--result-file", answers)  # fmt: skip
    result = {}
    for block in printed.split("Category: ")[1:]:
        category = block.split(",")[0]
        result[category] = {
            name: float(value) for name, value in re.findall(r"^([A-Za-z1 ]+[a-z1]): (\S+)$", block, re.M)
        }
    return result


def test_pope_equals_llava_eval_pope(tmp_path):
    question_file, coco, answers = write_pope(tmp_path)
    llava = llava_pope(question_file, coco, answers)
    assert set(llava) == {"adversarial", "popular", "random"}
    ours = get_benchmark("pope").score(read_answers(answers), coco, question_file)
    assert (ours["answered"], ours["expected"]) == (18, 18)
    for category, theirs in llava.items():
        mine = ours["categories"][category]
        for name, key in [("Accuracy", "accuracy"), ("Precision", "precision"), ("Recall", "recall"),
                          ("F1 score", "f1"), ("Yes ratio", "yes_ratio")]:  # fmt: skip
            assert mine[key] == pytest.approx(100 * theirs[name], abs=1e-9), (category, name)
    assert len({round(c["accuracy"], 6) for c in ours["categories"].values()}) > 1  # the categories differ

    # eval_pope pairs answers and labels by position; we join by id, so any answer order scores the same.
    lines = answers.read_text().splitlines()
    random.Random(0).shuffle(lines)
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", [json.loads(line) for line in lines])
    assert get_benchmark("pope").score(read_answers(shuffled), coco, question_file) == ours

    # Label files from another POPE version (images out of step with the questions) are refused, not mis-scored.
    labels = (coco / "coco_pope_random.json").read_text().replace("310190.jpg", "310191.jpg", 1)
    (coco / "coco_pope_random.json").write_text(labels)
    with pytest.raises(ValueError, match=r"coco_pope_random.json:1: image .* but question 1 of category 'random'"):
        get_benchmark("pope").score(read_answers(answers), coco, question_file)


def test_scienceqa_equals_llava_eval_science_qa(tmp_path):
    question_file, problems, answers = write_scienceqa(tmp_path)
    output, result = tmp_path / "output.json", tmp_path / "result.json"
    printed = run_llava_script("eval_science_qa", "--base-dir", tmp_path, "--result-file", answers,
                               "--output-file", output, "--output-result", result)  # fmt: skip
    theirs = json.loads(result.read_text())
    graded = json.loads(output.read_text())
    image_right = sum(r["is_multimodal"] for r in graded["correct"])
    image_total = image_right + sum(r["is_multimodal"] for r in graded["incorrect"])
    ours = get_benchmark("scienceqa").score(read_answers(answers), problems)
    assert (ours["answered"], ours["expected"], ours["samples"]) == (theirs["count"],) * 3 == (9,) * 3
    assert ours["accuracy"] == pytest.approx(theirs["acc"], abs=1e-9)
    assert ours["img_accuracy"] == pytest.approx(100 * image_right / image_total, abs=1e-9)
    assert (ours["img_samples"], ours["split"]) == (
        image_total,
        "all",
    ) and f"IMG-Accuracy: {ours['img_accuracy']:.2f}%" in printed
    assert 0 < ours["accuracy"] < 100


def test_scienceqa_prompts_are_llavas(tmp_path):
    """Our ScienceQA questions record the prompt model_vqa_science writes (``<image>\\n`` for image problems),
    which eval_science_qa reads to count IMG accuracy."""
    question_file, _, answers = write_scienceqa(tmp_path)
    questions = get_benchmark("scienceqa").load(question_file, tmp_path)
    llava = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [q.record() for q in questions] == [{"question_id": r["question_id"], "prompt": r["prompt"]} for r in llava]
    assert [q.image is not None for q in questions] == ["<image>" in r["prompt"] for r in llava]


def test_scienceqa_img_only_run(tmp_path):
    """Answers to only the image problems (an IMG-only question file) expect only those."""
    _, problems, answers = write_scienceqa(tmp_path)
    image_only = [a for a in read_answers(answers) if "<image>" in a.record["prompt"]]
    result = get_benchmark("scienceqa").score(image_only, problems)
    assert (result["split"], result["answered"], result["expected"]) == ("img", 7, 7)
    assert result["accuracy"] == result["img_accuracy"]
