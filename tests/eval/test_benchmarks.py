"""GQA, SEED-Bench, MME and MMBench, where llava-torch ships no scorer: official-shaped files, hand-computed scores."""

import json

import pytest

from piip_llava.cli import main
from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.mmbench import extract_choice, mmbench_rounds
from piip_llava.eval.mme import write_mme_results
from piip_llava.eval.records import Answer, IncompleteAnswers, read_answers
from piip_llava.eval.scorers import pope_yes

from .official_files import (
    LETTER,
    SHORT,
    llava_answer,
    mmbench_llava_answer,
    mmbench_row,
    write_jsonl,
    write_mme_release,
    write_tsv,
)


def answers_of(records: list[dict]) -> list[Answer]:
    return [Answer(record, f"answers.jsonl:{n}") for n, record in enumerate(records, 1)]


def test_gqa_exact_match_after_rstrip_lower(tmp_path):
    # (question id, image, truth, the model's text, right?) as convert_gqa_for_eval + GQA's eval.py judge them
    cases = [("201307251", "n161313.jpg", "yes", "Yes.", True), ("201640614", "n235859.jpg", "left", "Left", True),
             ("202225914", "n336443.jpg", "table", "the table", False), ("2062325", "n179136.jpg", "red", "Red.", True),
             ("201303229", "n518912.jpg", "white", "blue", False)]  # fmt: skip
    truth = {qid: {"semantic": [], "entailed": [], "equivalent": [qid], "question": "Is it overcast?",
                   "imageId": image[:-4], "isBalanced": True, "groups": {"global": None, "local": "10c-sky"},
                   "answer": answer, "semanticStr": "select: sky", "annotations": {"answer": {}, "question": {},
                   "fullAnswer": {}}, "types": {"detailed": "weather", "semantic": "attr", "structural": "query"},
                   "fullAnswer": f"It is {answer}."} for qid, image, answer, _, _ in cases}  # fmt: skip
    annotations = tmp_path / "testdev_balanced_questions.json"
    annotations.write_text(json.dumps(truth))
    records = [llava_answer(qid, f"Is it overcast?\n{SHORT}", text, n) for n, (qid, _, _, text, _) in enumerate(cases)]
    result = get_benchmark("gqa").score(answers_of(records), annotations)
    assert (result["accuracy"], result["answered"], result["expected"]) == (60.0, 5, 5)
    with pytest.raises(IncompleteAnswers, match="4 of 5"):
        get_benchmark("gqa").score(answers_of(records[1:]), annotations)


def seed_bench(tmp_path):
    """SEED-Bench.json: str ids, image questions of types 1-3 and video questions of type 10."""
    types = {"Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Action Recognition": 10}
    # (id, data type, type id, truth, the model's text): "C." is wrong, the answer must equal the letter.
    cases = [
        ("101669", "image", 1, "A", "A"),
        ("104933", "image", 1, "C", "B"),
        ("89257", "image", 2, "D", "D"),
        ("75209", "image", 3, "C", "C."),
        ("v1001", "video", 10, "B", "B"),
        ("v1002", "video", 10, "D", "D"),
    ]
    questions = [{"answer": truth, "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d",
                  "data_id": f"{qid}.jpg", "data_type": kind, "question": "Which one?", "question_id": qid,
                  "question_type_id": type_id} for qid, kind, type_id, truth, _ in cases]  # fmt: skip
    annotations = tmp_path / "SEED-Bench.json"
    annotations.write_text(json.dumps({"question_type": types, "questions": questions}))
    prompt = f"Which one?\nA. a\nB. b\nC. c\nD. d\n{LETTER}"
    records = [llava_answer(int(qid) if qid.isdigit() else qid, prompt, text, n)
               for n, (qid, _, _, _, text) in enumerate(cases)]  # fmt: skip
    return annotations, records


