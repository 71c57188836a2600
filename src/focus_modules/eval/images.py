"""Decoding of benchmark images: files, base64 strings and raw encoded bytes.

Every failure to produce pixels raises :class:`ImageDecodeError` with the reason, so the
runner can turn exactly these failures (and no others) into error rows.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Magic numbers of the encodings PIL reads in benchmark files; raw bytes that start with one of
# these are an encoded image, anything else is taken as base64 text.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


class ImageDecodeError(ValueError):
    """An image could not be read or decoded; the message says which and why."""


def decode_image_bytes(data: bytes | str, source: str) -> Image.Image:
    """Decode an encoded image given as raw bytes or base64 text into an RGB PIL image.

    Args:
        data: the encoded file (JPEG, PNG, ...) as bytes, or its base64 encoding as ``str`` or
            ``bytes``.
        source: where the data came from, used in error messages (e.g. ``"hr_bench_4k.tsv row 7"``).

    Raises:
        ImageDecodeError: the base64 is invalid, or the bytes are not a complete image.
    """
    if isinstance(data, str):
        data = data.encode("ascii", errors="replace")
    if not data.startswith(_IMAGE_MAGIC):
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as err:
            raise ImageDecodeError(f"{source}: invalid base64 image data ({err})") from err
    return _open(io.BytesIO(data), source)


def load_image_file(path: str | Path) -> Image.Image:
    """Read and fully decode an image file into an RGB PIL image.

    Raises:
        ImageDecodeError: the file is missing, unreadable or not a complete image.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ImageDecodeError(f"{path}: cannot read image file ({err})") from err
    return _open(io.BytesIO(data), str(path))


def _open(stream: io.BytesIO, source: str) -> Image.Image:
    try:
        image = Image.open(stream)
        image.load()  # decode now: a truncated file must fail here, not inside the model
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(f"{source}: cannot decode image ({type(err).__name__}: {err})") from err
