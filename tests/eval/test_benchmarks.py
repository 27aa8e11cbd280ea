"""piip_llava/eval/benchmarks.py and mmbench.py: scorers on hand-made files."""

import base64
import io
import json

import pytest
from PIL import Image

from piip_llava.eval.benchmarks import get_benchmark, option_letter, pope_yes, textvqa_question
from piip_llava.eval.mmbench import circular_eval, extract_choice, mmbench_rounds


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_textvqa_joins_by_image_id_and_question(tmp_path):
    prompt = "what brand is it?\nReference OCR token: Sony, TV\nAnswer the question using a single word or phrase."
    assert textvqa_question(prompt) == "what brand is it?"
    annotations = tmp_path / "TextVQA_0.5.1_val.json"
    annotations.write_text(json.dumps({"data": [
        {"image_id": "img1", "question": "What brand is it?", "answers": ["sony"] * 2 + ["sonny"] * 8},
        {"image_id": "img2", "question": "What number?", "answers": ["7"] * 10}]}))  # fmt: skip
    short = "What number?\nAnswer the question using a single word or phrase."
    predictions = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "img1", "prompt": prompt, "text": "Sony"},
        {"question_id": "img2", "prompt": short, "text": "seven"}])  # fmt: skip
    result = get_benchmark("textvqa").score(predictions, annotations)
    assert result == {"accuracy": pytest.approx(100 * (0.6 + 1.0) / 2), "samples": 2}


def test_pope_metrics(tmp_path):
    assert pope_yes("Yes, there is a dog.") and not pope_yes("No, there is not.") and not pope_yes("There is not a cat")
    folder = tmp_path / "pope"
    folder.mkdir()
    write_jsonl(folder / "coco_pope_random.json", [{"question_id": i, "label": label}
                                                    for i, label in enumerate(["yes", "yes", "no", "no"])])  # fmt: skip
    predictions = write_jsonl(tmp_path / "a.jsonl", [{"question_id": i, "text": t}
                                                     for i, t in enumerate(["Yes", "No", "Yes", "No"])])  # fmt: skip
    random = get_benchmark("pope").score(predictions, folder)["categories"]["random"]
    assert random == {"accuracy": 50.0, "precision": 50.0, "recall": 50.0, "f1": 50.0, "yes_ratio": 50.0, "samples": 4}


def test_gqa_scienceqa_seed_mme(tmp_path):
    gqa = tmp_path / "gqa.json"
    gqa.write_text(json.dumps({"q1": {"answer": "left"}, "q2": {"answer": "red"}}))
    answers = write_jsonl(
        tmp_path / "g.jsonl", [{"question_id": "q1", "text": "Left."}, {"question_id": "q2", "text": "blue"}]
    )
    assert get_benchmark("gqa").score(answers, gqa)["accuracy"] == 50.0

    assert [option_letter(t) for t in ["B", "(C) red", "A. cat", "The answer is D.", "maybe"]] == [
        "B",
        "C",
        "A",
        "D",
        None,
    ]
    problems = tmp_path / "problems.json"
    problems.write_text(json.dumps({"1": {"answer": 1}, "2": {"answer": 0}}))
    answers = write_jsonl(tmp_path / "s.jsonl", [{"question_id": "1", "text": "B"}, {"question_id": "2", "text": "B"}])
    assert get_benchmark("scienceqa").score(answers, problems)["accuracy"] == 50.0

    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"questions": [{"question_id": "7", "answer": "C", "question_type_id": 1}]}))
    assert (
        get_benchmark("seed").score(write_jsonl(tmp_path / "e.jsonl", [{"question_id": "7", "text": "C"}]), seed)[
            "accuracy"
        ]
        == 100
    )

    # MME: image x has both questions right (acc 2/2, acc+ 1/1), image y one of two (1/2, 0/1) -> (3/4 + 1/2) * 100.
    mme = write_jsonl(tmp_path / "mme.jsonl", [
        {"question_id": "a", "category": "color", "image": "x", "answer": "Yes"},
        {"question_id": "b", "category": "color", "image": "x", "answer": "No"},
        {"question_id": "c", "category": "color", "image": "y", "answer": "Yes"},
        {"question_id": "d", "category": "color", "image": "y", "answer": "No"}])  # fmt: skip
    answers = write_jsonl(tmp_path / "m.jsonl", [{"question_id": q, "text": t}
                                                 for q, t in zip("abcd", ["Yes", "No", "Yes", "Yes"])])  # fmt: skip
    result = get_benchmark("mme").score(answers, mme)
    assert result["categories"]["color"] == pytest.approx(125.0) and result["perception"] == pytest.approx(125.0)


def test_mmbench_rounds_rotate_option_texts():
    row = {"question": "Which?", "hint": "nan", "A": "cat", "B": "dog", "C": "cow", "D": "nan"}
    rounds = mmbench_rounds(row, all_rounds=True)
    assert [options for _, options in rounds] == [["cat", "dog", "cow"], ["dog", "cow", "cat"], ["cow", "cat", "dog"]]
    assert rounds[1][0] == "Which?\nA. dog\nB. cow\nC. cat"


def test_extraction_is_offline_and_conservative():
    options = ["cat", "dog", "cow"]
    assert extract_choice("B", options) == "B"
    assert extract_choice("(C)", options) == "C"
    assert extract_choice("It is a dog.", options) == "B"  # option text, since "a" is not an option letter here
    assert extract_choice("A or B", options) is None  # two letters: undecided -> wrong
    assert extract_choice("I see a cat and a dog", options) is None


def test_circular_eval_needs_every_round_right():
    def records(index, answers, category="c1"):
        meta = {"index": index, "answer": "A", "category": category, "l2_category": "l2"}
        options = ["cat", "dog", "cow"]
        return [{"text": text, "metadata": {**meta, "round_id": r, "options": options[r:] + options[:r]}}
                for r, text in enumerate(answers)]  # fmt: skip

    # The right option ("cat") sits at A, then C, then B as the texts rotate.
    right = records("1", ["A", "C", "B"])
    one_wrong = records("2", ["A", "C", "A"], category="c2")
    result = circular_eval(right + one_wrong)
    assert result["accuracy"] == 50.0 and result["categories"] == {"c1": 100.0, "c2": 0.0}


def test_mmbench_tsv_questions(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    tsv = tmp_path / "mmbench.tsv"
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    rows = [["5", "Color?", "A hint", "red", "blue", "", "", "A", "color", "attr", encoded]]
    tsv.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    questions = get_benchmark("mmbench").load(tsv)
    assert [q.question_id for q in questions] == ["5-0", "5-1"]
    assert questions[0].text.startswith("A hint\nColor?\nA. red\nB. blue\nAnswer with the option's letter")
    assert questions[1].image().size == (8, 8)