def test_seed_image_split_and_video(tmp_path):
    annotations, records = seed_bench(tmp_path)
    image_only = get_benchmark("seed").score(answers_of(records[:4]), annotations)
    assert (image_only["accuracy"], image_only["answered"], image_only["expected"]) == (50.0, 4, 4)
    assert image_only["types"] == {"Scene Understanding": 50.0, "Instance Identity": 100.0, "Instance Attributes": 0.0}
    everything = get_benchmark("seed").score(answers_of(records), annotations)
    assert (everything["accuracy"], everything["video"], everything["expected"]) == (50.0, 100.0, 6)
    assert everything["all"] == pytest.approx(100 * 4 / 6)
    with pytest.raises(IncompleteAnswers, match="5 of 6"):  # one video answered: every video question is expected
        get_benchmark("seed").score(answers_of(records[:5]), annotations)


def test_mme_from_the_release_folder(tmp_path):
    release = write_mme_release(tmp_path)
    benchmark = get_benchmark("mme")
    questions = benchmark.load(release, release)
    assert questions[0].record() == {"question_id": "artwork/images/14777.jpg", "prompt":
                                     f"Does this artwork belong to the type of religious?\n{SHORT}"}  # fmt: skip
    assert questions[2].text == f"Is this artwork titled sorrow?\n{SHORT}"  # two spaces before "Please" in the release
    assert questions[4].question_id == "code_reasoning/0020.png" and questions[4].image().size == (8, 8)
    # artwork: 14777 both right, 24291 one right ("yes, it is" is yes) -> acc 3/4, acc+ 1/2 -> 125
    # code_reasoning: "I think yes" is neither yes nor no -> acc 1/2, acc+ 0 -> 50
    # existence: "Not" starts like "no" -> acc 1, acc+ 1 -> 200
    texts = ["Yes", "No", "Yes", "yes, it is", "I think yes", "No", "Yes", "Not"]
    records = [{**q.record(), "text": text, "answer_id": "x", "model_id": "llava-v1.5-13b", "metadata": {}}
               for q, text in zip(questions, texts, strict=True)]  # fmt: skip
    result = benchmark.score(answers_of(records), release)
    assert result["categories"] == pytest.approx({"artwork": 125.0, "code_reasoning": 50.0, "existence": 200.0})
    assert (result["perception"], result["cognition"], result["answered"], result["expected"]) == (325.0, 50.0, 8, 8)

    calculation = write_mme_results(answers_of(records), release, tmp_path / "calculation")
    answers = write_jsonl(tmp_path / "merge.jsonl", records)  # the same through the CLI eval/mme.sh calls
    assert main(["eval", "submit", "--format", "mme", "--predictions", str(answers), "--questions", str(release),
                 "--output", str(tmp_path / "cli")]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "artwork.txt",
        "code_reasoning.txt",
        "existence.txt",
    ]
    assert (tmp_path / "cli" / "artwork.txt").read_text() == (calculation / "artwork.txt").read_text()
    assert (calculation / "artwork.txt").read_text().splitlines() == [
        "14777.txt\tDoes this artwork belong to the type of religious? Please answer yes or no.\tYes\tYes",
        "14777.txt\tDoes this artwork belong to the type of historical? Please answer yes or no.\tNo\tNo",
        "24291.txt\tIs this artwork titled sorrow?  Please answer yes or no.\tNo\tYes",
        "24291.txt\tIs this artwork titled virgin and child? Please answer yes or no.\tYes\tyes, it is"]  # fmt: skip


MMBENCH_ROWS = [mmbench_row(0, ["cat", "dog"], "B", "c1"),
                mmbench_row(1, ["red", "green", "blue"], "C", "c1", "A hint"),
                mmbench_row(2, ["1", "2", "3", "4"], "A", "c2"), mmbench_row(3, ["yes", "no"], "A", "c2")]  # fmt: skip


def test_mmbench_llava_single_round_answers(tmp_path):
    """LLaVA's v1.5 script (single round, int question_id = TSV index) scored against --annotations."""
    tsv = write_tsv(tmp_path / "mmbench_dev_20230712.tsv", MMBENCH_ROWS)
    texts = ["B", "The answer is C", "A. 1", "no"]  # the last picks option "no" (B): wrong
    records = [mmbench_llava_answer(row, text, 0, n) for n, (row, text) in enumerate(zip(MMBENCH_ROWS, texts))]
    result = get_benchmark("mmbench").score(answers_of(records), tsv)
    assert (result["accuracy"], result["questions"], result["answered"], result["expected"]) == (75.0, 4, 4, 4)
    assert result["categories"] == {"c1": 100.0, "c2": 50.0} and result["l2_categories"]["c2_l2"] == 50.0
    with pytest.raises(ValueError, match="needs --annotations"):
        get_benchmark("mmbench").score(answers_of(records), None)


