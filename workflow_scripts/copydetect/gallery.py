"""Match gallery: one offline HTML page to look at what the workflow matched, and why.

Three sections, each a table of (query | reference) composites with the verified inlier
correspondences drawn between them, the score and every branch's evidence:

* ``top``: the highest-scored predictions;
* ``wrong`` (with ground truth): the highest-scored predictions that are not true copies;
* ``missed`` (with ground truth): true copies that were not predicted, or scored below the
  threshold at precision 0.9 (``threshold_at_p90`` of ``metrics.json``), near misses first.

A reviewer can mark every shown pair *copy* or *not a copy*: the page keeps the decisions in
the browser's local storage under a key naming the page's own path (so reopening the file, or
the gallery of a rerun in the same run folder, keeps them) and exports them as
``review_labels.csv`` in the ground-truth format, which the workflow reads back as labels
(config ``review_labels``; the export's meaning: :mod:`copydetect.review`).

The page is self-contained: thumbnails are base64 JPEG data URIs, styles and the one small script
are inline, and a Content-Security-Policy forbids loading anything else. Every id is
HTML-escaped. Only the images and SIFT rows of the shown pairs are read, so memory follows the
number of rows, not the collection. Inlier lines are recomputed for the shown pairs with the
verify parameters (:func:`copydetect.verify.inlier_correspondences`); an image that is missing
(rejected at ingest) is drawn as a crossed placeholder, never an error.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from copydetect.atomic import atomic_path
from copydetect.metrics import GroundTruth, PredictedMatch, deduplicate, read_predictions
from copydetect.params import config_params
from copydetect.resources import resource_text
from copydetect.shards import SiftFeatures, read_jpegs, read_shard_ids, read_sift_rows
from copydetect.verify import Correspondences, VerifyParams, inlier_correspondences

logger = logging.getLogger(__name__)

Pair = tuple[str, str]  # (query_id, reference_id)

# Evidence shown after the branch_* columns, in this order, when the scored table has them:
# the full query's verification, then the same for its overlay crop (fusion's crop_ prefixes).
_LOCAL_EVIDENCE = ("matches", "inliers", "inlier_ratio", "scale", "flipped")
KEY_EVIDENCE = (
    "local_votes",
    *_LOCAL_EVIDENCE,
    "crop_local_votes",
    *(f"crop_local_{c}" for c in _LOCAL_EVIDENCE),
)
GLOBAL_SUFFIXES = ("_similarity", "_normalized")
COUNT_SUFFIXES = ("votes", "matches", "inliers")  # integer columns, also when read as float
LINE_COLOURS = ((0, 220, 0), (255, 200, 0), (0, 200, 255), (255, 60, 200), (255, 90, 40))
PLACEHOLDER_FILL, PLACEHOLDER_INK = (225, 225, 225), (150, 150, 150)
GAP = 8  # pixels between the query and the reference in a composite
MISSING = "—"  # shown for NaN evidence and unscored pairs


@config_params("report")
class GalleryParams:
    """The ``report`` section of the config: the gallery page."""

    gallery_rows: int  # rows per section
    thumbnail_height: int  # height of a composite, pixels
    max_thumbnail_width: int  # widest a single image may be drawn (panoramas shrink)
    jpeg_quality: int


@dataclass(frozen=True)
class GalleryRow:
    """One shown pair: its score, evidence, and (with ground truth) whether it is a copy."""

    query_id: str
    reference_id: str
    score: float  # NaN: the pair was not predicted
    correct: bool | None  # None without ground truth
    note: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def pair(self) -> Pair:
        return (self.query_id, self.reference_id)


@dataclass(frozen=True)
class Section:
    """A titled table of rows; ``id`` is the HTML id tests and links use."""

    id: str
    title: str
    description: str
    rows: list[GalleryRow]


@dataclass(frozen=True)
class GalleryInputs:
    """What the gallery reads: the files of rule ``make_gallery``, with the optional ground
    truth and metrics already parsed (None when the run has none)."""

    scored_pairs: str | os.PathLike
    predictions: str | os.PathLike
    query_images: Sequence[str | os.PathLike]
    reference_images: Sequence[str | os.PathLike]
    query_features: Sequence[str | os.PathLike]
    reference_features: Sequence[str | os.PathLike]
    mirrored_query_features: Sequence[str | os.PathLike]  # none without verify.try_flip
    ground_truth: GroundTruth | None = None
    metrics: Mapping[str, Any] | None = None


# --- Choosing the rows ------------------------------------------------------------------------


def _ranked(predictions: Iterable[PredictedMatch], n: int) -> list[PredictedMatch]:
    """The ``n`` highest-scored predictions; ties by ids, so the page is deterministic."""
    return heapq.nsmallest(n, predictions, key=lambda p: (-p.score, p.query, p.db))


def top_rows(
    predictions: Sequence[PredictedMatch], n: int, truth: set[Pair] | None
) -> list[GalleryRow]:
    """Rows of the ``n`` highest-scored predictions (deduplicated beforehand)."""
    return [
        GalleryRow(p.query, p.db, p.score, None if truth is None else (p.query, p.db) in truth)
        for p in _ranked(predictions, n)
    ]


def wrong_rows(predictions: Sequence[PredictedMatch], n: int, truth: set[Pair]) -> list[GalleryRow]:
    """Rows of the ``n`` highest-scored predictions that are not ground-truth pairs."""
    wrong = (p for p in predictions if (p.query, p.db) not in truth)
    return [GalleryRow(p.query, p.db, p.score, False) for p in _ranked(wrong, n)]


def missed_rows(
    predictions: Sequence[PredictedMatch],
    truth: GroundTruth,
    threshold: float | None,
    n: int,
) -> list[GalleryRow]:
    """Ground-truth pairs not predicted, or (with a threshold) scored below it.

    Scored near misses come first by decreasing score, then the unpredicted pairs by id: the
    near misses show what the threshold costs, the rest what retrieval never proposed.
    """
    scores = {(p.query, p.db): p.score for p in predictions}
    missed = []
    for match in dict.fromkeys(truth.matches):
        score = scores.get((match.query, match.db), math.nan)
        if math.isnan(score):
            missed.append(GalleryRow(match.query, match.db, score, True, "not predicted"))
        elif threshold is not None and score < threshold:
            note = f"below the P90 threshold {threshold:.4g}"
            missed.append(GalleryRow(match.query, match.db, score, True, note))
    missed.sort(key=lambda r: (math.isnan(r.score), -np.nan_to_num(r.score), r.pair))
    return missed[:n]


def _missed_description(threshold: float | None) -> str:
    if threshold is None:
        return "True copies that were not predicted (no threshold at precision 0.9 is known)."
    return (
        f"True copies that were not predicted or scored below the threshold at precision 0.9 "
        f"({threshold:.4g}); scored near misses first."
    )


def build_sections(
    predictions: Sequence[PredictedMatch],
    truth: GroundTruth | None,
    threshold: float | None,
    n: int,
) -> list[Section]:
    """The gallery's sections: ``top`` always, ``wrong`` and ``missed`` with ground truth.

    ``predictions`` must be deduplicated (:func:`copydetect.metrics.deduplicate`).
    """
    truth_pairs = None if truth is None else {(m.query, m.db) for m in truth.matches}
    top = Section(
        "top",
        "Top matches",
        "The highest-scored predictions.",
        top_rows(predictions, n, truth_pairs),
    )
    if truth is None or truth_pairs is None:
        return [top]
    wrong = Section(
        "wrong",
        "Highest-scored wrong matches",
        "Predictions that are not ground-truth pairs, highest score first.",
        wrong_rows(predictions, n, truth_pairs),
    )
    missed = Section(
        "missed",
        "Missed copies",
        _missed_description(threshold),
        missed_rows(predictions, truth, threshold, n),
    )
    return [top, wrong, missed]


# --- Evidence of the shown pairs ---------------------------------------------------------------


def evidence_columns(columns: Sequence[str]) -> list[str]:
    """Columns worth showing: every ``branch_*``, the key verification evidence, then each
    global model's ``*_similarity`` / ``*_normalized``, in table order."""
    branch = [c for c in columns if c.startswith("branch_")]
    key = [c for c in KEY_EVIDENCE if c in columns]
    global_ = [c for c in columns if c.endswith(GLOBAL_SUFFIXES) and c not in branch]
    return branch + key + global_


