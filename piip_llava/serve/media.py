"""Images from requests: ``data:`` URLs, ``http(s)`` (only when enabled, public addresses only), ``file://`` (only
under an allowed folder). Every limit is checked before the memory it protects is taken: bytes while reading, the
pixel count and the largest canvas a later step will allocate (the square that ``pad`` draws, the strip that a
``crop`` resize makes of a very thin image) from the image header, before any pixel is decoded.

Remote media follows the policy of browsers and vLLM's ``--allowed-media-domains``: the host is resolved and every
address it resolves to must be public (no loopback, private, link-local, multicast, reserved or unspecified address,
IPv4-mapped IPv6 included), the connection goes to the address that was checked (no second lookup to rebind), each
redirect hop is checked the same way, and the whole fetch has one deadline and one byte cap. All refusals and
failures give the same message, so the server cannot be used to map which hosts and ports answer."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import logging
import os
import stat
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from .protocol import ApiError

logger = logging.getLogger(__name__)

MAX_PATH_CHARS = 1024
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class MediaPolicy:
    """Limits for images in requests.

    Args:
        max_image_bytes: largest encoded image accepted.
        max_image_pixels: largest ``width * height`` accepted, and largest canvas a later step may draw
            (``max(width, height) ** 2`` for padding to a square); checked from the header, before decoding.
        max_aspect_ratio: largest ``long side / short side`` (a 1x100000 strip resized to the model's size is a
            canvas of ``size * size * 100000`` pixels).
        max_images: images per request.
        allow_remote: fetch ``http(s)://`` URLs (public addresses only).
        allowed_media_domains: when set, remote URLs must be on one of these hosts (or their subdomains).
        allowed_local_path: folder that ``file://`` URLs must resolve into (``None``: ``file://`` refused).
        fetch_timeout: seconds for a whole remote fetch, redirects and body included.
    """

    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_aspect_ratio: float = 50.0
    max_images: int = 4
    allow_remote: bool = False
    allowed_media_domains: tuple[str, ...] = ()
    allowed_local_path: str | None = None
    fetch_timeout: float = 10.0


def decode_image(data: bytes, policy: MediaPolicy, param: str) -> Image.Image:
    """Bytes -> RGB image, or :class:`ApiError` naming ``param``."""
    if len(data) > policy.max_image_bytes:
        raise ApiError(f"image is {len(data)} bytes; the limit is {policy.max_image_bytes}", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            check_image_size(*image.size, policy, param)
            image.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ApiError(f"image refused: {error}", param=param) from error
    except Exception as error:  # PIL raises many types for bad bytes (UnidentifiedImageError, OSError, SyntaxError)
        raise ApiError(f"could not decode the image: {type(error).__name__}: {error}", param=param) from error
    return image.convert("RGB")


def check_image_size(width: int, height: int, policy: MediaPolicy, param: str) -> None:
    """Refuse an image whose pixels, padded square or aspect ratio would take more memory than the policy allows."""
    if width < 1 or height < 1:
        raise ApiError(f"image is {width}x{height} pixels", param=param)
    limit = policy.max_image_pixels
    if width * height > limit:
        raise ApiError(f"image is {width}x{height} pixels; the limit is {limit} pixels", param=param)
    if max(width, height) ** 2 > limit:
        raise ApiError(
            f"image is {width}x{height} pixels: padded to a square it is {max(width, height) ** 2} pixels; the "
            f"limit is {limit}",
            param=param,
        )
    if max(width, height) / min(width, height) > policy.max_aspect_ratio:
        raise ApiError(
            f"image is {width}x{height} pixels; the aspect ratio limit is {policy.max_aspect_ratio:g}:1", param=param
        )


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
    raw = urllib.parse.unquote(parsed.path)
    if "\x00" in raw or len(raw) > MAX_PATH_CHARS:
        raise ApiError(f"file:// path has a NUL byte or is over {MAX_PATH_CHARS} characters", param=param)
    folders = {Path(os.path.abspath(policy.allowed_local_path)), Path(policy.allowed_local_path).resolve()}
    outside = ApiError("file:// path is outside the allowed folder", param=param, code="forbidden_path")
    # Refused as written first, so that the answer for a path outside says nothing about whether it exists.
    if not any(Path(os.path.normpath(raw)).is_relative_to(folder) for folder in folders):
        raise outside
    try:
        path = Path(raw).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop (RuntimeError before Python 3.13), not permitted
        raise ApiError("no such file in the allowed folder", param=param) from None
    if not any(path.is_relative_to(folder) for folder in folders):  # a symlink in the folder pointing out of it
        raise outside
    return _read_regular_file(path, policy.max_image_bytes, param)


def _read_regular_file(path: Path, limit: int, param: str) -> bytes:
    """Open without following a symlink swapped in since ``resolve`` (``O_NOFOLLOW``) nor blocking on a FIFO
    (``O_NONBLOCK``), then check what was opened (``fstat`` on the descriptor, not the name: no check-then-use race)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        raise ApiError("no such file in the allowed folder", param=param) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ApiError("file:// path is not a regular file", param=param)
        if info.st_size > limit:
            raise ApiError(f"image file is over {limit} bytes", param=param)
        blocks, size = [], 0
        while size <= limit and (block := os.read(descriptor, limit + 1 - size)):
            blocks.append(block)
            size += len(block)
        data = b"".join(blocks)
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise ApiError(f"image file is over {limit} bytes", param=param)
    return data


