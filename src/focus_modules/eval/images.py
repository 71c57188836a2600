"""Decoding of benchmark images: files, base64 strings and raw encoded bytes.

Every failure to produce pixels raises :class:`ImageDecodeError` with the reason, so the
runner can turn exactly these failures (and no others) into error rows. A JPEG above
:data:`MAX_PIXELS` is decoded at a reduced scale instead (the codec's own 1/2, 1/4 or 1/8
decoding); :func:`reduced_scale` tells the caller, which reports boxes in the full image's
pixels.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from focus_modules.adapters.views import rgb_as_displayed

# Magic numbers of the encodings PIL reads in benchmark files; raw bytes that start with one of
# these are an encoded image, anything else is taken as base64 text.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
# Largest image decoded in full (pixels): 2**30 (1074 MP) is 3.2 GB as RGB. Pillow's own guard
# against decompression bombs (179 MP) would refuse real high-resolution benchmark images; it is
# off while a header is read, and this limit is checked before any pixel is decoded.
MAX_PIXELS = 2**30
# Scales a JPEG decoder can decode at directly (DCT scaling), tried smallest reduction first.
JPEG_REDUCTIONS = (2, 4, 8)
# Key of Image.info holding the (x, y) factors from a reduced decode to the full image.
REDUCED_SCALE_KEY = "focus_modules.reduced_scale"


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
        with _pillow_pixel_limit_off(), Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _open(stream: io.BytesIO, source: str, upright: bool) -> Image.Image:
    """Decode fully into RGB as a viewer shows the image (EXIF orientation, 16-bit scaling,
    transparency on grey: :func:`focus_modules.adapters.views.rgb_as_displayed`)."""
    try:
        with _pillow_pixel_limit_off():
            image = Image.open(stream)
            width, height = image.size
            if width * height > MAX_PIXELS:
                _draft_below_limit(image, source)
            image.load()  # decode now: a truncated file must fail here, not inside the model
        shown = rgb_as_displayed(image, upright=upright)
        if image.size != (width, height):
            factors = (width / image.width, height / image.height)
            swapped = shown.size != image.size  # EXIF rotation by 90 degrees
            shown.info[REDUCED_SCALE_KEY] = factors[::-1] if swapped else factors
        return shown
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"{source}: cannot decode image ({type(err).__name__}: {err})") from err


def reduced_scale(image: Image.Image) -> tuple[float, float] | None:
    """``(x, y)`` factors from ``image``'s pixels to the full image's, if it was decoded at a
    reduced scale (a JPEG above :data:`MAX_PIXELS`); ``None`` if it was decoded in full."""
    return image.info.get(REDUCED_SCALE_KEY)


def reduced_scale_note(scale: tuple[float, float]) -> str:
    """The note a result carries when its image was decoded at a reduced ``scale``."""
    return (
        f"image decoded at 1/{round(max(scale))} scale (above the {MAX_PIXELS / 1e6:.0f} MP decoding limit); "
        "boxes are in the full image's pixels"
    )


def full_resolution_box(box, scale: tuple[float, float]) -> list[float]:
    """An ``(x1, y1, x2, y2)`` box of a reduced decode in the full image's pixels."""
    sx, sy = scale
    return [float(box[0]) * sx, float(box[1]) * sy, float(box[2]) * sx, float(box[3]) * sy]


def _draft_below_limit(image: Image.Image, source: str) -> None:
    """Set a JPEG to decode at the smallest reduction that brings it under MAX_PIXELS."""
    width, height = image.size
    too_big = (
        f"{source}: image of {width}x{height} ({width * height / 1e6:.0f} MP) is above the decoding limit of "
        f"{MAX_PIXELS / 1e6:.0f} MP"
    )
    if image.format != "JPEG":
        raise ImageDecodeError(f"{too_big} (only JPEGs can be decoded at a reduced scale)")
    for reduction in JPEG_REDUCTIONS:
        if math.ceil(width / reduction) * math.ceil(height / reduction) <= MAX_PIXELS:
            # Pillow picks the largest reduction r with w // r >= requested width (and height).
            image.draft(image.mode, (width // reduction, height // reduction))
            return
    raise ImageDecodeError(f"{too_big}, even at 1/{JPEG_REDUCTIONS[-1]} scale")


@contextlib.contextmanager
def _pillow_pixel_limit_off():
    """Pillow's decompression-bomb limit off while one image is opened (MAX_PIXELS is checked
    instead, before any pixel is decoded)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous
