"""A run killed (SIGKILL) right after checkpoint k and restarted resumes and reproduces the uninterrupted losses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from piip_llava.model.tiny import save_tiny_model
from tests.conftest import write_llava_data

# Runs training in a child process; with KILL_AT_STEP set, SIGKILLs itself once that checkpoint is on disk.
CHILD = """
import os, signal, sys
import piip_llava.train.train as entry

class KillAfterSave(entry.JsonlLogCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ.get("KILL_AT_STEP", "-1")):
            os.kill(os.getpid(), signal.SIGKILL)

entry.JsonlLogCallback = KillAfterSave
sys.exit(entry.train(sys.argv[1:]))
"""

STAGES = {
    "stage1": ["--template", "plain", "--tunable_parts", "projector", "--learning_rate", "1e-3"],
    "stage2": ["--template", "vicuna_v1", "--tunable_parts", "projector,vision_branches,interactions,llm",
               "--learning_rate", "1e-4", "--group_by_modality_length"],
}  # fmt: skip


def run(args, kill_at=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if kill_at is not None:
        env["KILL_AT_STEP"] = str(kill_at)
    return subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, timeout=600)


def losses_by_step(output: Path) -> dict[int, float]:
    """Last logged loss per step (a resumed run re-logs the steps after its checkpoint)."""
    result = {}
    for line in (output / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            result[record["step"]] = record["loss"]
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    save_tiny_model(root / "base")
    return root, write_llava_data(root / "data", count=30)


@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_run_resumes_exactly(workspace, stage):
    root, data = workspace
    common = ["--model_name_or_path", str(root / "base"), "--data_path", str(data), "--image_folder",
              str(data.parent / "images"), "--per_device_train_batch_size", "4", "--max_steps", "10",
              "--save_steps", "1", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "--seed", "1",
              "--dataloader_num_workers", "0", *STAGES[stage]]  # fmt: skip
    straight = run([*common, "--output_dir", str(root / f"{stage}-straight")])
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run([*common, "--output_dir", str(root / f"{stage}-killed")], kill_at=4)
    assert killed.returncode != 0  # SIGKILL: no final save, no clean shutdown
    assert not (root / f"{stage}-killed" / "model.safetensors").exists()
    resumed = run([*common, "--output_dir", str(root / f"{stage}-killed")])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "checkpoint-4" in resumed.stderr
    expected, actual = losses_by_step(root / f"{stage}-straight"), losses_by_step(root / f"{stage}-killed")
    assert sorted(expected) == sorted(actual) == list(range(1, 11))
    for step in range(5, 11):
        assert abs(actual[step] - expected[step]) <= 1e-4, (step, actual[step], expected[step])
