"""Chat with a model in the terminal, without any server (docs/design.md#serving; LLaVA's ``llava/serve/cli.py``):
the model loads in-process in a :class:`~piip_llava.serve.engine.GenerationEngine`, the image goes with the first
turn, answers stream token by token, the conversation keeps its history; an empty line or end of input exits.

    python -m piip_llava.serve.cli --model-path DIR --image-file photo.jpg [--temperature 0.2] [--max-new-tokens 512]
    printf 'What is this?\\nAnd now?\\n' | python -m piip_llava.serve.cli --model-path DIR --image-file photo.jpg
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
from typing import TextIO

import httpx

from .engine import GenerationEngine
from .model_worker import add_engine_arguments, engine_from_args
from .protocol import ApiError, GenerateRequest

logger = logging.getLogger(__name__)


def read_image(location: str, timeout: float = 10.0) -> str:
    """A local path or an ``http(s)://`` URL -> base64 of the file's bytes (the worker protocol's image part)."""
    if location.startswith(("http://", "https://")):
        response = httpx.get(location, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        data = response.content
    else:
        with open(location, "rb") as handle:
            data = handle.read()
    return base64.b64encode(data).decode()


def chat(
    engine: GenerationEngine,
    image: str | None,
    temperature: float = 0.2,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    """The interactive loop; ``image`` is base64 (or ``None`` for text only). Returns the number of answered turns.

    A failed turn (prompt too long, bad image) prints the error and is dropped from the history, so the user can
    go on."""
    messages: list[dict] = []
    answered = 0
    while True:
        stdout.write("USER: ")
        stdout.flush()
        line = stdin.readline()
        if not line.strip():  # EOF ("") or an empty line
            stdout.write("\n")
            return answered
        content: str | list[dict] = line.strip()
        if image is not None and not messages:
            content = [{"type": "image", "image": image}, {"type": "text", "text": line.strip()}]
        messages.append({"role": "user", "content": content})
        request = GenerateRequest(
            model=engine.model_name,
            messages=messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
        )
        answer = _stream_answer(engine, request, stdout)
        if answer is None:
            messages.pop()
        else:
            messages.append({"role": "assistant", "content": answer})
            answered += 1


def _stream_answer(engine: GenerationEngine, request: GenerateRequest, stdout: TextIO) -> str | None:
    """Prints ``ASSISTANT: `` and the deltas as they come; the whole answer, or ``None`` after an error."""
    stdout.write("ASSISTANT: ")
    stdout.flush()
    pieces: list[str] = []
    try:
        for event in engine.stream(request):
            if "text" in event:
                pieces.append(event["text"])
                stdout.write(event["text"])
                stdout.flush()
            elif "error" in event:
                raise ApiError(event["error"].get("message", "generation failed"))
    except ApiError as error:
        stdout.write(f"\n[error: {error.message}]\n")
        stdout.flush()
        return None
    stdout.write("\n")
    stdout.flush()
    return "".join(pieces)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(parser)  # --model-path, --device, --dtype, --max-new-tokens (cap per answer), ...
    parser.add_argument("--image-file", help="local path or http(s) URL of the image (default: text only)")
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy (default 0.2)")
    parser.add_argument("--top-p", type=float, default=1.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        image = read_image(args.image_file) if args.image_file else None
    except (OSError, httpx.HTTPError) as error:
        print(f"error: cannot read --image-file {args.image_file}: {error}", file=sys.stderr)
        return 2
    engine = engine_from_args(args)
    try:
        # max_new_tokens=None: the engine's default, i.e. --max-new-tokens capped by the room left in the context.
        chat(engine, image, temperature=args.temperature, top_p=args.top_p)
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
