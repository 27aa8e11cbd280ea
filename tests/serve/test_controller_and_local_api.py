"""Controller registry and dispatch, and the API server with a model of its own (no controller), in-process."""

import asyncio
import time

from fastapi.testclient import TestClient

from piip_llava.serve.api_router import build_app
from piip_llava.serve.controller import Controller
from piip_llava.serve.engine import GenerationEngine
from piip_llava.serve.media import MediaPolicy
from piip_llava.serve.serving import LocalBackend, OpenAIServingChat


def _status(models, queue_length=0, speed=1):
    return {"model_names": models, "speed": speed, "queue_length": queue_length}


def test_shortest_queue_dispatch_and_expiry():
    controller = Controller("shortest_queue", heart_beat_expiration=0.2)
    asyncio.run(controller.register("http://a", True, _status(["m"], queue_length=3)))
    asyncio.run(controller.register("http://b", True, _status(["m", "n"], queue_length=1)))
    asyncio.run(controller.register("http://c", False, _status(["n"], queue_length=0)))
    assert controller.list_models() == ["m", "n"]
    assert controller.worker_address("m") == "http://b"  # 1 < 3
    assert controller.worker_address("m") == "http://b"  # now 2 < 3
    assert controller.worker_address("m") == "http://a"  # tie at 3: registration order
    assert controller.worker_address("m", exclude=("http://a", "http://b")) == ""
    assert controller.worker_address("unknown") == ""
    time.sleep(0.3)
    assert controller.heart_beat("http://a", 0)  # a beat keeps a alive
    controller.remove_stale()
    assert sorted(controller.workers) == ["http://a", "http://c"]  # b missed its beat; c is never checked
    assert not controller.heart_beat("http://b", 0)  # tells b to register again
    assert controller.status() == {"model_names": ["m", "n"], "speed": 2.0, "queue_length": 0}


def test_lottery_dispatch_follows_speed():
    controller = Controller("lottery")
    asyncio.run(controller.register("http://fast", True, _status(["m"], speed=9)))
    asyncio.run(controller.register("http://slow", True, _status(["m"], speed=1)))
    picks = [controller.worker_address("m") for _ in range(2000)]
    assert 0.85 < picks.count("http://fast") / len(picks) < 0.95


def test_api_with_its_own_model(tiny_llava):
    model, processor = tiny_llava
    engine = GenerationEngine(model, processor, "tiny")
    app = build_app(OpenAIServingChat(LocalBackend(engine), MediaPolicy()), api_keys=["k1", "k2"])
    try:
        with TestClient(app) as client:
            headers = {"Authorization": "Bearer k2"}
            assert client.get("/v1/models", headers=headers).json()["data"][0]["id"] == "tiny"
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0}
            answer = client.post("/v1/chat/completions", json=body, headers=headers).json()
            assert answer["usage"]["completion_tokens"] <= 5
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers) as r:
                lines = [line for line in r.iter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            assert client.post("/v1/chat/completions", json=body).status_code == 401
    finally:
        engine.close()


def test_controller_refuses_malformed_bodies_with_400():
    from piip_llava.serve.controller import build_app as build_controller_app

    client = TestClient(build_controller_app(Controller()))
    cases = {
        "/register_worker": [b"{", b"[]", b"{}", b'{"worker_name": 5}',
                             b'{"worker_name": "http://w", "worker_status": {"model_names": "m"}}',
                             b'{"worker_name": "http://w", "worker_status": {"model_names": ["m"], "speed": "fast"}}'],
        "/get_worker_address": [b"{}", b'{"model": null}', b'{"model": "m", "exclude": 5}'],
        "/receive_heart_beat": [b"{}", b'{"worker_name": "w", "queue_length": "many"}'],
        "/worker_generate_stream": [b"{}", b'{"model": ' + b"[" * 5000 + b"]" * 5000 + b"}"],
    }  # fmt: skip
    for path, bodies in cases.items():
        for body in bodies:
            response = client.post(path, content=body)
            assert response.status_code == 400, (path, body[:60], response.status_code, response.text[:200])
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert client.post("/list_models").json() == {"models": []}  # nothing half-registered
