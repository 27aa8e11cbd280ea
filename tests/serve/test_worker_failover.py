"""Two workers behind one controller: SIGKILL the one that is streaming. Its client gets an error event, the
controller drops it within the heart-beat expiry, and new requests succeed on the other worker."""

import signal
import time

import httpx
import openai
import pytest

from tests.serve.conftest import MODEL_NAME, serving_stack

EXPIRATION = 3.0


def _busy_worker(workers, deadline: float):
    """The worker whose queue is non-empty (the one generating our stream)."""
    while time.monotonic() < deadline:
        for worker in workers:
            address = worker.health_url.removesuffix("/health")
            if httpx.post(f"{address}/worker_get_status").json()["queue_length"] > 0:
                return worker
        time.sleep(0.01)
    raise AssertionError("no worker reported the running request")


def test_sigkill_one_worker_mid_stream(served_model_dir, tmp_path):
    worker_args = ("--heart-beat-interval", "0.5")
    with serving_stack(served_model_dir, tmp_path, workers=2, expiration=EXPIRATION, worker_args=worker_args) as (
        api,
        controller,
        workers,
    ):
        client = openai.OpenAI(base_url=f"{api}/v1", api_key="none", max_retries=0, timeout=60)
        stream = client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "Tell a long story."}],
            max_tokens=3000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        received = []
        with pytest.raises(openai.APIError, match="worker"):
            for chunk in stream:
                received.append(chunk)
                if len(received) == 5:
                    victim = _busy_worker(workers, time.monotonic() + 10)
                    victim.process.send_signal(signal.SIGKILL)
        assert len(received) < 3000  # cut off mid-stream, not finished
        killed_at = time.monotonic()

        victim_address = victim.health_url.removesuffix("/health")
        while victim_address in httpx.post(f"{controller}/list_workers").json()["workers"]:
            assert time.monotonic() - killed_at < EXPIRATION + 2.0, "the controller kept the dead worker"
            time.sleep(0.1)
        dropped_after = time.monotonic() - killed_at
        assert dropped_after <= EXPIRATION + 2.0

        survivors = [w for w in workers if w is not victim]
        assert list(httpx.post(f"{controller}/list_workers").json()["workers"]) == [
            s.health_url.removesuffix("/health") for s in survivors
        ]
        for _ in range(3):
            answer = client.chat.completions.create(
                model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert answer.choices[0].finish_reason in ("stop", "length")


def test_dead_worker_is_skipped_before_the_controller_expires_it(served_model_dir, tmp_path):
    """Right after a kill (long expiry, so the controller still lists it) requests go to the live worker."""
    with serving_stack(served_model_dir, tmp_path, workers=2, expiration=60.0) as (api, controller, workers):
        workers[0].process.send_signal(signal.SIGKILL)
        workers[0].process.wait()
        client = openai.OpenAI(base_url=f"{api}/v1", api_key="none", max_retries=0, timeout=60)
        for _ in range(4):
            answer = client.chat.completions.create(
                model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            assert answer.usage.completion_tokens >= 1
