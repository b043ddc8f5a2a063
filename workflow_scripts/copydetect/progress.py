"""Progress lines in a long job's log: rows done / total, rate and ETA.

A job that runs for minutes (local search, verification, SIFT, ingest, embedding) logs
``12,400 / 98,000 query descriptors (12.7 %), 1,830/s, ETA 52 s`` at most every
``PROGRESS_EVERY_S`` seconds, plus one final line, so its log under ``results/logs/`` says how
far it is. The clock is injectable so tests need no sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PROGRESS_EVERY_S = 30.0
"""Seconds between two progress lines of one loop (the final line always comes)."""

_LOG = logging.getLogger("copydetect.progress")


@dataclass
class Progress:
    """Counts rows of one loop and logs where it stands every ``every_s`` seconds.

    Use ``advance(n)`` after each block and ``done()`` (or the context manager) at the end.
    """

    total: int
    what: str = "rows"
    # Read when a Progress is made, so a test can set the module constant for a whole script.
    every_s: float = field(default_factory=lambda: PROGRESS_EVERY_S)
    log: logging.Logger = _LOG
    clock: Callable[[], float] = time.monotonic
    count: int = 0
    _start: float = field(init=False)
    _last: float = field(init=False)
    _finished: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._start = self.clock()
        self._last = self._start

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:  # a failed loop's traceback says enough; no "done" line
            self.done()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more rows; log a line when ``every_s`` has passed since the last one."""
        self.count += n
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self.log.info("%s", self.line(now))

    def done(self) -> None:
        """Log the final line (once)."""
        if not self._finished:
            self._finished = True
            self.log.info("%s", self.line(self.clock(), final=True))

    def line(self, now: float, final: bool = False) -> str:
        """The progress line at time ``now``."""
        elapsed = now - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        head = f"{self.count:,} / {self.total:,} {self.what} ({percent(self.count, self.total)})"
        if final:
            return f"{head} done in {duration(elapsed)}, {rate:,.0f}/s"
        return f"{head}, {rate:,.0f}/s, ETA {eta(self.total - self.count, rate)}"


def percent(done: int, total: int) -> str:
    """``done`` of ``total`` in percent with one decimal; an empty loop is 100 % done."""
    return f"{100.0 * done / total:.1f} %" if total > 0 else "100.0 %"


def eta(left: int, rate: float) -> str:
    """Time for ``left`` rows at ``rate`` rows per second; ``?`` while nothing is done."""
    if left <= 0:
        return "0 s"
    if rate <= 0:
        return "?"
    return duration(left / rate)


def duration(seconds: float) -> str:
    """``52 s``, ``3 min 20 s`` or ``2 h 05 min``: short and readable in a log."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
