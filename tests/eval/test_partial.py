"""No silent partial scores: `eval score` exits 1 on missing, unknown or disagreeing answers unless --allow-partial;
bad lines name their file and line; eval/run_benchmark.sh fails when a chunk fails."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from piip_llava.cli import main

from .official_files import write_jsonl, write_textvqa


@pytest.fixture
def textvqa(tmp_path):
    return write_textvqa(tmp_path)


@pytest.fixture
def score(capsys, caplog):
    """`eval score --benchmark textvqa` -> (exit code, printed JSON or None, logged messages)."""

    def run(answers, annotations, *flags) -> tuple[int, dict | None, str]:
        caplog.clear()
        code = main(["eval", "score", "--benchmark", "textvqa", "--predictions", str(answers), "--annotations",
                     str(annotations), *flags])  # fmt: skip
        out = capsys.readouterr().out
        return code, json.loads(out) if out else None, caplog.text

    return run


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_missing_answers_fail_unless_allowed(textvqa, tmp_path, score):
    _, annotations, answers = textvqa
    partial = write_jsonl(tmp_path / "partial.jsonl", lines(answers)[:20])
    code, result, err = score(partial, annotations)
    assert code == 1 and (result["answered"], result["expected"], result["missing"]) == (20, 21, 1)
    assert "answers cover 20 of 21 expected questions" in err and "--allow-partial" in err
    code, allowed, _ = score(partial, annotations, "--allow-partial")
    assert code == 0 and allowed == result
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    code, result, _ = score(empty, annotations)
    assert code == 1 and (result["answered"], result["accuracy"]) == (0, 0.0)


def test_duplicates_and_unknown_answers(textvqa, tmp_path, score):
    _, annotations, answers = textvqa
    records = lines(answers)
    code, complete, _ = score(answers, annotations)
    agreeing = write_jsonl(tmp_path / "agreeing.jsonl", records + records[:2])  # a chunk merged twice
    code, result, _ = score(agreeing, annotations)
    assert code == 0 and result["duplicates"] == 2 and result["accuracy"] == complete["accuracy"]
    disagreeing = write_jsonl(tmp_path / "disagreeing.jsonl", records + [{**records[4], "text": "something else"}])
    code, result, err = score(disagreeing, annotations)
    assert code == 1 and result["conflicting"] == 1 and "disagreeing.jsonl:5, " in err and "disagreeing.jsonl:22" in err
    unknown = write_jsonl(tmp_path / "unknown.jsonl", records + [{**records[0], "question_id": "ffffffffffffffff"}])
    code, result, err = score(unknown, annotations)
    assert code == 1 and result["unknown"] == 1 and "unknown.jsonl:22" in err


def test_bad_line_names_file_and_line(textvqa, tmp_path, score):
    _, annotations, answers = textvqa
    broken = tmp_path / "broken.jsonl"
    broken.write_text(answers.read_text().replace('"prompt"', '"Prompt"', 1))
    code, result, err = score(broken, annotations)
    assert code == 2 and result is None and "broken.jsonl:1: missing field 'prompt'" in err


FAKE_CLI = """#!/usr/bin/env bash
# Stands in for piip-llava: chunk 1 of `eval run` crashes, the others write one answer; merge/score leave a mark.
case "$2" in
  run) [[ " $* " == *" --chunk-idx 1 "* ]] && exit 3
       for ((i = 1; i <= $#; i++)); do [[ ${!i} == --answers-file ]] && { j=$((i + 1)); echo '{}' > "${!j}"; }; done ;;
  *) touch "$MARKS/$2" ;;
esac
"""


def test_run_benchmark_fails_when_a_chunk_fails(tmp_path):
    root = Path(__file__).resolve().parents[2]
    bin_dir, marks = tmp_path / "bin", tmp_path / "marks"
    bin_dir.mkdir()
    marks.mkdir()
    (bin_dir / "piip-llava").write_text(FAKE_CLI)
    (bin_dir / "piip-llava").chmod(0o755)
    env = dict(
        os.environ, GPUS="3", OUT=str(tmp_path / "out"), MARKS=str(marks), PATH=f"{bin_dir}:{os.environ['PATH']}"
    )
    command = ["bash", str(root / "eval/run_benchmark.sh"), "textvqa", "model", "q.jsonl", "images", "a.json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "chunk 1 of 3 failed" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out/textvqa/model").iterdir()) == ["3_0.jsonl", "3_2.jsonl"]
    assert list(marks.iterdir()) == []  # neither merged nor scored
