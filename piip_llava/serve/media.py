"""Images from requests: ``data:`` URLs, ``http(s)`` (only when enabled), ``file://`` (only under an allowed
folder); size and pixel limits are checked before any pixel is decoded, so a decompression bomb costs nothing."""

from __future__ import annotations

import base64
import binascii
import io
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from .protocol import ApiError


@dataclass(frozen=True)
class MediaPolicy:
    """Limits for images in requests.

    Args:
        max_image_bytes: largest encoded image accepted.
        max_image_pixels: largest ``width * height`` accepted (checked from the header, before decoding).
        max_images: images per request.
        allow_remote: fetch ``http(s)://`` URLs.
        allowed_local_path: folder that ``file://`` URLs must resolve into (``None``: ``file://`` refused).
        fetch_timeout: seconds for a remote fetch.
    """

    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images: int = 4
    allow_remote: bool = False
    allowed_local_path: str | None = None
    fetch_timeout: float = 5.0


def decode_image(data: bytes, policy: MediaPolicy, param: str) -> Image.Image:
    """Bytes -> RGB image, or :class:`ApiError` naming ``param``."""
    if len(data) > policy.max_image_bytes:
        raise ApiError(f"image is {len(data)} bytes; the limit is {policy.max_image_bytes}", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > policy.max_image_pixels:
                raise ApiError(
                    f"image is {width}x{height} pixels; the limit is {policy.max_image_pixels} pixels", param=param
                )
            image.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ApiError(f"image refused: {error}", param=param) from error
    except Exception as error:  # PIL raises many types for bad bytes (UnidentifiedImageError, OSError, SyntaxError)
        raise ApiError(f"could not decode the image: {type(error).__name__}: {error}", param=param) from error
    return image.convert("RGB")


def decode_base64(text: str, param: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(f"invalid base64 image data: {error}", param=param) from error


def _data_url(url: str, param: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ApiError("data URLs must look like data:image/<type>;base64,<data>", param=param)
    mime = header[len("data:") : -len(";base64")]
    if not mime.startswith("image/"):
        raise ApiError(f"data URL media type {mime!r} is not an image type", param=param)
    return decode_base64(payload, param)


def _file_url(url: str, policy: MediaPolicy, param: str) -> bytes:
    if policy.allowed_local_path is None:
        raise ApiError(
            "file:// URLs are disabled on this server (start it with --allowed-local-media-path)", param=param
        )
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ApiError("file:// URLs must name a local path (file:///path)", param=param)
    path = Path(urllib.parse.unquote(parsed.path)).resolve()
    allowed = Path(policy.allowed_local_path).resolve()
    if not path.is_relative_to(allowed):
        raise ApiError(f"file:// path is outside the allowed folder {allowed}", param=param, code="forbidden_path")
    if not path.is_file():
        raise ApiError(f"no such file: {path}", param=param)
    if path.stat().st_size > policy.max_image_bytes:
        raise ApiError(f"image file is over {policy.max_image_bytes} bytes", param=param)
    return path.read_bytes()


async def _remote_url(url: str, policy: MediaPolicy, param: str) -> bytes:
    if not policy.allow_remote:
        raise ApiError(
            "http(s) image URLs are disabled on this server (start it with --allow-remote-images)", param=param
        )
    try:
        async with httpx.AsyncClient(timeout=policy.fetch_timeout, follow_redirects=True) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ApiError(f"fetching the image returned HTTP {response.status_code}", param=param)
                data = bytearray()
                async for block in response.aiter_bytes():
                    data.extend(block)
                    if len(data) > policy.max_image_bytes:
                        raise ApiError(f"image is over {policy.max_image_bytes} bytes", param=param)
                return bytes(data)
    except httpx.HTTPError as error:
        raise ApiError(f"could not fetch the image: {error}", param=param) from error


async def fetch_image_bytes(url: str, policy: MediaPolicy, param: str) -> bytes:
    """The encoded bytes an ``image_url`` points to (validated as an image by the caller)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return _data_url(url, param)
    if scheme == "file":
        return _file_url(url, policy, param)
    if scheme in ("http", "https"):
        return await _remote_url(url, policy, param)
    raise ApiError("image_url must be a data:, http(s): or file: URL", param=param)
