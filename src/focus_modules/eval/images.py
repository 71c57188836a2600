"""Decoding of benchmark images: files, base64 strings and raw encoded bytes.

Every failure to produce pixels raises :class:`ImageDecodeError` with the reason, so the
runner can turn exactly these failures (and no others) into error rows.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from focus_modules.adapters.views import rgb_as_displayed

# Magic numbers of the encodings PIL reads in benchmark files; raw bytes that start with one of
# these are an encoded image, anything else is taken as base64 text.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
# Largest image decoded (pixels): 2**30 (1074 MP) is 3.2 GB as RGB. Pillow's own guard against
# decompression bombs (179 MP) would refuse real high-resolution benchmark images.
MAX_PIXELS = 2**30


class ImageDecodeError(ValueError):
    """An image could not be read or decoded; the message says which and why."""


def decode_image_bytes(data: bytes | str, source: str, upright: bool = True) -> Image.Image:
    """Decode an encoded image given as raw bytes or base64 text into an RGB PIL image.

    Args:
        data: the encoded file (JPEG, PNG, ...) as bytes, or its base64 encoding as ``str`` or
            ``bytes``.
        source: where the data came from, used in error messages (e.g. ``"hr_bench_4k.tsv row 7"``).
        upright: apply the EXIF orientation (as viewers do); ``False`` keeps the stored pixel
            frame, the one benchmark GT boxes and the benchmarks' own evaluation code use.

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
    return _open(io.BytesIO(data), source, upright)


def load_image_file(path: str | Path, upright: bool = True) -> Image.Image:
    """Read and fully decode an image file into an RGB PIL image (``upright``: as for
    :func:`decode_image_bytes`).

    Raises:
        ImageDecodeError: the file is missing, unreadable or not a complete image.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ImageDecodeError(f"{path}: cannot read image file ({err})") from err
    return _open(io.BytesIO(data), str(path), upright)


def read_image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` of the stored pixels, from the file's header; ``None`` if it cannot
    be read (decoding it then fails with the reason)."""
    try:
        with _pixel_limit(MAX_PIXELS), Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _open(stream: io.BytesIO, source: str, upright: bool) -> Image.Image:
    """Decode fully into RGB as a viewer shows the image (EXIF orientation, 16-bit scaling,
    transparency on grey: :func:`focus_modules.adapters.views.rgb_as_displayed`)."""
    try:
        with _pixel_limit(MAX_PIXELS):
            image = Image.open(stream)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(f"{source}: image of {width}x{height} ({width * height / 1e6:.0f} MP) is above "
                                       f"the decoding limit of {MAX_PIXELS / 1e6:.0f} MP")
            image.load()  # decode now: a truncated file must fail here, not inside the model
        return rgb_as_displayed(image, upright=upright)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"{source}: cannot decode image ({type(err).__name__}: {err})") from err


@contextlib.contextmanager
def _pixel_limit(pixels: int):
    """Pillow's decompression-bomb limit raised to ``pixels`` while one image is opened."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous
