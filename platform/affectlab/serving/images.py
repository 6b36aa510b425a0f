"""Uploaded bytes → an RGB array, or a clear 4xx.

Pillow decodes, because it tells a truncated file apart from a whole one (OpenCV quietly
returns None or a half-grey picture). Phone photos are turned upright from their EXIF
orientation, and the pixel count is checked before any pixels are decoded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from affectlab.serving.layer import BadInput

MAX_PIXELS = 40_000_000  # 40 MP: larger than any camera photo, small enough to decode safely


def decode_image(data: bytes, field: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``data`` (PNG, JPEG, BMP, WebP, …) → uint8 RGB ``[H, W, 3]``; ``field`` names it in errors."""
    if not data:
        raise BadInput(422, f"field {field!r} is empty; expected an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise BadInput(413, f"field {field!r} is a {image.width}×{image.height} image; the limit is {max_pixels:,} pixels")
            image.load()
            image = ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise BadInput(422, f"field {field!r} is not an image (expected PNG, JPEG, BMP or WebP bytes)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInput(413, f"field {field!r}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's ways of saying truncated or corrupt
        raise BadInput(422, f"field {field!r} is a truncated or corrupt image ({e})") from None
    return np.asarray(image)
