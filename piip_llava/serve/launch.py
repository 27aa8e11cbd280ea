"""Start the whole serving stack for one model on this machine: controller, model worker(s), OpenAI API and the
Gradio web demo, each its own process (as in production), and wait until all answer.

    python -m piip_llava.serve.launch --model-path DIR            # Ctrl-C stops everything
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..model.loading import add_loading_arguments, loading_flags

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """A server process and the URL that answers once it is ready."""

    name: str
    command: list[str]
    health_url: str
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, env: dict | None = None) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child process owns it)
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode}; log tail:\n{tail}")
            try:
                if httpx.get(self.health_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s (log: {self.log_path})")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stop_all(services: list[Service], timeout: float = 10.0) -> None:
    """SIGTERM to every running service at once, then one shared deadline before SIGKILL: shutdown takes at most
    ``timeout`` seconds however many services there are (stopping them one by one took up to 10 s each)."""
    running = [s.process for s in services if s.process is not None and s.process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"piip_llava.serve.{name}", *map(str, args)]


def controller_service(port: int, log_dir: Path, expiration: float = 30.0) -> Service:
    url = f"http://127.0.0.1:{port}"
    command = _module("controller", "--port", port, "--heart-beat-expiration", expiration)
    return Service("controller", command, f"{url}/health", log_dir / "controller.log")


def worker_service(model_path: str, port: int, controller: str, log_dir: Path, *extra: str) -> Service:
    command = _module("model_worker", "--model-path", model_path, "--port", port, "--controller-address", controller)
    return Service(
        f"worker:{port}", [*command, *extra], f"http://127.0.0.1:{port}/health", log_dir / f"worker-{port}.log"
    )


def api_service(port: int, controller: str, log_dir: Path, *extra: str) -> Service:
    command = _module("openai_api", "--controller-address", controller, "--port", port, *extra)
    return Service("api", command, f"http://127.0.0.1:{port}/health", log_dir / "api.log")


def web_service(port: int, controller: str, log_dir: Path, *extra: str) -> Service:
    command = _module("gradio_web_server", "--controller-address", controller, "--port", port, *extra)
    return Service("web", command, f"http://127.0.0.1:{port}/", log_dir / "web.log")


def wait_for_model(controller: str, model: str, timeout: float = 60.0) -> None:
    """Until the controller lists ``model`` (workers register after they are up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if model in httpx.post(f"{controller}/list_models", timeout=2.0).json()["models"]:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"no worker registered {model!r} with {controller} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--controller-port", type=int, default=21001)
    parser.add_argument("--worker-port", type=int, default=21002)
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--web-port", type=int, default=7860)
    parser.add_argument("--model-name", help="name clients use (default: the model directory's name)")
    add_loading_arguments(parser)  # forwarded to the worker
    parser.add_argument("--log-dir", default="serve_logs")
    parser.add_argument("--api-key", help="require this key on the API (default: open, loopback only)")
    parser.add_argument("--no-web", action="store_true", help="controller, worker and API only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log_dir = Path(args.log_dir)
    controller = f"http://127.0.0.1:{args.controller_port}"
    model_name = args.model_name or Path(args.model_path).resolve().name
    worker_args = [*loading_flags(args), "--model-name", model_name]
    services = [
        controller_service(args.controller_port, log_dir),
        worker_service(args.model_path, args.worker_port, controller, log_dir, *worker_args),
        api_service(args.api_port, controller, log_dir, *(["--api-key", args.api_key] if args.api_key else [])),
    ]
    if not args.no_web:
        services.append(web_service(args.web_port, controller, log_dir, "--log-dir", str(log_dir / "web")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the children too, as Ctrl-C does
    # Ctrl-C even when started from a non-interactive shell's background job, which starts us with SIGINT ignored
    # (Python then installs no KeyboardInterrupt handler and the stack would outlive every Ctrl-C).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for service in services:
            logger.info("starting %s (log: %s)", service.name, service.log_path)
            service.start(env).wait_ready()
        wait_for_model(controller, model_name)
        logger.info("\nserving %s", model_name)
        logger.info("  OpenAI API : http://127.0.0.1:%d/v1  (GET /v1/models, POST /v1/chat/completions)", args.api_port)
        if not args.no_web:
            logger.info("  web demo   : http://127.0.0.1:%d", args.web_port)
        logger.info("  controller : %s\nCtrl-C stops all.", controller)
        while all(service.process.poll() is None for service in services):
            time.sleep(1.0)
        logger.error("a service exited; stopping the others (logs in %s)", log_dir)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(services)


if __name__ == "__main__":
    sys.exit(main())
