"""Open untrusted image files safely and turn any PIL image a dataset may hold into 8-bit RGB.

`load_rgb` is the one decode path: training (`mmft.data.collator.decode_image`), the pipelines, `mmft predict` and
`mmft explain` all call it, so a model is never asked about a different picture than the one it was trained on.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps


class ImageDataError(ValueError):
    """An image that cannot be used: unreadable, truncated, not an image, or over PIL's decompression-bomb limit."""


def open_image(source: str | bytes | io.BytesIO, decode: bool = True) -> Image.Image:
    """
    Open an image file (path or bytes); with `decode=False` only its header is read (cheap, for pre-training checks).

    PIL only *warns* between `Image.MAX_IMAGE_PIXELS` and twice that; here anything over the limit is an error, so a
    decompression bomb can never be decoded silently. Raise `Image.MAX_IMAGE_PIXELS` to accept bigger images.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():  # PIL's bomb warning is redundant: over the limit is an error below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            image.close()
            raise ImageDataError(
                f"{image.width}x{image.height} = {image.width * image.height:,} pixels is over the decompression-bomb "
                f"limit PIL.Image.MAX_IMAGE_PIXELS = {limit:,}; raise that limit if the image is genuine"
            )
        if decode:
            image.load()
        return image
    except ImageDataError:
        raise
    except Exception as error:  # noqa: BLE001 (PIL's decoders raise many types on malformed bytes; all mean "unreadable")
        raise ImageDataError(f"{type(error).__name__}: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """
    Convert grayscale, RGBA/LA, palette, CMYK and 16/32-bit images to 8-bit RGB, honouring EXIF rotation.

    Transparent pixels are composited on white (PIL's plain `convert("RGB")` would expose whatever colour the
    transparent pixels hold); 16-bit and 32-bit integer images are rescaled from their own range instead of clipped.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / high * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_source(image: dict[str, Any] | None) -> tuple[str | bytes | None, str]:
    """(what to open, a name for messages) of an undecoded `datasets` image {"path", "bytes"}."""
    if image is None:
        return None, "no image"
    if image.get("bytes") is not None:
        return image["bytes"], image.get("path") or "embedded bytes"
    return image.get("path"), image.get("path") or "no path"


def _fetched(source: str, timeout: float | None) -> bytes:
    """The bytes behind a URL or a base64 string (optionally a `data:image/...;base64,` URI)."""
    if source.startswith(("http://", "https://")):
        from urllib.request import urlopen

        with urlopen(source, timeout=timeout) as response:  # follows redirects; raises on HTTP errors
            return response.read()
    try:
        return base64.b64decode(source.split(",", 1)[1] if source.startswith("data:image/") else source, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDataError(f"{source[:80]!r} is not an existing file, an http(s) URL or a base64 image") from None


def load_rgb(image: Any, timeout: float | None = None) -> Image.Image:
    """
    Any image source as the 8-bit RGB image training sees: a PIL image, a file path, an undecoded `datasets` image
    ({"path", "bytes"}), raw bytes, an http(s) URL or a base64 string.

    Every source is opened with `open_image` and converted with `to_rgb` (EXIF rotation, transparency on white,
    16-bit rescaled). URLs are fetched here rather than by transformers' `load_image`, which flattens transparency
    with a plain `convert("RGB")`.
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, dict):
        image = image_source(image)[0]
        if image is None:
            raise ImageDataError("the dataset row has no image (neither path nor bytes)")
    if isinstance(image, (str, os.PathLike)) and (os.path.exists(image) or not isinstance(image, str)):
        image = os.fspath(image)
    elif isinstance(image, str):
        image = _fetched(image, timeout)
    with open_image(image) as opened:
        return to_rgb(opened)
