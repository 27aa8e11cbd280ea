"""Media policy in-process: which addresses a remote fetch may reach (every redirect hop checked), the canvas
limits, and ``file://`` reads."""

import asyncio
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from piip_llava.serve import media
from piip_llava.serve.media import MediaPolicy, check_image_size, fetch_image_bytes, is_public_address
from piip_llava.serve.protocol import ApiError

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2001:4860:4860::8888"]
NOT_PUBLIC = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.0.1",
    "169.254.169.254", "100.64.0.1", "224.0.0.1", "239.255.255.250", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "240.0.0.1", "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "2002:7f00:1::", "2002:a00:1::", "64:ff9b::7f00:1",
    "2001:db8::1", "not an address", "",
]  # fmt: skip


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_may_be_fetched(address):
    assert is_public_address(address)


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_internal_addresses_may_not(address):
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "size, allowed",
    [((6000, 4000), True), ((1, 1), True), ((64, 3200), True), ((1, 100_000), False), ((1, 20_000), False),
     ((9000, 4000), False), ((60, 3600), False), ((0, 5), False)],
)  # fmt: skip
def test_canvas_limits(size, allowed):
    policy = MediaPolicy(max_image_pixels=40_000_000, max_aspect_ratio=50)
    if allowed:
        check_image_size(*size, policy, "p")
    else:
        with pytest.raises(ApiError):
            check_image_size(*size, policy, "p")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def local_server():
    """Serves ``/image.png``, ``/redirect?to=URL`` (a 302), ``/loop`` (a 302 to itself) and ``/drip`` (8 s of
    1 byte per 0.2 s) on 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/drip":  # a valid image, one byte every 0.2 s
                body = _png()[:40]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
                return
            if self.path.startswith("/redirect?to=") or self.path == "/loop":
                self.send_response(302)
                self.send_header("Location", self.path.split("=", 1)[1] if "=" in self.path else "/loop")
                self.end_headers()
                return
            body = _png()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def trusted_name(monkeypatch):
    """Pretend the name ``media.test`` is a public host at 127.0.0.1 (so the fetch itself can be tested here);
    every other host goes through the real check."""
    real = media._public_address

    async def resolve(host, port):
        return "127.0.0.1" if host == "media.test" else await real(host, port)

    monkeypatch.setattr(media, "_public_address", resolve)


def _fetch(url, **policy):
    return asyncio.run(fetch_image_bytes(url, MediaPolicy(allow_remote=True, **policy), "p"))


def test_fetch_connects_to_the_checked_address(local_server, trusted_name):
    assert _fetch(f"http://media.test:{local_server}/image.png") == _png()


def test_every_redirect_hop_is_checked(local_server, trusted_name):
    hop = f"http://media.test:{local_server}/image.png"
    assert _fetch(f"http://media.test:{local_server}/redirect?to={hop}") == _png()  # a public hop: followed
    with pytest.raises(ApiError) as refused:
        _fetch(f"http://media.test:{local_server}/redirect?to=http://127.0.0.1:{local_server}/image.png")
    with pytest.raises(ApiError) as direct:
        _fetch(f"http://127.0.0.1:{local_server}/image.png")
    assert refused.value.body() == direct.value.body()  # one message for every refusal


def test_domain_allowlist(local_server, trusted_name):
    url = f"http://media.test:{local_server}/image.png"
    assert _fetch(url, allowed_media_domains=("test",)) == _png()  # a subdomain of an allowed domain
    with pytest.raises(ApiError):
        _fetch(url, allowed_media_domains=("example.com",))


def test_a_slow_drip_hits_the_total_deadline(local_server, trusted_name):
    # Each read gets a byte well within any per-read timeout; only a deadline on the whole fetch stops it.
    with pytest.raises(ApiError, match="could not be fetched"):
        _fetch(f"http://media.test:{local_server}/drip", fetch_timeout=1.0)


def test_redirect_loops_end(local_server, trusted_name):
    with pytest.raises(ApiError):
        _fetch(f"http://media.test:{local_server}/loop")


def test_readme_documents_real_flags():
    """Every flag the README's serving-limits section names is a flag of the API server or the worker."""
    import argparse
    import re
    from pathlib import Path

    from piip_llava.serve.model_worker import add_engine_arguments
    from piip_llava.serve.openai_api import build_parser

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Serving limits and security", 1)[1].split("\n## ", 1)[0]
    worker = argparse.ArgumentParser()
    add_engine_arguments(worker)
    known = set(build_parser()._option_string_actions) | set(worker._option_string_actions)
    named = set(re.findall(r"`(--[a-z-]+)", section))
    assert named and named <= known, named - known


def test_file_refusals_say_nothing_about_files_outside(tmp_path):
    folder = tmp_path / "allowed"
    folder.mkdir()
    (tmp_path / "exists.png").write_bytes(_png())
    policy = MediaPolicy(allowed_local_path=str(folder))
    answers = []
    for outside in (tmp_path / "exists.png", tmp_path / "missing.png", f"{folder}/../exists.png"):
        with pytest.raises(ApiError) as refused:
            asyncio.run(fetch_image_bytes(f"file://{outside}", policy, "p"))
        answers.append(refused.value.body())
    assert answers[0] == answers[1] == answers[2]
    (folder / "in.png").write_bytes(_png())
    assert asyncio.run(fetch_image_bytes(f"file://{folder}/in.png", policy, "p")) == _png()
