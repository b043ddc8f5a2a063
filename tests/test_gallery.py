"""Match gallery: row selection, escaping, placeholders, inlier lines, and a real headless browser.

The data are real: scikit-image photographs, edited and mirrored copies, image shards and SIFT
shards made by the workflow's own code, so the inlier lines come from real verification.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import cv2
import docutils.core
import jinja2
import numpy as np
import pytest
import skimage.data
import yaml
from image_helpers import edited_copy, jpeg_bytes
from PIL import Image
from script_runner import run_script

from copydetect.gallery import (
    GalleryInputs,
    GalleryParams,
    PairRenderer,
    compose_pair,
    evidence_view,
    format_value,
    missed_rows,
    p90_threshold,
    placeholder,
    read_pair_evidence,
    write_gallery,
)
from copydetect.metrics import GroundTruth, GroundTruthMatch, PredictedMatch, read_ground_truth
from copydetect.review import read_review_labels
from copydetect.shards import ImageRecord, SiftFeatures, write_image_shard
from copydetect.sift import SiftParams, extract_sift, sift_shard
from copydetect.verify import VerifyParams, inlier_correspondences, verify_pair

SIFT = SiftParams()
VERIFY = VerifyParams()
XSS = "<script>alert(1)</script>"
AMP_QUOTE = 'a&b"c'
BROWSER_NAMES = ("chromium", "chromium-browser")
SKIP_BROWSER = "COPYDETECT_SKIP_BROWSER"

# (query, reference, score) of the predictions and the ground-truth pairs of the fixture.
PREDICTIONS = [
    ("Q_copy", "R_astronaut", 0.9),
    ("Q_flip", "R_coffee", 0.8),
    (AMP_QUOTE, XSS, 0.7),  # a true copy, but below the P90 threshold of 0.75
    ("Q_distractor", "R_astronaut", 0.5),
    ("Q_missing", "R_gone", 0.4),  # neither image is in any shard (rejected at ingest)
    ("Q_copy", "R_coffee", 0.3),
]
TRUTH = [
    ("Q_copy", "R_astronaut"),
    ("Q_flip", "R_coffee"),
    (AMP_QUOTE, XSS),
    ("Q_missing", "R_astronaut"),  # never predicted
    ("Q_distractor", ""),
]
EXPECTED_ROWS = {"top": 6, "wrong": 3, "missed": 2}


def write_shards(directory: Path, name: str, images: dict[str, np.ndarray]) -> tuple[str, str, str]:
    """An image shard, its SIFT shard and its mirrored SIFT shard, made by the workflow's own
    code."""
    image_path, sift_path = directory / f"{name}.h5", directory / f"{name}.sift.h5"
    mirrored_path = directory / f"{name}.mirrored.sift.h5"
    records = [
        ImageRecord(i, jpeg_bytes(rgb), (rgb.shape[1], rgb.shape[0])) for i, rgb in images.items()
    ]
    write_image_shard(image_path, records)
    sift_shard(image_path, sift_path, SIFT)
    sift_shard(image_path, mirrored_path, SIFT, mirrored=True)
    return str(image_path), str(sift_path), str(mirrored_path)


def write_csv(path: Path, header: list[str], rows: list) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def scored_pairs_rows() -> list[list]:
    """A fused pair table as fusion writes it: scores, branch columns, evidence with gaps."""
    rows = []
    for i, (q, r, score) in enumerate(PREDICTIONS):
        global_only = i % 2 == 1  # every other pair: no local evidence (NaN)
        rows.append(
            [
                q,
                r,
                score,
                "" if global_only else round(score * 0.9, 4),
                round(score * 0.8, 4),
                "" if global_only else 10 + i,
                "" if global_only else 3 * i,
                round(0.5 + score / 3, 4),
                round(score * 4, 4),
                "" if global_only else str(q == "Q_flip"),
            ]
        )
    return rows


SCORED_HEADER = [
    "query_id",
    "reference_id",
    "score",
    "branch_local",
    "branch_vlad",
    "local_votes",
    "inliers",
    "vlad_similarity",
    "vlad_normalized",
    "flipped",
]


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "chelsea": skimage.data.chelsea(),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory, photos) -> SimpleNamespace:
    """Two query and two reference shards, predictions, ground truth, metrics, scored pairs."""
    d = tmp_path_factory.mktemp("gallery")
    q1 = write_shards(d, "q0", {"Q_copy": edited_copy(photos["astronaut"])})
    q2 = write_shards(
        d,
        "q1",
        {
            "Q_flip": np.ascontiguousarray(photos["coffee"][:, ::-1]),
            AMP_QUOTE: edited_copy(photos["rocket"], angle=-8.0, scale=0.8),
            "Q_distractor": photos["chelsea"],
        },
    )
    r1 = write_shards(d, "r0", {"R_astronaut": photos["astronaut"]})
    r2 = write_shards(d, "r1", {"R_coffee": photos["coffee"], XSS: photos["rocket"]})
    metrics = {"micro_ap": 0.61, "recall_at_p90": 0.5, "threshold_at_p90": 0.75}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return SimpleNamespace(
        dir=d,
        query_images=[q1[0], q2[0]],
        query_features=[q1[1], q2[1]],
        mirrored_query_features=[q1[2], q2[2]],
        reference_images=[r1[0], r2[0]],
        reference_features=[r1[1], r2[1]],
        predictions=write_csv(
            d / "predictions.csv", ["query_id", "reference_id", "score"], PREDICTIONS
        ),
        ground_truth=write_csv(d / "ground_truth.csv", ["query_id", "reference_id"], TRUTH),
        scored_pairs=write_csv(d / "scored_pairs.csv", SCORED_HEADER, scored_pairs_rows()),
        metrics=str(d / "metrics.json"),
        metrics_dict=metrics,
    )


def gallery_inputs(data: SimpleNamespace, truth: bool = True, metrics=None) -> GalleryInputs:
    return GalleryInputs(
        scored_pairs=data.scored_pairs,
        predictions=data.predictions,
        query_images=data.query_images,
        reference_images=data.reference_images,
        query_features=data.query_features,
        reference_features=data.reference_features,
        mirrored_query_features=data.mirrored_query_features,
        ground_truth=read_ground_truth(data.ground_truth) if truth else None,
        metrics=data.metrics_dict if metrics is None else metrics,
    )


class GalleryDom(HTMLParser):
    """What the tests look at in a gallery page (written or as a browser rendered it)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.section: str | None = None
        self.rows: dict[str, list[tuple[str, str]]] = {}
        self.images: list[str] = []
        self.scripts = 0
        self.body: dict[str, str | None] = {}
        self.captions: list[str] = []
        self._in_caption = False
        self.text = text
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
            self.rows[self.section] = []
        elif tag == "tr" and a.get("class") == "match":
            self.rows[self.section].append((a["data-query"], a["data-reference"]))
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "body":
            self.body = a
        self._in_caption = tag == "div" and a.get("class") == "caption"

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.captions.append(data)
            self._in_caption = False

    def counts(self) -> dict[str, int]:
        return {section: len(rows) for section, rows in self.rows.items()}


