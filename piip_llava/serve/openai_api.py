"""OpenAI-compatible server, in front of a controller (``--controller-address``) or with a model of its own
(``--model-path``).

    python -m piip_llava.serve.openai_api --controller-address http://127.0.0.1:21001 --port 8000
    python -m piip_llava.serve.openai_api --model-path DIR --port 8000 --api-key sk-local
"""

from __future__ import annotations

import argparse
import logging
import os

from .http import serve_app
from .media import MediaPolicy
from .model_worker import add_engine_arguments, engine_from_args
from .serving import ControllerBackend, LocalBackend, OpenAIServingChat

API_KEY_ENV = "PIIP_LLAVA_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--controller-address", help="serve the models of this controller's workers")
    source.add_argument("--model-path", help="load this model directory in this process")
    add_engine_arguments(parser, model_path=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", action="append", default=[], help=f"repeatable; also ${API_KEY_ENV}")
    parser.add_argument(
        "--allow-remote-images", action="store_true", help="fetch http(s) image URLs (public addresses only)"
    )
    parser.add_argument(
        "--allowed-media-domains", nargs="+", default=[], help="with --allow-remote-images: only these hosts"
    )
    parser.add_argument(
        "--media-fetch-timeout", type=float, default=10.0, help="seconds for a whole remote fetch (default 10)"
    )
    parser.add_argument("--allowed-local-media-path", help="folder that file:// image URLs may read from")
    parser.add_argument("--max-image-bytes", type=int, default=20 << 20, help="default 20 MiB")
    parser.add_argument("--max-body-bytes", type=int, default=64 << 20, help="request body limit (default 64 MiB)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    media = MediaPolicy(
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        max_aspect_ratio=args.max_image_aspect_ratio,
        max_images=args.max_images_per_request,
        allow_remote=args.allow_remote_images,
        allowed_media_domains=tuple(args.allowed_media_domains),
        allowed_local_path=args.allowed_local_media_path,
        fetch_timeout=args.media_fetch_timeout,
    )
    if args.model_path:
        backend = LocalBackend(engine_from_args(args, media))
    else:
        backend = ControllerBackend(args.controller_address)
    keys = args.api_key + [os.environ.get(API_KEY_ENV, "")]
    from .api_router import build_app

    serve_app(build_app(OpenAIServingChat(backend, media), keys, args.max_body_bytes), args.host, args.port)


if __name__ == "__main__":
    main()
