"""Serving fixtures: a tiny model saved to disk, and real server processes on 127.0.0.1 (free ports)."""

import contextlib
import os

import pytest

from piip_llava.serve.launch import Service, api_service, controller_service, free_port, wait_for_model, worker_service

MODEL_NAME = "tiny"


@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory):
    from piip_llava.model.tiny import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("serve") / MODEL_NAME))


@contextlib.contextmanager
def running(*services: Service):
    """Start the services in order (each ready before the next), stop them all afterwards."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    started = []
    try:
        for service in services:
            started.append(service.start(env))
            service.wait_ready()
        yield services
    finally:
        for service in reversed(started):
            service.stop()


@contextlib.contextmanager
def serving_stack(model_dir, log_dir, workers: int = 1, api_args=(), expiration: float = 30.0, worker_args=()):
    """Controller + ``workers`` model workers + OpenAI API; yields ``(api_url, controller_url, worker_services)``."""
    controller_port = free_port()
    controller = f"http://127.0.0.1:{controller_port}"
    worker_list = [worker_service(model_dir, free_port(), controller, log_dir, *worker_args) for _ in range(workers)]
    api_port = free_port()
    services = [
        controller_service(controller_port, log_dir, expiration),
        *worker_list,
        api_service(api_port, controller, log_dir, *api_args),
    ]
    with running(*services):
        wait_for_model(controller, MODEL_NAME)
        if workers > 1:  # all registered, not just the first
            import time

            import httpx

            deadline = time.monotonic() + 30
            while len(httpx.post(f"{controller}/list_workers").json()["workers"]) < workers:
                assert time.monotonic() < deadline, "workers did not all register"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{api_port}", controller, worker_list
