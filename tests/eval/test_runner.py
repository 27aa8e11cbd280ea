"""piip_llava/eval/runner.py and the `piip-llava eval` CLI on a tiny model."""

import json

import pytest

from piip_llava.cli import main
from piip_llava.data.synthetic import write_textvqa_set
from piip_llava.eval import runner
from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.records import identity
from piip_llava.eval.runner import chunk, merge_answers, run_questions

from .official_files import write_textvqa


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
    one = {identity(a): a["text"] for a in answers(tmp_path / "bs1.jsonl")}
    four = {identity(a): a["text"] for a in answers(tmp_path / "bs4.jsonl")}
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


def fake_answers(model, processor, questions, *args):
    """Stands in for generation: the answer names the question (shared image ids must not mix answers up)."""
    return [f"{q.question_id}: {q.text.splitlines()[0]}" for q in questions]


@pytest.fixture
def shared_ids(tmp_path, monkeypatch):
    """LLaVA's TextVQA layout: 21 questions, 3 per image id; generation replaced by :func:`fake_answers`."""
    monkeypatch.setattr(runner, "answer_batch", fake_answers)
    questions_file, _, _ = write_textvqa(tmp_path)
    return get_benchmark("textvqa").load(questions_file, tmp_path)


def test_resume_with_shared_image_ids_answers_every_question(shared_ids, tmp_path, monkeypatch):
    straight = run_questions(None, None, shared_ids, tmp_path / "straight.jsonl", batch_size=4)
    written = answers(straight)
    assert [identity(a) for a in written] == [identity(q.record()) for q in shared_ids]  # question order
    assert all(a["text"] == f"{a['question_id']}: {a['prompt'].splitlines()[0]}" for a in written)
    assert all(isinstance(a["question_id"], str) for a in written)

    calls = {"n": 0}

    def crash_on_third_batch(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return fake_answers(*args)

    monkeypatch.setattr(runner, "answer_batch", crash_on_third_batch)
    resumed = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_questions(None, None, shared_ids, resumed, batch_size=4)
    assert len(answers(resumed)) == 8 and len({a["question_id"] for a in answers(resumed)}) < 8  # ids repeat
    monkeypatch.setattr(runner, "answer_batch", fake_answers)
    run_questions(None, None, shared_ids, resumed, batch_size=4)
    assert resumed.read_text() == straight.read_text()


def test_resume_refuses_another_runs_answers(shared_ids, tmp_path):
    answers_file = run_questions(None, None, shared_ids[:9], tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="not this run's questions"):
        run_questions(None, None, shared_ids[9:], answers_file)


def test_chunks_merge_keeps_every_question_in_order(shared_ids, tmp_path):
    parts = [chunk(shared_ids, 3, i) for i in range(3)]
    assert [len(p) for p in parts] == [7, 7, 7] and sum(parts, []) == shared_ids
    files = [run_questions(None, None, part, tmp_path / f"3_{i}.jsonl", batch_size=3) for i, part in enumerate(parts)]
    merged = answers(merge_answers(files, tmp_path / "merge.jsonl"))
    assert [identity(a) for a in merged] == [identity(q.record()) for q in shared_ids]
    # A chunk passed twice adds nothing; a chunk answered differently elsewhere is an error naming both lines.
    assert answers(merge_answers([*files, files[0]], tmp_path / "twice.jsonl")) == merged
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({**a, "text": "changed"}) + "\n" for a in answers(files[1])))
    with pytest.raises(ValueError, match=r"answered differently at .*3_1.jsonl:1 and .*other.jsonl:1"):
        merge_answers([*files, other], tmp_path / "conflict.jsonl")


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
    score = json.loads((out / "score.json").read_text())
    assert (score["samples"], score["answered"], score["expected"]) == (10, 10, 10)