def decode_uri(uri: str) -> np.ndarray:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :]))).convert("RGB"))


@pytest.fixture(scope="module")
def gallery(data) -> SimpleNamespace:
    """The gallery with ground truth and metrics, written once for the tests that read it."""
    path = data.dir / "report" / "gallery.html"
    counts = write_gallery(gallery_inputs(data), path, GalleryParams(), VERIFY)
    text = path.read_text(encoding="utf-8")
    return SimpleNamespace(path=path, text=text, dom=GalleryDom(text), counts=counts)


# --- inlier_correspondences (copydetect.verify) -----------------------------------------------


def test_correspondences_are_the_inliers_verify_pair_counts(photos) -> None:
    reference = extract_sift(photos["astronaut"], SIFT, "R")
    query = extract_sift(edited_copy(photos["astronaut"]), SIFT, "Q")
    evidence = verify_pair(query, reference, VERIFY)
    corr = inlier_correspondences(query, reference, VERIFY)
    assert not corr.flipped and corr.inliers == evidence.inliers >= 20
    assert len(corr.query_xy) == len(corr.reference_xy) == evidence.raw_inliers
    # The points are RANSAC inliers: one similarity maps them within the inlier threshold.
    matrix, _ = cv2.estimateAffinePartial2D(corr.query_xy, corr.reference_xy)
    mapped = corr.query_xy @ matrix[:, :2].T + matrix[:, 2]
    residual = np.linalg.norm(mapped - corr.reference_xy, axis=1)
    assert np.median(residual) < VERIFY.reprojection_threshold / 2