def read_pair_evidence(
    path: str | os.PathLike, pairs: Iterable[Pair], chunk_rows: int = 200_000
) -> dict[Pair, dict[str, Any]]:
    """Evidence of the wanted pairs from the scored pair table, read in chunks (memory follows
    the chunk, not the table). A pair listed twice keeps its highest-scored row."""
    wanted = set(pairs)
    header = list(pd.read_csv(path, nrows=0).columns)
    missing = {"query_id", "reference_id"} - set(header)
    if missing:
        raise ValueError(f"{path}: the scored pair table lacks the columns {sorted(missing)}")
    columns = evidence_columns(header)
    rows: list[pd.DataFrame] = []
    # Ids stay exact strings (``000123``, ``NA``); other columns parse as read_table does.
    reader = pd.read_csv(
        path,
        dtype={"query_id": str, "reference_id": str},
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in header if c not in ("query_id", "reference_id")},
        chunksize=chunk_rows,
    )
    for chunk in reader:
        keys = zip(chunk["query_id"], chunk["reference_id"], strict=True)
        rows.append(chunk.loc[[key in wanted for key in keys]])
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=header)
    if "score" in table.columns:
        table = table.sort_values("score", ascending=False, kind="stable", na_position="last")
    table = table.drop_duplicates(["query_id", "reference_id"], keep="first")
    return {
        (q, r): {c: value for c, value in zip(columns, values, strict=True)}
        for q, r, *values in table[["query_id", "reference_id", *columns]].itertuples(index=False)
    }


