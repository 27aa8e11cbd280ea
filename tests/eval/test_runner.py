"""piip_llava/eval/runner.py and the `piip-llava eval` CLI on a tiny model."""

import json

import pytest

from piip_llava.cli import main
from piip_llava.data.synthetic import write_textvqa_set
from piip_llava.eval import runner
from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.runner import chunk, merge_answers, run_questions


@pytest.fixture
def textvqa(tmp_path):
    return write_textvqa_set(tmp_path / "textvqa", count=10)


def answers(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batched_answers_equal_batch_size_one(tiny_llava, textvqa, tmp_path):
    model, processor = tiny_llava
    questions = get_benchmark("textvqa").load(textvqa[0], textvqa[2])
    run_questions(model, processor, questions, tmp_path / "bs1.jsonl", batch_size=1, max_new_tokens=8)
    run_questions(model, processor, questions, tmp_path / "bs4.jsonl", batch_size=4, max_new_tokens=8)
    one = {a["question_id"]: a["text"] for a in answers(tmp_path / "bs1.jsonl")}
    four = {a["question_id"]: a["text"] for a in answers(tmp_path / "bs4.jsonl")}
    assert one == four and len(one) == 10


def test_crash_midway_then_restart_gives_the_uninterrupted_file(tiny_llava, textvqa, tmp_path, monkeypatch):
    model, processor = tiny_llava
    questions = get_benchmark("textvqa").load(textvqa[0], textvqa[2])
    straight = run_questions(model, processor, questions, tmp_path / "straight.jsonl", batch_size=3, max_new_tokens=6)

    calls = {"n": 0}
    real = runner.answer_batch

    def crash_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "answer_batch", crash_on_third_batch)
    interrupted = tmp_path / "interrupted.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_questions(model, processor, questions, interrupted, batch_size=3, max_new_tokens=6)
    assert len(answers(interrupted)) == 6
    with open(interrupted, "a") as handle:  # a kill in the middle of writing a line
        handle.write('{"question_id": "img00')
    monkeypatch.setattr(runner, "answer_batch", real)
    run_questions(model, processor, questions, interrupted, batch_size=3, max_new_tokens=6)
    assert interrupted.read_text() == straight.read_text()
    ids = [a["question_id"] for a in answers(interrupted)]
    assert len(ids) == len(set(ids)) == 10


def test_chunks_and_merge(textvqa, tmp_path):
    questions = get_benchmark("textvqa").load(textvqa[0], textvqa[2])
    parts = [chunk(questions, 3, i) for i in range(3)]
    assert [len(p) for p in parts] == [4, 4, 2] and sum(parts, []) == questions
    for i in range(2):
        (tmp_path / f"{i}.jsonl").write_text(json.dumps({"question_id": f"q{i}", "text": "x"}) + "\n")
    merged = merge_answers([tmp_path / "0.jsonl", tmp_path / "1.jsonl", tmp_path / "0.jsonl"], tmp_path / "m.jsonl")
    assert [a["question_id"] for a in answers(merged)] == ["q0", "q1"]


def test_cli_run_then_score(textvqa, tmp_path, capsys):
    assert main(["build", "--tiny", "--output", str(tmp_path / "tiny")]) == 0
    questions, annotations, images = textvqa
    answers_file = tmp_path / "answers.jsonl"
    assert main(["eval", "run", "--benchmark", "textvqa", "--model-path", str(tmp_path / "tiny"), "--question-file",
                 str(questions), "--image-folder", str(images), "--answers-file", str(answers_file),
                 "--batch-size", "4", "--max-new-tokens", "4"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", "score", "--benchmark", "textvqa", "--predictions", str(answers_file),
                 "--annotations", str(annotations)]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "textvqa" and result["samples"] == 10 and 0 <= result["accuracy"] <= 100
    # A perfect answer file scores 100, through the same command.
    perfect = tmp_path / "perfect.jsonl"
    perfect.write_text("\n".join(json.dumps({**a, "text": a["prompt"].split("token: ")[1].split("\n")[0]})
                                 for a in answers(answers_file)))  # fmt: skip
    main(["eval", "score", "--benchmark", "textvqa", "--predictions", str(perfect), "--annotations", str(annotations)])
    assert json.loads(capsys.readouterr().out)["accuracy"] == 100.0


def test_benchmark_script_with_two_chunks(textvqa, tmp_path):
    """eval/textvqa.sh as a user runs it: two chunk processes, merge, score."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert main(["build", "--tiny", "--output", str(tmp_path / "tiny")]) == 0
    env = dict(os.environ, GPUS="2", DATA=str(textvqa[0].parent), OUT=str(tmp_path / "answers"), HF_HUB_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # fmt: skip
    subprocess.run(["bash", str(root / "eval/textvqa.sh"), str(tmp_path / "tiny"), "--max-new-tokens", "4"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    out = tmp_path / "answers" / "textvqa" / "tiny"
    assert sorted(p.name for p in out.glob("2_*.jsonl")) == ["2_0.jsonl", "2_1.jsonl"]
    assert len(answers(out / "merge.jsonl")) == 10
    assert json.loads((out / "score.json").read_text())["samples"] == 10
