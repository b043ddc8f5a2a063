"""Test images shared by the verification and gallery tests."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def edited_copy(rgb: np.ndarray, angle: float = 15.0, scale: float = 0.7) -> np.ndarray:
    """Rotate about the center, crop away the borders unevenly, and rescale."""
    h, w = rgb.shape[:2]
    rotation = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rotated = cv2.warpAffine(rgb, rotation, (w, h), borderMode=cv2.BORDER_REFLECT)
    cropped = rotated[h // 10 : h - h // 20, w // 8 : w - w // 30]
    return cv2.resize(cropped, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