def evidence_view(evidence: Mapping[str, Any]) -> bool | None:
    """Whether a pair's evidence came from the mirrored query; None when it was not verified
    (no ``flipped`` value: the gallery then draws the better view)."""
    value = evidence.get("flipped")
    if value is None or pd.isna(value):
        return None
    return str(value).strip().lower() in ("true", "1")


def format_value(value: Any, name: str = "") -> str:
    """Text of one value of column ``name``: NaN and empty as ``—``, booleans as yes/no,
    counts as integers, other numbers with 4 decimals."""
    if value is None:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return MISSING
        # Counts come back as floats when their column has gaps (NaN): show them as counts.
        if name.endswith(COUNT_SUFFIXES) and value.is_integer():
            return str(int(value))
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    text = str(value).strip()
    return text or MISSING


# --- Reading only the images and features of the shown pairs -----------------------------------


def locate(shards: Sequence[str | os.PathLike], ids: Iterable[str]) -> dict[str, list[str]]:
    """Wanted ids grouped by the shard holding them (``{shard: [ids]}``); ids found in no shard
    are left out. Only each shard's ``ids`` dataset is read, one shard at a time."""
    wanted = set(ids)
    found: dict[str, list[str]] = defaultdict(list)
    for shard in shards if wanted else ():
        for image_id in read_shard_ids(shard):
            if image_id in wanted:
                found[str(shard)].append(image_id)
                wanted.discard(image_id)  # an id lives in one shard; the first one wins
        if not wanted:
            break
    return dict(found)


def load_jpegs(shards: Sequence[str | os.PathLike], ids: Iterable[str]) -> dict[str, bytes]:
    """Stored JPEG bytes of the wanted images (missing ones are absent from the result)."""
    jpegs: dict[str, bytes] = {}
    for shard, shard_ids in locate(shards, ids).items():
        jpegs.update(read_jpegs(shard, shard_ids))
    return jpegs


def load_sift(shards: Sequence[str | os.PathLike], ids: Iterable[str]) -> dict[str, SiftFeatures]:
    """SIFT features of the wanted images (missing ones are absent from the result)."""
    features: dict[str, SiftFeatures] = {}
    for shard, shard_ids in locate(shards, ids).items():
        features.update(read_sift_rows(shard, shard_ids))
    return features


# --- Composites: query left, reference right, inlier lines between -----------------------------


def thumbnail(jpeg: bytes, params: GalleryParams) -> Image.Image:
    """Decode and shrink to fit ``max_thumbnail_width`` × ``thumbnail_height`` (never enlarge
    past the height; small images are scaled up to it so rows line up)."""
    with Image.open(io.BytesIO(jpeg)) as im:
        scale = min(params.thumbnail_height / im.height, params.max_thumbnail_width / im.width)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im.draft("RGB", size)  # JPEG DCT scaling: a large image decodes at a fraction of the cost
        return im.convert("RGB").resize(size, Image.Resampling.BILINEAR)


def placeholder(params: GalleryParams) -> Image.Image:
    """A crossed grey square standing in for an image that is not in any shard."""
    side = params.thumbnail_height
    image = Image.new("RGB", (side, side), PLACEHOLDER_FILL)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, side - 1, side - 1], outline=PLACEHOLDER_INK, width=2)
    draw.line([(0, 0), (side - 1, side - 1)], fill=PLACEHOLDER_INK, width=2)
    draw.line([(0, side - 1), (side - 1, 0)], fill=PLACEHOLDER_INK, width=2)
    return image


