"""Progress lines of long jobs: interval, rate/ETA arithmetic, final line, formatting."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import skimage.data
from image_helpers import jpeg_bytes
from script_runner import Named, run_script

import copydetect.progress
from copydetect.progress import Progress, duration, eta, percent
from copydetect.shards import ImageRecord, write_image_shard

LOG = logging.getLogger("test.progress")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG.name]


def test_lines_come_at_most_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress(100, "rows", every_s=30, log=LOG, clock=clock)
    with caplog.at_level(logging.INFO):
        for _ in range(10):  # 10 rows every 10 s: a line at 30, 60 and 90 s
            clock.now += 10
            progress.advance(10)
    assert messages(caplog) == [
        "30 / 100 rows (30.0 %), 1/s, ETA 1 min 10 s",
        "60 / 100 rows (60.0 %), 1/s, ETA 40 s",
        "90 / 100 rows (90.0 %), 1/s, ETA 10 s",
    ]


def test_rate_eta_and_thousands_in_the_line() -> None:
    clock = FakeClock()
    progress = Progress(98_000, "query descriptors", log=LOG, clock=clock)
    clock.now += 10
    progress.advance(12_400)
    assert progress.line(clock()) == (
        "12,400 / 98,000 query descriptors (12.7 %), 1,240/s, ETA 1 min 09 s"
    )


def test_final_line_once_and_from_the_context_manager(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level(logging.INFO), Progress(5, "images", log=LOG, clock=clock) as progress:
        clock.now += 2.5
        progress.advance(5)
    progress.done()  # a second done() adds nothing
    assert messages(caplog) == ["5 / 5 images (100.0 %) done in 2 s, 2/s"]


def test_failed_loop_gets_no_final_line(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(5, log=LOG, clock=FakeClock())
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError), progress:
        raise RuntimeError("boom")
    assert messages(caplog) == []


def test_total_zero_and_no_time_elapsed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        Progress(0, "pairs", every_s=0, log=LOG, clock=FakeClock()).done()
    assert messages(caplog) == ["0 / 0 pairs (100.0 %) done in 0 s, 0/s"]


def test_every_zero_logs_each_advance(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        progress = Progress(2, every_s=0, log=LOG, clock=FakeClock())
        progress.advance()
        progress.advance()
    assert messages(caplog) == [
        "1 / 2 rows (50.0 %), 0/s, ETA ?",
        "2 / 2 rows (100.0 %), 0/s, ETA 0 s",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (52.4, "52 s"), (59.6, "1 min 00 s"), (200, "3 min 20 s"), (7500, "2 h 05 min")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_percent_and_eta_edges() -> None:
    assert percent(1, 3) == "33.3 %" and percent(0, 0) == "100.0 %"
    assert eta(0, 0.0) == "0 s" and eta(5, 0.0) == "?" and eta(100, 4.0) == "25 s"


def test_module_constant_sets_the_default_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copydetect.progress, "PROGRESS_EVERY_S", 0.0)
    assert Progress(1).every_s == 0.0


def test_sift_rule_log_has_progress_lines(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copydetect.progress, "PROGRESS_EVERY_S", 0.0)
    photo = jpeg_bytes(skimage.data.astronaut())
    flat = jpeg_bytes(np.full((120, 160, 3), 128, np.uint8))
    records = [ImageRecord("a", photo, (512, 512)), ImageRecord("b", flat, (160, 120))]
    write_image_shard(tmp_path / "images.h5", records)
    log = tmp_path / "sift.log"
    snakemake = SimpleNamespace(
        input=Named(shard=str(tmp_path / "images.h5")),
        output=Named(features=str(tmp_path / "sift.h5"), sparse=str(tmp_path / "sparse.csv")),
        log=[str(log)],
        params=Named(sift={"max_keypoints": 50}),
    )
    run_script("sift_shard.py", snakemake)
    text = log.read_text()
    assert "copydetect.sift: 1 / 2 images (50.0 %), " in text
    assert "copydetect.sift: 2 / 2 images (100.0 %) done in " in text
