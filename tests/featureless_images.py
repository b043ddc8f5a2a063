"""Featureless and near-blank test images: flat colour, smooth gradients, near-blank pages.

None of them has structure a copy detector could recognise, so none may become strong
evidence of a copy (tests/test_layout.py, tests/test_featureless_run.py).
"""

from __future__ import annotations

import numpy as np


def _ramp(shape: tuple[int, int], angle_deg: float) -> np.ndarray:
    """A linear ramp from 0 to 1 across the image along ``angle_deg``."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    t = np.cos(np.radians(angle_deg)) * x + np.sin(np.radians(angle_deg)) * y
    return (t - t.min()) / max(t.max() - t.min(), 1e-9)


def _colour_mix(t: np.ndarray, start: tuple[int, int, int], end: tuple[int, int, int]):
    rgb = (1 - t[..., None]) * np.array(start) + t[..., None] * np.array(end)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def featureless_images(shape: tuple[int, int] = (240, 320), seed: int = 0) -> dict[str, np.ndarray]:
    """Named RGB uint8 images without structure: two flat colours, linear gradients of other
    colours and directions, a radial vignette, near-blank pages (faint noise, one dot)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    radius = np.hypot(x - w / 2, y - h / 2) / np.hypot(w / 2, h / 2)
    near_blank = np.clip(248 + rng.normal(0, 2.0, (h, w, 3)), 0, 255).astype(np.uint8)
    dotted = np.full((h, w, 3), 252, np.uint8)
    dotted[h // 3 : h // 3 + 3, w // 2 : w // 2 + 3] = 40
    return {
        "flat_grey": np.full((h, w, 3), 128, np.uint8),
        "flat_teal": np.full((h, w, 3), (20, 140, 150), np.uint8),
        "ramp_blue": _colour_mix(_ramp(shape, 0), (10, 40, 120), (150, 200, 255)),
        "ramp_sunset": _colour_mix(_ramp(shape, 90), (250, 120, 40), (60, 20, 90)),
        "ramp_diagonal": _colour_mix(_ramp(shape, 35), (230, 230, 230), (90, 90, 90)),
        "vignette": _colour_mix(np.clip(radius, 0, 1), (255, 240, 200), (120, 80, 40)),
        "near_blank": near_blank,
        "blank_dot": dotted,
    }