def test_mirrored_query_points_come_back_in_stored_query_coordinates(photos) -> None:
    reference = extract_sift(photos["coffee"], SIFT, "R")
    stored = np.ascontiguousarray(photos["coffee"][:, ::-1])
    query = extract_sift(stored, SIFT, "Q")
    mirrored = extract_sift(np.ascontiguousarray(stored[:, ::-1]), SIFT, "Q")
    corr = inlier_correspondences(query, reference, VERIFY, mirrored)
    assert corr.flipped
    assert corr.inliers == verify_pair(query, reference, VERIFY, mirrored).inliers >= 20
    # Same size, mirrored: a reference point (x, y) is at (width - 1 - x, y) in the stored query.
    width = query.image_size[0]
    np.testing.assert_allclose(corr.query_xy[:, 0], width - 1 - corr.reference_xy[:, 0], atol=1.5)
    np.testing.assert_allclose(corr.query_xy[:, 1], corr.reference_xy[:, 1], atol=1.5)
    # Without the mirrored features (or with try_flip off) the unflipped fit is all there is.
    assert not inlier_correspondences(query, reference, VERIFY).flipped
    no_flip = VerifyParams(try_flip=False)
    assert not inlier_correspondences(query, reference, no_flip, mirrored).flipped


def test_the_view_the_evidence_came_from_is_drawn(photos) -> None:
    """With the pair's ``flipped`` evidence the gallery fits that view alone (verification may
    have matched only it, verify.flip_vote_ratio); without it, the better of the two."""
    reference = extract_sift(photos["coffee"], SIFT, "R")
    stored = np.ascontiguousarray(photos["coffee"][:, ::-1])
    query = extract_sift(stored, SIFT, "Q")
    mirrored = extract_sift(np.ascontiguousarray(stored[:, ::-1]), SIFT, "Q")
    best = inlier_correspondences(query, reference, VERIFY, mirrored)
    kept_mirror = inlier_correspondences(query, reference, VERIFY, mirrored, flipped=True)
    assert kept_mirror.flipped and kept_mirror.inliers == best.inliers >= 20
    np.testing.assert_array_equal(kept_mirror.query_xy, best.query_xy)
    kept_query = inlier_correspondences(query, reference, VERIFY, mirrored, flipped=False)
    assert not kept_query.flipped
    assert kept_query.inliers == inlier_correspondences(query, reference, VERIFY).inliers < 10
    # The scored table's flipped column as read_pair_evidence returns it.
    values = [{"flipped": True}, {"flipped": "False"}, {"flipped": float("nan")}, {}]
    assert [evidence_view(v) for v in values] == [True, False, None, None]


def test_rejected_fit_has_no_correspondences() -> None:
    kp = np.zeros((3, 4), np.float32)
    kp[:, :2] = [[10, 10], [50, 20], [30, 70]]
    desc = np.eye(3, 128, dtype=np.uint8) * 255
    feats = SiftFeatures("x", kp, desc, (100, 100))
    corr = inlier_correspondences(feats, feats, VERIFY)  # 3 matches < min_matches_for_fit
    assert corr.inliers == 0 and corr.query_xy.shape == corr.reference_xy.shape == (0, 2)


# --- Row selection ------------------------------------------------------------------------------


