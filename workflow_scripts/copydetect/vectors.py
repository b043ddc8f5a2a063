"""Row-vector helpers shared by the embedders and the search."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


def l2_normalize(x: np.ndarray, dtype: DTypeLike = np.float64) -> np.ndarray:
    """Rows scaled to unit L2 norm, computed in ``dtype`` (None: the input's); zero rows stay
    zero instead of becoming NaN."""
    x = np.asarray(x, dtype=dtype)
    norms = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.maximum(norms, 1e-12)
