"""The lmms-eval plugin, through the real `lmms-eval` CLI on a local TextVQA-format set (offline)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from piip_llava.data.synthetic import write_textvqa_set
from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.runner import run_questions
from piip_llava.model.tiny import save_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def test_lmms_eval_evaluates_the_tiny_model(tmp_path):
    save_tiny_model(tmp_path / "tiny")
    questions, annotations, images = write_textvqa_set(tmp_path / "set", count=6)
    subprocess.run([sys.executable, str(ROOT / "eval/lmms_eval_tasks/textvqa_local/make_textvqa_local.py"),
                    str(questions), str(annotations), str(images), str(tmp_path / "task")], check=True)  # fmt: skip
    executable = shutil.which("lmms-eval", path=str(Path(sys.executable).parent))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    subprocess.run([executable, "eval", "--model", "piip_llava", "--model_args", f"pretrained={tmp_path / 'tiny'}",
                    "--batch_size", "4", "--include_path", str(tmp_path / "task"), "--tasks", "textvqa_local",
                    "--output_path", str(tmp_path / "results")], env=env, check=True, capture_output=True)  # fmt: skip
    # lmms-eval exits 0 even when evaluation fails: the results file is the proof.
    results_files = list((tmp_path / "results").rglob("*_results.json"))
    assert len(results_files) == 1
    metrics = json.loads(results_files[0].read_text())["results"]["textvqa_local"]
    lmms_score = metrics["exact_match,none"]
    # The same model and questions through the native runner and scorer give the same accuracy.
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import piip_llava.model  # noqa: F401

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "tiny").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "tiny")
    native = run_questions(model, processor, get_benchmark("textvqa").load(questions, images),
                           tmp_path / "native.jsonl", max_new_tokens=16)  # fmt: skip
    assert lmms_score * 100 == get_benchmark("textvqa").score(native, annotations)["accuracy"]