def is_public_address(address: str) -> bool:
    """Whether an IP address may be fetched: globally routable unicast (IPv4-mapped/compatible IPv6 by their IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip.packed[:12] == bytes(12):  # deprecated IPv4-compatible ::a.b.c.d
            embedded = ipaddress.IPv4Address(ip.packed[12:])
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_private or ip.is_reserved or ip.is_unspecified)


class _Refused(Exception):
    """A remote fetch that must not or could not happen (reported to the client as one generic message)."""


def _domain_allowed(host: str, domains: tuple[str, ...]) -> bool:
    return not domains or any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains))


async def _public_address(host: str, port: int) -> str:
    """The first address of ``host``, if every address it resolves to is public (else :class:`_Refused`)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=0, proto=6)
    except OSError as error:
        raise _Refused(f"cannot resolve {host!r}") from error
    addresses = [info[4][0] for info in infos]
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise _Refused(f"{host!r} resolves to a non-public address {addresses}")
    return addresses[0]


async def _fetch_checked(client: httpx.AsyncClient, url: str, policy: MediaPolicy) -> bytes:
    """Follow up to :data:`MAX_REDIRECTS` redirects by hand, checking every hop's host and address."""
    for _ in range(MAX_REDIRECTS + 1):
        target = httpx.URL(url)
        host = (target.host or "").lower().rstrip(".")
        if target.scheme not in ("http", "https") or not host:
            raise _Refused(f"not an http(s) URL: {url[:100]}")
        if not _domain_allowed(host, policy.allowed_media_domains):
            raise _Refused(f"{host!r} is not an allowed media domain")
        port = target.port or (443 if target.scheme == "https" else 80)
        address = await _public_address(host, port)
        # Connect to the address that was checked; Host header and TLS name (SNI, certificate) stay the host's.
        pinned = target.copy_with(host=address if ":" not in address else f"[{address}]")
        request = client.build_request(
            "GET", pinned, headers={"Host": target.netloc.decode()}, extensions={"sni_hostname": host}
        )
        response = await client.send(request, stream=True)
        try:
            if response.is_redirect:
                url = str(target.join(response.headers.get("location", "")))
                continue
            if response.status_code != 200:
                raise _Refused(f"HTTP {response.status_code}")
            data = bytearray()
            async for block in response.aiter_bytes():
                data.extend(block)
                if len(data) > policy.max_image_bytes:
                    raise _Refused(f"over {policy.max_image_bytes} bytes")
            return bytes(data)
        finally:
            await response.aclose()
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


async def _remote_url(url: str, policy: MediaPolicy, param: str) -> bytes:
    if not policy.allow_remote:
        raise ApiError(
            "http(s) image URLs are disabled on this server (start it with --allow-remote-images)", param=param
        )
    try:
        async with asyncio.timeout(policy.fetch_timeout):
            async with httpx.AsyncClient(
                timeout=policy.fetch_timeout, follow_redirects=False, trust_env=False
            ) as client:
                return await _fetch_checked(client, url, policy)
    except (_Refused, httpx.HTTPError, httpx.InvalidURL, TimeoutError, ValueError) as error:
        logger.info("remote image %s refused: %s", url[:200], error)  # details for the operator, not the client
        raise ApiError(
            f"the image URL could not be fetched (it must be a public http(s) URL that answers within "
            f"{policy.fetch_timeout:g} s with an image of at most {policy.max_image_bytes} bytes)",
            param=param,
            code="image_fetch_failed",
        ) from None


async def fetch_image_bytes(url: str, policy: MediaPolicy, param: str) -> bytes:
    """The encoded bytes an ``image_url`` points to (validated as an image by the caller). Base64 decoding and file
    reads run in a thread: a 20 MB image does not hold up other requests."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return await asyncio.to_thread(_data_url, url, param)
    if scheme == "file":
        return await asyncio.to_thread(_file_url, url, policy, param)
    if scheme in ("http", "https"):
        return await _remote_url(url, policy, param)
    raise ApiError("image_url must be a data:, http(s): or file: URL", param=param)