def _to_thumbnail(
    xy: np.ndarray, sift_size: tuple[int, int], thumb_size: tuple[int, int], offset: tuple[int, int]
) -> np.ndarray:
    """Map SIFT-image coordinates (pixel centres on integers) onto a thumbnail placed at
    ``offset``: SIFT ran on a shrunk copy of the stored image, the thumbnail is another one."""
    scale = np.array(thumb_size, np.float64) / np.array(sift_size, np.float64)
    return (xy.astype(np.float64) + 0.5) * scale - 0.5 + np.array(offset, np.float64)


def compose_pair(
    query: Image.Image,
    reference: Image.Image,
    correspondences: Correspondences | None = None,
    sift_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None,
    max_lines: int = 80,
) -> Image.Image:
    """Side-by-side composite with the inlier correspondences drawn as coloured lines.

    ``sift_sizes`` are the (query, reference) sizes of the images SIFT ran on, needed to place
    the correspondences; at most ``max_lines`` evenly chosen lines are drawn (legibility).
    """
    height = max(query.height, reference.height)
    canvas = Image.new("RGB", (query.width + GAP + reference.width, height), (255, 255, 255))
    q_offset = (0, (height - query.height) // 2)
    r_offset = (query.width + GAP, (height - reference.height) // 2)
    canvas.paste(query, q_offset)
    canvas.paste(reference, r_offset)
    if correspondences is None or sift_sizes is None or len(correspondences.query_xy) == 0:
        return canvas
    q_xy = _to_thumbnail(correspondences.query_xy, sift_sizes[0], query.size, q_offset)
    r_xy = _to_thumbnail(correspondences.reference_xy, sift_sizes[1], reference.size, r_offset)
    shown = np.unique(np.linspace(0, len(q_xy) - 1, min(len(q_xy), max_lines)).round().astype(int))
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(shown):
        colour = LINE_COLOURS[k % len(LINE_COLOURS)]
        (qx, qy), (rx, ry) = q_xy[i], r_xy[i]
        draw.line([(qx, qy), (rx, ry)], fill=colour, width=1)
        for x, y in ((qx, qy), (rx, ry)):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=colour)
    return canvas


def data_uri(image: Image.Image, quality: int) -> str:
    """The image as an inline ``data:image/jpeg;base64,…`` URI."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Composite:
    """A rendered pair image and what it shows."""

    uri: str
    size: tuple[int, int]
    query_missing: bool
    reference_missing: bool
    lines: int  # RANSAC inlier correspondences (drawn up to compose_pair's cap)
    inliers: int  # effective (distinct-position) inliers, the count verification reports
    flipped: bool


class PairRenderer:
    """Renders composites of pairs from the shards, reading each image and SIFT row once."""

    def __init__(
        self,
        inputs: GalleryInputs,
        pairs: Sequence[Pair],
        params: GalleryParams,
        verify: VerifyParams,
    ) -> None:
        query_ids = sorted({q for q, _ in pairs})
        reference_ids = sorted({r for _, r in pairs})
        self.params, self.verify = params, verify
        self.query_jpegs = load_jpegs(inputs.query_images, query_ids)
        self.reference_jpegs = load_jpegs(inputs.reference_images, reference_ids)
        self.query_sift = load_sift(inputs.query_features, query_ids)
        self.reference_sift = load_sift(inputs.reference_features, reference_ids)
        self.mirrored_query_sift = (
            load_sift(inputs.mirrored_query_features, query_ids) if verify.try_flip else {}
        )
        self._thumbnails: dict[tuple[str, str], Image.Image] = {}
        absent = len(query_ids) - len(self.query_jpegs) + len(reference_ids)
        absent -= len(self.reference_jpegs)
        if absent:
            logger.warning("%d shown images are in no image shard: drawn as placeholders", absent)

    def _thumbnail(self, side: str, image_id: str, jpegs: Mapping[str, bytes]) -> Image.Image:
        key = (side, image_id)
        if key not in self._thumbnails:
            jpeg = jpegs.get(image_id)
            self._thumbnails[key] = (
                placeholder(self.params) if jpeg is None else thumbnail(jpeg, self.params)
            )
        return self._thumbnails[key]

    def correspondences(self, pair: Pair, flipped: bool | None = None) -> Correspondences | None:
        """Inlier correspondences of a pair (of the view its evidence came from, ``flipped``,
        when it was verified), or None when either side has no SIFT row."""
        query, reference = self.query_sift.get(pair[0]), self.reference_sift.get(pair[1])
        if query is None or reference is None:
            return None
        mirrored = self.mirrored_query_sift.get(pair[0])
        return inlier_correspondences(query, reference, self.verify, mirrored, flipped)

    def render(self, pair: Pair, flipped: bool | None = None) -> Composite:
        query_id, reference_id = pair
        query = self._thumbnail("query", query_id, self.query_jpegs)
        reference = self._thumbnail("reference", reference_id, self.reference_jpegs)
        q_missing = query_id not in self.query_jpegs
        r_missing = reference_id not in self.reference_jpegs
        corr = None if q_missing or r_missing else self.correspondences(pair, flipped)
        sizes = None
        if corr is not None:
            sizes = (
                self.query_sift[query_id].image_size,
                self.reference_sift[reference_id].image_size,
            )
        image = compose_pair(query, reference, corr, sizes)
        return Composite(
            data_uri(image, self.params.jpeg_quality),
            image.size,
            q_missing,
            r_missing,
            0 if corr is None else len(corr.query_xy),
            0 if corr is None else corr.inliers,
            corr is not None and corr.flipped,
        )


# --- HTML ---------------------------------------------------------------------------------------

# Nothing may be fetched: images are data URIs, style and script inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
# The page's style and script, static files in resources/gallery/ inlined into the page. The
# script lets a headless browser (and the tests) tell that every embedded image decoded, and
# keeps the reviewer's decisions (localStorage) and exports them.
STYLE = resource_text("gallery/gallery.css")
SCRIPT = resource_text("gallery/gallery.js")
REVIEW_HELP = (
    "Mark each pair copy or not a copy (a second click undoes). Decisions stay in this browser "
    "for this file; the export is the workflow's review_labels (README, the reviewer's loop): "
    "one row per pair marked copy, and a query with no pair marked copy but one marked not a "
    "copy as one row with an empty reference_id. A query you mark is judged as a whole: its "
    "other pairs count as not a copy; unmarked queries are left out."
)
METRIC_LABELS = {
    "micro_ap": "micro-AP",
    "recall_at_p90": "recall at precision 0.9",
    "threshold_at_p90": "score threshold at precision 0.9",
    "recall_at_rank1": "recall at rank 1",
    "recall_at_rank10": "recall at rank 10",
    "n_predictions": "predictions",
    "n_positives": "ground-truth pairs",
    "n_queries": "ground-truth queries",
}


def _e(value: Any) -> str:
    """HTML-escape text for element content and double-quoted attributes alike."""
    return html.escape(str(value), quote=True)


def _metrics_html(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return ""
    cells = [
        f"<tr><th>{_e(label)}</th><td>{_e(format_value(metrics[key], key))}</td></tr>"
        for key, label in METRIC_LABELS.items()
        if key in metrics
    ]
    return f'<table class="metrics" id="metrics">{"".join(cells)}</table>' if cells else ""


def _image_cell(composite: Composite, row: GalleryRow) -> str:
    notes = [f"{composite.lines} RANSAC inliers ({composite.inliers} distinct)"]
    if composite.flipped:
        notes.append("matched as a mirrored copy")
    if composite.query_missing:
        notes.append("query image missing")
    if composite.reference_missing:
        notes.append("reference image missing")
    width, height = composite.size
    alt = f"query {row.query_id} | reference {row.reference_id}"
    return (
        f'<td><img src="{composite.uri}" width="{width}" height="{height}" alt="{_e(alt)}">'
        f'<div class="caption">{_e("; ".join(notes))}</div></td>'
    )


def _row_html(rank: int, row: GalleryRow, composite: Composite, with_truth: bool) -> str:
    evidence = "".join(
        f"<dt>{_e(name)}</dt><dd>{_e(format_value(value, name))}</dd>"
        for name, value in row.evidence.items()
    )
    cells = [
        f"<td>{rank}</td>",
        _image_cell(composite, row),
        f"<td>query <code>{_e(row.query_id)}</code><br>"
        f"reference <code>{_e(row.reference_id)}</code></td>",
        f'<td class="score">{_e(format_value(row.score))}'
        + (f'<div class="caption">{_e(row.note)}</div>' if row.note else "")
        + "</td>",
        f'<td><dl class="evidence">{evidence}</dl></td>' if evidence else f"<td>{MISSING}</td>",
    ]
    if with_truth:
        verdict = "yes" if row.correct else "no"
        cells.append(f'<td class="{verdict}">{verdict}</td>')
    cells.append(REVIEW_CELL)
    return (
        f'<tr class="match" data-query="{_e(row.query_id)}" '
        f'data-reference="{_e(row.reference_id)}">{"".join(cells)}</tr>'
    )


REVIEW_CELL = (
    '<td class="review"><button type="button" class="mark" data-mark="copy" '
    'aria-pressed="false">copy</button><button type="button" class="mark" '
    'data-mark="not_copy" aria-pressed="false">not a copy</button></td>'
)


def _review_html() -> str:
    """The reviewer's bar: status, export button and what the export means."""
    return (
        '<div id="review"><p><strong>Review</strong> <span id="review-status"></span> '
        '<button type="button" id="review-export">Export labels (CSV)</button></p>'
        f'<p class="caption">{_e(REVIEW_HELP)}</p></div>'
    )


def _section_html(section: Section, composites: Mapping[Pair, Composite], with_truth: bool) -> str:
    heads = ["#", "query | reference", "ids", "score", "evidence"]
    heads += ["true copy"] if with_truth else []
    heads += ["review"]
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    body = "".join(
        _row_html(rank, row, composites[row.pair], with_truth)
        for rank, row in enumerate(section.rows, start=1)
    )
    if not section.rows:
        body = f'<tr class="empty"><td colspan="{len(heads)}">No pairs.</td></tr>'
    return (
        f'<section id="{_e(section.id)}"><h2>{_e(section.title)} ({len(section.rows)})</h2>'
        f"<p>{_e(section.description)}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def render_html(
    sections: Sequence[Section],
    composites: Mapping[Pair, Composite],
    metrics: Mapping[str, Any] | None,
    with_truth: bool,
) -> str:
    """The whole page as one string (self-contained; see the module docstring)."""
    nav = "".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in sections)
    body = "".join(_section_html(s, composites, with_truth) for s in sections)
    legend = (
        "Each row: the query (left) and the reference (right) as stored after ingest, with the "
        "verified SIFT inlier correspondences drawn between them; the score is the fused score "
        f"of predictions.csv ({MISSING}: not predicted)."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Copy-detection gallery</title><style>{STYLE}</style></head>\n<body>"
        f"<header><h1>Copy-detection gallery</h1>{_metrics_html(metrics)}"
        f'<p class="caption">{_e(legend)}</p><nav>{nav}</nav></header>\n'
        f"{_review_html()}\n"
        f"{body}\n<script>{SCRIPT}</script></body></html>\n"
    )


