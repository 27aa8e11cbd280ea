"""The terminal chat (piip_llava/serve/cli.py): the real command with piped stdin, and the loop in-process (history,
image on the first turn only, empty line exits, a failed turn is reported and dropped)."""

import base64
import io
import os
import subprocess
import sys

import pytest

from piip_llava.serve.cli import chat, main
from piip_llava.serve.engine import GenerationEngine
from tests.conftest import solid_image


def test_cli_answers_two_piped_turns_and_exits(served_model_dir, tmp_path):
    image = tmp_path / "red.png"
    solid_image().save(image)
    command = [
        sys.executable,
        "-m",
        "piip_llava.serve.cli",
        "--model-path",
        str(served_model_dir),
        "--image-file",
        str(image),
    ]
    result = subprocess.run(
        [*command, "--max-new-tokens", "16"],
        input="What is this?\nAnd now?\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    turns = result.stdout.split("ASSISTANT: ")
    assert len(turns) == 3, result.stdout  # two answers
    assert all(turn.split("\n")[0].strip() for turn in turns[1:]), result.stdout  # each answer non-empty
    assert result.stdout.count("USER: ") == 3  # asked three times; the third read hits EOF


def test_cli_error_for_missing_image_file(served_model_dir, tmp_path, capsys):
    assert main(["--model-path", str(served_model_dir), "--image-file", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


class _RecordingEngine(GenerationEngine):
    def stream(self, request):
        self.requests.append(request)
        return super().stream(request)


@pytest.fixture(scope="module")
def engine(tiny_llava):
    model, processor = tiny_llava
    engine = _RecordingEngine(model, processor, "tiny", default_max_new_tokens=8)
    yield engine
    engine.close()


def _b64_png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_chat_keeps_history_and_sends_the_image_with_the_first_turn_only(engine):
    engine.requests = []
    image = _b64_png(solid_image())
    output = io.StringIO()
    answered = chat(engine, image, temperature=0.0, stdin=io.StringIO("first?\nsecond?\n\nnever read\n"), stdout=output)
    assert answered == 2
    first, second = engine.requests
    assert [m.role for m in second.messages] == ["user", "assistant", "user"]
    assert [part.type for part in second.messages[0].content] == ["image", "text"]
    assert second.messages[0].content[0].image == image
    assert second.messages[2].content == "second?"
    first_answer = output.getvalue().split("ASSISTANT: ")[1].split("\n")[0]
    assert second.messages[1].content == first_answer
    assert first.temperature == 0.0 and first.max_new_tokens is None  # the engine's default limit applies


def test_chat_reports_a_failed_turn_and_goes_on(engine):
    engine.requests = []
    output = io.StringIO()
    answered = chat(engine, "bm90IGFuIGltYWdl", stdin=io.StringIO("bad image?\n"), stdout=output)
    assert answered == 0
    assert "[error: " in output.getvalue() and "decode the image" in output.getvalue()
