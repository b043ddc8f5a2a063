"""A module-scoped autouse fixture that runs a test module's torch code on one thread.

Import it into a test module (``from torch_threads import one_torch_thread``) to apply it there.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny inputs gain nothing from threads, and on a busy machine OpenMP barriers between
    descheduled threads make them many times slower; restored for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