# --- The whole job ------------------------------------------------------------------------------


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """``metrics.json`` as a dict (an error naming the file when it is not a JSON object)."""
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics")
    return metrics


def p90_threshold(metrics: Mapping[str, Any] | None) -> float | None:
    """``threshold_at_p90`` of the metrics, None when absent, null or not a finite number."""
    value = (metrics or {}).get("threshold_at_p90")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def write_gallery(
    inputs: GalleryInputs,
    path: str | os.PathLike,
    params: GalleryParams,
    verify: VerifyParams,
) -> dict[str, int]:
    """Build the gallery and write it atomically; returns the row count of each section."""
    predictions = deduplicate(read_predictions(inputs.predictions))
    threshold = p90_threshold(inputs.metrics)
    sections = build_sections(predictions, inputs.ground_truth, threshold, params.gallery_rows)
    pairs = list(dict.fromkeys(row.pair for s in sections for row in s.rows))
    evidence = read_pair_evidence(inputs.scored_pairs, pairs)
    sections = [
        replace(s, rows=[replace(r, evidence=evidence.get(r.pair, {})) for r in s.rows])
        for s in sections
    ]
    renderer = PairRenderer(inputs, pairs, params, verify)
    composites = {
        pair: renderer.render(pair, evidence_view(evidence.get(pair, {}))) for pair in pairs
    }
    page = render_html(sections, composites, inputs.metrics, inputs.ground_truth is not None)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    counts = {s.id: len(s.rows) for s in sections}
    logger.info("gallery %s: %d pairs shown, rows per section %s", path, len(pairs), counts)
    return counts
