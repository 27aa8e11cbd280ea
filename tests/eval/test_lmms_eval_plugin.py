"""The lmms-eval plugin: the real `lmms-eval` CLI under `accelerate launch` (2 processes, offline TextVQA-format
set) against the native runner; generation grouped by settings; loglikelihood against the model's own loss."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lmms_eval.api.instance import Instance

from piip_llava.data.synthetic import write_textvqa_set
from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.runner import run_questions
from piip_llava.model.tiny import save_tiny_model
from tests.conftest import solid_image
from tests.train.test_two_stage_deepspeed import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("lmms") / "tiny")


def test_lmms_eval_data_parallel_matches_the_native_runner(tiny_dir, tmp_path):
    questions, annotations, images = write_textvqa_set(tmp_path / "set", count=7)  # odd: one rank gets a pad
    subprocess.run([sys.executable, str(ROOT / "eval/lmms_eval_tasks/textvqa_local/make_textvqa_local.py"),
                    str(questions), str(annotations), str(images), str(tmp_path / "task")], check=True)  # fmt: skip
    # --multi_gpu picks accelerate's torchrun launcher; without CUDA, ACCELERATE_USE_CPU=1 makes each process join a
    # gloo group (--cpu alone would start a single process).
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    result = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                             str(free_port()), "-m", "lmms_eval", "eval", "--model", "piip_llava", "--model_args",
                             f"pretrained={tiny_dir}", "--batch_size", "2", "--include_path", str(tmp_path / "task"),
                             "--tasks", "textvqa_local", "--log_samples", "--output_path", str(tmp_path / "results")],
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "piip_llava: process 0 of 2" in log and "piip_llava: process 1 of 2" in log
    # lmms-eval exits 0 even when evaluation fails: the results and samples files are the proof.
    results_files = list((tmp_path / "results").rglob("*_results.json"))
    assert len(results_files) == 1, result.stderr[-3000:]
    metrics = json.loads(results_files[0].read_text())["results"]["textvqa_local"]
    samples = [json.loads(line) for path in (tmp_path / "results").rglob("*samples_textvqa_local.jsonl")
               for line in path.read_text().splitlines()]  # fmt: skip
    assert sorted(sample["doc_id"] for sample in samples) == list(range(7))  # every question once, from 2 ranks
    # The same model and questions through the native runner and scorer give the same accuracy.
    from piip_llava.model.loading import load_for_inference

    model, processor = load_for_inference(tiny_dir)
    native = run_questions(model, processor, get_benchmark("textvqa").load(questions, images),
                           tmp_path / "native.jsonl", max_new_tokens=16)  # fmt: skip
    native_score = get_benchmark("textvqa").score(native, annotations)["accuracy"]
    assert metrics["exact_match,none"] * 100 == pytest.approx(native_score)


@pytest.fixture(scope="module")
def plugin(tiny_dir):
    from piip_llava.eval.lmms_eval_plugin import PiipLlava

    lm = PiipLlava(pretrained=str(tiny_dir), batch_size=3)
    docs = {i: {"image": solid_image(((60 * i) % 256, 90, 200), (40 + 8 * i, 36))} for i in range(5)}
    lm.task_dict = {"t": {"test": docs}}
    return lm


def request(kind: str, doc_id: int, context: str, second, visual=True) -> Instance:
    doc_to_visual = (lambda doc: [doc["image"]]) if visual else None
    metadata = {"task": "t", "doc_id": doc_id, "repeats": 1}
    return Instance(kind, (context, second, doc_to_visual, doc_id, "t", "test"), idx=0, metadata=metadata)


def test_generation_groups_requests_by_their_settings(plugin):
    short, long = {"max_new_tokens": 1, "until": []}, {"max_new_tokens": 6, "until": []}
    mixed = [request("generate_until", i, f"What is shown, {i}?", short if i % 2 else long) for i in range(5)]
    together = plugin.generate_until(mixed)
    alone = [plugin.generate_until([r])[0] for r in mixed]
    assert together == alone  # no request ran with another group's max_new_tokens, and order is kept
    assert any(len(plugin.processor.tokenizer(a)["input_ids"]) > 2 for a in together[::2])


def test_loglikelihood_is_the_mean_continuation_loss_of_the_model(plugin):
    from piip_llava.model.generation import chat_continuation

    requests = [request("loglikelihood", i, "Which colour?", f" {word}", visual=i != 3)
                for i, word in enumerate(["red", "a blue square", "B", "green", "left of the circle"])]  # fmt: skip
    batched = plugin.loglikelihood(requests)
    for req, (value, greedy) in zip(requests, batched):
        context, continuation, doc_to_visual, doc_id, _, _ = req.args
        images = [plugin.task_dict["t"]["test"][doc_id]["image"]] if doc_to_visual else []
        whole = chat_continuation(context, continuation, plugin.template, len(images))
        assert whole.endswith("ASSISTANT: " + continuation.strip())  # vicuna spacing, no end-of-turn token
        inputs = plugin.processor(text=[whole], images=images or None)
        prompt_ids = plugin.processor(text=[whole[: -len(continuation.strip()) - 1]], images=images or None)
        count = inputs["input_ids"].shape[1] - prompt_ids["input_ids"].shape[1]
        labels = inputs["input_ids"].clone()
        labels[:, :-count] = -100
        with torch.no_grad():
            loss = plugin.model(**inputs, labels=labels).loss  # HF's shifted token cross-entropy
        assert value == pytest.approx(float(loss), rel=1e-4)
        assert value > 0 and isinstance(greedy, bool)
    (alone, _), *_ = plugin.loglikelihood(requests[:1])
    assert alone == pytest.approx(batched[0][0], rel=1e-4)  # left padding in a batch changes nothing