def test_sections_and_row_counts_with_ground_truth(gallery) -> None:
    assert gallery.counts == EXPECTED_ROWS
    assert gallery.dom.counts() == EXPECTED_ROWS
    top = gallery.dom.rows["top"]
    assert top[0] == ("Q_copy", "R_astronaut") and top[-1] == ("Q_copy", "R_coffee")
    assert gallery.dom.rows["wrong"] == [
        ("Q_distractor", "R_astronaut"),
        ("Q_missing", "R_gone"),
        ("Q_copy", "R_coffee"),
    ]
    # The near miss (scored below the threshold) before the never-predicted pair.
    assert gallery.dom.rows["missed"] == [(AMP_QUOTE, XSS), ("Q_missing", "R_astronaut")]
    assert "micro-AP" in gallery.text and "0.75" in gallery.text


def test_without_ground_truth_only_top_matches(data, tmp_path) -> None:
    path = tmp_path / "gallery.html"
    params = GalleryParams(gallery_rows=4)
    counts = write_gallery(gallery_inputs(data, truth=False, metrics={}), path, params, VERIFY)
    dom = GalleryDom(path.read_text(encoding="utf-8"))
    assert counts == dom.counts() == {"top": 4}
    assert 'id="wrong"' not in dom.text and 'id="missed"' not in dom.text
    assert "true copy" not in dom.text and 'id="metrics"' not in dom.text


def test_no_predictions_gives_empty_sections(data, tmp_path) -> None:
    empty = write_csv(tmp_path / "empty.csv", ["query_id", "reference_id", "score"], [])
    inputs = dataclasses.replace(gallery_inputs(data), predictions=empty)
    path = tmp_path / "gallery.html"
    counts = write_gallery(inputs, path, GalleryParams(), VERIFY)
    dom = GalleryDom(path.read_text(encoding="utf-8"))
    # Nothing predicted: every true copy is missed (the distractor has none).
    assert counts == dom.counts() == {"top": 0, "wrong": 0, "missed": 4}
    assert dom.text.count('<tr class="empty">') == 2


def test_missed_without_threshold_lists_only_unpredicted_pairs() -> None:
    truth = GroundTruth([GroundTruthMatch("a", "x"), GroundTruthMatch("b", "y")], frozenset("ab"))
    predictions = [PredictedMatch("a", "x", 0.1)]
    rows = missed_rows(predictions, truth, threshold=None, n=10)
    assert [(r.pair, r.note) for r in rows] == [(("b", "y"), "not predicted")]
    assert [r.pair for r in missed_rows(predictions, truth, threshold=0.5, n=10)] == [
        ("a", "x"),
        ("b", "y"),
    ]
    assert p90_threshold({"threshold_at_p90": None}) is None
    assert p90_threshold({}) is None and p90_threshold({"threshold_at_p90": 0.4}) == 0.4


def test_evidence_columns_and_formatting(data) -> None:
    evidence = read_pair_evidence(data.scored_pairs, [("Q_flip", "R_coffee"), (AMP_QUOTE, XSS)])
    flip = evidence[("Q_flip", "R_coffee")]
    assert list(flip) == [
        "branch_local",
        "branch_vlad",
        "local_votes",
        "inliers",
        "flipped",
        "vlad_similarity",
        "vlad_normalized",
    ]
    assert format_value(flip["branch_local"]) == "—"  # NaN: the branch did not see the pair
    assert format_value(evidence[(AMP_QUOTE, XSS)]["local_votes"], "local_votes") == "12"
    assert format_value(True) == "yes" and format_value(math.nan) == "—"
    assert format_value(0.123456) == "0.1235" and format_value(1.0, "scale") == "1.0000"


# --- HTML safety and self-containment ---------------------------------------------------------


def test_ids_are_escaped(gallery) -> None:
    assert XSS not in gallery.text and AMP_QUOTE not in gallery.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in gallery.text
    assert "a&amp;b&quot;c" in gallery.text
    assert gallery.dom.scripts == 1  # only the gallery's own image-count script
    # The parser unescapes attributes: the ids come back exactly.
    assert (AMP_QUOTE, XSS) in gallery.dom.rows["top"]


