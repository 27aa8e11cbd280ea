"""`bash serve/launch_local.sh MODEL_DIR`: the one-line local stack comes up, answers, and Ctrl-C stops it all."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from piip_llava.serve.launch import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_launch_local_script(served_model_dir, tmp_path):
    ports = {name: free_port() for name in ("controller", "worker", "api")}
    command = [
        "bash", "serve/launch_local.sh", served_model_dir, "--no-web", "--log-dir", str(tmp_path),
        "--controller-port", str(ports["controller"]), "--worker-port", str(ports["worker"]),
        "--api-port", str(ports["api"]), "--model-name", "launched-model", "--dtype", "bfloat16",
    ]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any("Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stderr.readline())
        assert any(f"http://127.0.0.1:{ports['api']}/v1" in line for line in lines)
        api = f"http://127.0.0.1:{ports['api']}"
        assert any("serving launched-model" in line for line in lines)
        models = httpx.get(f"{api}/v1/models", timeout=10).json()["data"]
        assert [model["id"] for model in models] == ["launched-model"]  # --model-name, not the directory's name
        body = {"model": "launched-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        assert httpx.post(f"{api}/v1/chat/completions", json=body, timeout=60).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    worker_log = (tmp_path / f"worker-{ports['worker']}.log").read_text()
    assert "on cpu in torch.bfloat16" in worker_log  # the launcher forwards --dtype to the worker
    for port in ports.values():  # every service is gone
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            raise AssertionError(f"port {port} still answers")
        except httpx.ConnectError:
            pass


def test_launch_local_script_forwards_model_base_and_bits_to_the_worker(lora_run, tmp_path):
    """A LoRA output needs --model-base (else the worker stops asking for it); with it, --load-4bit reaches the
    worker too, which on a machine without CUDA stops with bitsandbytes' error: both flags travelled."""
    base_dir, lora_dir = lora_run
    ports = {name: free_port() for name in ("controller", "worker", "api")}
    command = [
        "bash", "serve/launch_local.sh", str(lora_dir), "--no-web", "--log-dir", str(tmp_path), "--device", "cpu",
        "--controller-port", str(ports["controller"]), "--worker-port", str(ports["worker"]),
        "--api-port", str(ports["api"]), "--model-base", str(base_dir), "--load-4bit",
    ]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    worker_log = (tmp_path / f"worker-{ports['worker']}.log").read_text()
    assert "--load-4bit quantises with bitsandbytes, which needs a CUDA device" in worker_log, worker_log[-2000:]
