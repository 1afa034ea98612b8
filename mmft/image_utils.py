"""Turn any PIL image a dataset may hold into the 8-bit RGB that every vision tower expects."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


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