def test_page_is_self_contained(gallery) -> None:
    assert "http://" not in gallery.text and "https://" not in gallery.text
    assert "<link" not in gallery.text and "url(" not in gallery.text
    assert len(gallery.dom.images) == sum(EXPECTED_ROWS.values())
    for uri in gallery.dom.images:
        image = decode_uri(uri)
        assert image.shape[0] == GalleryParams().thumbnail_height and image.shape[2] == 3


def test_every_row_has_the_reviewer_buttons_and_the_page_one_export(gallery) -> None:
    rows = sum(EXPECTED_ROWS.values())
    assert gallery.text.count('data-mark="copy" aria-pressed="false"') == rows
    assert gallery.text.count('data-mark="not_copy" aria-pressed="false"') == rows
    assert gallery.text.count('id="review-export"') == 1
    assert "localStorage" in gallery.text and "review_labels.csv" in gallery.text


# --- Composites -------------------------------------------------------------------------------


def test_missing_images_are_placeholders(data, gallery) -> None:
    assert any(
        c.endswith("query image missing; reference image missing") for c in gallery.dom.captions
    )
    params = GalleryParams()
    renderer = PairRenderer(gallery_inputs(data), [("Q_missing", "R_gone")], params, VERIFY)
    composite = renderer.render(("Q_missing", "R_gone"))
    assert composite.query_missing and composite.reference_missing and composite.lines == 0
    image = decode_uri(composite.uri).astype(float)
    expected = np.asarray(placeholder(params), dtype=float)
    side = params.thumbnail_height
    assert np.abs(image[:, :side] - expected).mean() < 3  # JPEG noise only


def test_inlier_lines_are_drawn_on_a_real_match(data) -> None:
    params = GalleryParams()
    pairs = [("Q_copy", "R_astronaut"), ("Q_flip", "R_coffee"), ("Q_distractor", "R_astronaut")]
    renderer = PairRenderer(gallery_inputs(data), pairs, params, VERIFY)
    copy, flip, distractor = (renderer.render(p) for p in pairs)
    assert copy.lines >= 20 and not copy.flipped
    assert flip.lines >= 20 and flip.flipped
    assert distractor.lines < 8
    # The lines change the picture: compare with the plain side-by-side of the same thumbnails.
    query = renderer._thumbnail("query", "Q_copy", renderer.query_jpegs)
    reference = renderer._thumbnail("reference", "R_astronaut", renderer.reference_jpegs)
    plain = np.asarray(compose_pair(query, reference), dtype=int)
    drawn = np.asarray(decode_uri(copy.uri), dtype=int)
    changed = (np.abs(drawn - plain).max(axis=2) > 60).mean()
    assert changed > 0.01, f"only {changed:.4f} of the pixels changed"
    # ... and lines only go between the two halves: the gap column is crossed by them.
    assert (np.abs(drawn[:, query.width + 3] - 255).max(axis=1) > 60).sum() >= 5


def test_mirrored_matches_come_from_the_mirrored_shard(data) -> None:
    pair = ("Q_flip", "R_coffee")
    without = dataclasses.replace(gallery_inputs(data), mirrored_query_features=[])
    assert not PairRenderer(without, [pair], GalleryParams(), VERIFY).render(pair).flipped


# --- The rule script ----------------------------------------------------------------------------


def test_script_writes_gallery_with_and_without_optional_inputs(data, tmp_path) -> None:
    for with_truth in (True, False):
        out = tmp_path / f"gallery_{with_truth}.html"
        run_script(
            "make_gallery.py",
            SimpleNamespace(
                input=SimpleNamespace(
                    scored_pairs=data.scored_pairs,
                    predictions=data.predictions,
                    query_images=data.query_images,
                    reference_images=data.reference_images,
                    query_features=data.query_features,
                    reference_features=data.reference_features,
                    mirrored_query_features=data.mirrored_query_features,
                    ground_truth=[data.ground_truth] if with_truth else [],
                    metrics=[data.metrics] if with_truth else [],
                ),
                output=SimpleNamespace(gallery=str(out)),
                log=[str(tmp_path / "make_gallery.log")],
                params=SimpleNamespace(report={"gallery_rows": 2}, verify={"ratio": 0.8}),
            ),
        )
        expected = {"top": 2, "wrong": 2, "missed": 2} if with_truth else {"top": 2}
        assert GalleryDom(out.read_text(encoding="utf-8")).counts() == expected
        assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary left behind