def test_mmbench_all_rounds_and_shipped_copies(tmp_path):
    tsv = write_tsv(tmp_path / "dev.tsv", MMBENCH_ROWS)
    questions = get_benchmark("mmbench").load(tsv)
    assert [q.record()["round_id"] for q in questions] == [0, 1, 0, 1, 2, 0, 1, 2, 3, 0, 1]
    assert questions[3].record()["option_char"] == ["B", "C", "A"] and questions[3].record()["options"] == [
        "green", "blue", "red"]  # fmt: skip
    # Right letters per round: 0: B A, 1: C B A, 2: A D C B (round 2 answered B: wrong), 3: A B.
    texts = ["B", "A", "C", "B", "A", "A", "D", "B", "B", "A", "B"]
    records = [{**q.record(), "text": text, "metadata": q.metadata} for q, text in zip(questions, texts, strict=True)]
    result = get_benchmark("mmbench").score(answers_of(records), tsv)
    assert (result["accuracy"], result["answered"], result["expected"]) == (75.0, 11, 11)
    assert result["categories"] == {"c1": 100.0, "c2": 50.0}
    with pytest.raises(IncompleteAnswers, match="10 of 11"):
        get_benchmark("mmbench").score(answers_of(records[:-1]), tsv)

    # A TSV that ships the circular copies (index + k * 1,000,000): every row once, CircularEval across copies.
    copies = [mmbench_row(0, ["cat", "dog"], "A", "c1"), mmbench_row(1_000_000, ["dog", "cat"], "B", "c1"),
              mmbench_row(1, ["x", "y", "z"], "C", "c2"), mmbench_row(1_000_001, ["y", "z", "x"], "B", "c2"),
              mmbench_row(2_000_001, ["z", "x", "y"], "A", "c2")]  # fmt: skip
    shipped = write_tsv(tmp_path / "with_copies.tsv", copies)
    assert [q.record()["round_id"] for q in get_benchmark("mmbench").load(shipped)] == [0] * 5
    texts = ["A", "B", "C", "B", "B"]  # question 1's last copy wrong
    records = [mmbench_llava_answer(row, text, 0, n) for n, (row, text) in enumerate(zip(copies, texts))]
    result = get_benchmark("mmbench").score(answers_of(records), shipped)
    assert (result["accuracy"], result["questions"], result["answered"]) == (50.0, 2, 5)


def test_mmbench_cli_scores_llava_answer_file(tmp_path, capsys):
    """`eval score --benchmark mmbench` on LLaVA's model_vqa_mmbench file (once a KeyError: 'index')."""
    tsv = write_tsv(tmp_path / "dev.tsv", MMBENCH_ROWS)
    records = [mmbench_llava_answer(row, "A", 0, n) for n, row in enumerate(MMBENCH_ROWS)]
    answers = write_jsonl(tmp_path / "llava-v1.5-13b.jsonl", records)
    assert main(["eval", "score", "--benchmark", "mmbench", "--predictions", str(answers), "--annotations",
                 str(tsv)]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["accuracy"] == 50.0  # rows 2 and 3 have answer A


def test_pope_yes_rule():
    assert pope_yes("Yes, there is a dog.") and not pope_yes("No, there is not.") and not pope_yes("There is not a cat")
    assert pope_yes("I see no. Yes") is False and pope_yes("Nothing") is True  # only the words No/not/no count


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


def test_answers_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"question_id": 1, "prompt": "p", "text": "Yes"}\n\n{"question_id": 2, "prompt": "p", "te\n')
    with pytest.raises(ValueError, match=r"answers.jsonl:3: not a JSON line"):
        read_answers(bad)
    bad.write_text('{"question_id": 1, "prompt": "p", "text": "Yes"}\n{"question_id": 2, "prompt": "p"}\n')
    with pytest.raises(ValueError, match=r"answers.jsonl:2: missing field 'text'"):
        read_answers(bad)
