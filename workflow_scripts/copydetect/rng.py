"""Seeded random generators that do not depend on the order things are drawn in."""

from __future__ import annotations

import random


def purpose_rng(seed: int, *purpose: object) -> random.Random:
    """An independent generator per purpose (an image, a split): adding an item never shifts the
    draws of another.

    ``random.Random`` hashes a str seed with SHA-512, so this does not depend on PYTHONHASHSEED.
    """
    return random.Random(":".join(str(p) for p in (seed, *purpose)))