# --- A real browser -----------------------------------------------------------------------------


def test_missing_browser_fails_unless_skipping_is_asked_for(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no browser on PATH
    monkeypatch.delenv(SKIP_BROWSER, raising=False)
    with pytest.raises(pytest.fail.Exception, match="make browser"):
        browser_binary()
    monkeypatch.setenv(SKIP_BROWSER, "1")
    with pytest.raises(pytest.skip.Exception, match=SKIP_BROWSER):
        browser_binary()


def browser_binary() -> str:
    """Path of Debian's Chromium; fails (or skips on request) when it is not installed."""
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get(SKIP_BROWSER) == "1":
        pytest.skip(f"{SKIP_BROWSER}=1: headless browser test skipped")
    pytest.fail(
        "no chromium or chromium-browser on PATH: run `make browser` (apt-get install chromium), "
        f"or set {SKIP_BROWSER}=1 to skip this test"
    )


def run_browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # root in a container: the sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_gallery_renders_in_headless_chromium(gallery, tmp_path) -> None:
    binary = browser_binary()
    url = gallery.path.resolve().as_uri()
    screenshot = tmp_path / "gallery.png"
    run_browser(
        binary,
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        url,
    )
    assert screenshot.is_file(), "chromium wrote no screenshot"
    with Image.open(screenshot) as png:
        assert png.size == (1280, 2000)
        pixels = np.asarray(png.convert("RGB"), dtype=float)
    assert pixels.std() > 20, "the screenshot is blank"
    assert (pixels.std(axis=2) > 30).mean() > 0.05, "the screenshot shows no coloured thumbnails"

    dom = run_browser(
        binary, tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", url
    ).stdout
    rendered = GalleryDom(dom)
    assert rendered.counts() == EXPECTED_ROWS
    n_images = sum(EXPECTED_ROWS.values())
    assert rendered.body.get("data-images-total") == str(n_images)
    assert rendered.body.get("data-images-loaded") == str(n_images), "images did not decode"


# --- Report captions (snakemake --report renders them with Jinja, then docutils) -----------------

REPORT_DIR = Path(__file__).resolve().parents[1] / "report"
CAPTIONS = (
    "workflow",
    "metrics",
    "pr_curve",
    "ablation",
    "gallery",
    "edit_recall",
    "review_metrics",
)


@pytest.mark.parametrize("name", CAPTIONS)
def test_report_captions_render_as_restructuredtext(name) -> None:
    config = yaml.safe_load((REPORT_DIR.parent / "config" / "config.yaml").read_text())
    source = (REPORT_DIR / f"{name}.rst").read_text(encoding="utf-8")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as snakemake.report does
    for cfg in (config, {}):  # the captions must not need any config key
        text = env.from_string(source).render(snakemake=SimpleNamespace(config=cfg))
        warnings = io.StringIO()
        html = docutils.core.publish_parts(
            text,
            writer="html",
            settings_overrides={"warning_stream": warnings, "halt_level": 2},
        )["body"]
        assert not warnings.getvalue() and len(html) > 200
    if name == "gallery":
        assert f"up to\n{config['report']['gallery_rows']} pairs" in env.from_string(source).render(
            snakemake=SimpleNamespace(config=config)
        )


# --- The reviewer's loop in a real browser ------------------------------------------------------

# (section, row, mark) clicks of the test; the last two undo each other.
REVIEW_CLICKS = [
    ("top", 1, "copy"),  # Q_copy, R_astronaut
    ("top", 2, "copy"),  # Q_flip, R_coffee
    ("missed", 1, "copy"),  # a&b"c, <script>: the same pair as the top section's third row
    ("top", 4, "not_copy"),  # Q_distractor, R_astronaut: no pair of it is a copy
    ("top", 6, "not_copy"),  # Q_copy, R_coffee: Q_copy has a copy, so no row of its own
    ("wrong", 2, "copy"),  # Q_missing, R_gone ...
    ("wrong", 2, "copy"),  # ... clicked again: undecided, so Q_missing is left out
]
EXPORTED = (
    "query_id,reference_id\n"
    "Q_copy,R_astronaut\n"
    "Q_distractor,\n"
    "Q_flip,R_coffee\n"
    '"a&b""c",<script>alert(1)</script>\n'
)
MARKS_JS = (
    "Array.from(document.querySelectorAll('tr.match')).map(function (row) {"
    " var on = row.querySelector('button.mark[aria-pressed=\"true\"]');"
    " return [row.closest('section').id, row.dataset.query, row.dataset.reference,"
    " on ? on.dataset.mark : '']; })"
)


def review_marks(browser) -> dict[tuple[str, str, str], str]:
    """(section, query, reference) -> the pressed mark of every row ('' when none)."""
    return {(s, q, r): mark for s, q, r, mark in browser.evaluate(MARKS_JS)}


@pytest.mark.slow
def test_reviewer_marks_pairs_and_exports_labels_in_headless_chromium(gallery, tmp_path) -> None:
    from cdp import Chromium

    binary = browser_binary()
    downloads = tmp_path / "downloads"
    with Chromium(binary, tmp_path / "profile", downloads) as browser:
        browser.open(gallery.path.resolve().as_uri())
        assert browser.evaluate("document.getElementById('review-export').disabled") is True
        for section, row, mark in REVIEW_CLICKS:
            browser.click(f'#{section} tr.match:nth-child({row}) button[data-mark="{mark}"]')
        marks = review_marks(browser)
        # A decision is about the pair: every row showing it shows it, in any section.
        assert marks[("top", AMP_QUOTE, XSS)] == marks[("missed", AMP_QUOTE, XSS)] == "copy"
        assert marks[("wrong", "Q_distractor", "R_astronaut")] == "not_copy"
        undone = ("Q_missing", "R_gone")
        assert marks[("top", *undone)] == marks[("wrong", *undone)] == ""
        assert sum(mark == "copy" for mark in marks.values()) == 4  # 3 pairs, one shown twice
        status = browser.evaluate("document.getElementById('review-status').textContent")
        assert status.startswith("3 marked copy, 2 not a copy; 4 queries in the export")

        exported = browser.download("#review-export", downloads)
        assert exported.name == "review_labels.csv"
        assert exported.read_text(encoding="utf-8") == EXPORTED
        # The export reads back as labels: the workflow's review_labels.
        labels = read_review_labels(exported)
        assert {(m.query, m.db) for m in labels.matches} == {
            ("Q_copy", "R_astronaut"),
            ("Q_flip", "R_coffee"),
            (AMP_QUOTE, XSS),
        }
        assert labels.query_ids == {"Q_copy", "Q_flip", AMP_QUOTE, "Q_distractor"}

        browser.reload()  # decisions come back from local storage
        assert review_marks(browser) == marks
    # ... also in a new browser on the same profile (the file opened again another day).
    with Chromium(binary, tmp_path / "profile", downloads) as browser:
        browser.open(gallery.path.resolve().as_uri())
        assert review_marks(browser) == marks
        browser.click('#top tr.match:nth-child(1) button[data-mark="copy"]')  # undo one
        assert review_marks(browser)[("top", "Q_copy", "R_astronaut")] == ""
    # Another run's gallery (another path) has its own decisions.
    other = tmp_path / "other-run" / "gallery.html"
    other.parent.mkdir()
    shutil.copy(gallery.path, other)
    with Chromium(binary, tmp_path / "profile", downloads) as browser:
        browser.open(other.resolve().as_uri())
        assert set(review_marks(browser).values()) == {""}
