"""Weights-free overlay boxes: the axis-aligned rectangle a pasted image leaves in a query.

A copy pasted onto another picture, framed in a screenshot, padded with a border or placed
under a meme caption keeps straight, axis-aligned borders where its pixels meet the
surroundings: a step in colour along (nearly) every pixel of each side. This finder looks for
such rectangles directly, without a trained detector (``overlay.detector: rectangles``):

1. edge maps: a pixel is on a horizontal edge when the colour steps by at least
   ``step`` (0–255, any channel) between the rows one above and one below it (two pixels: a
   resampled paste's border is one or two pixels soft); vertical edges likewise;
2. candidate lines: the rows (columns) with the most edge pixels, local peaks only, and the
   image's own border (a paste may touch it);
3. every rectangle of two candidate rows and two candidate columns is scored by the share of
   each side that lies on an edge (one pixel of slack across the side); its score is the
   weakest interior side's share. At least ``min_interior_sides`` sides must lie inside the
   image: a single line (a horizon, a caption bar) with the image border is no paste.

The scores are the boxes' confidences; ``copydetect.detector.decide`` then applies the same
area and aspect filters as to a YOLO detector's boxes. Rotated pastes are not found.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from copydetect.params import config_params


@config_params("overlay.rectangles")
class RectangleParams:
    """The ``overlay.rectangles`` section of the config (ranges: config/schema.yaml)."""

    step: float  # colour step (0-255, largest channel) across an edge pixel
    min_side: float  # a rectangle's side spans at least this share of the image's side
    min_support: float  # share of a side that must be edge for the box to be reported
    max_lines: int  # candidate rows (and columns) tried, the strongest
    min_interior_sides: int  # sides that must lie inside the image (not on its border)


@dataclass(frozen=True)
class EdgeLines:
    """Candidate lines along one axis and the cumulative edge counts along them."""

    positions: np.ndarray  # int: row (or column) indices, image border included
    on_border: np.ndarray  # bool: the line is the image's own border
    cumulative: np.ndarray  # [len(positions), length + 1]: edge pixels up to each position


def edge_maps(rgb: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean maps of horizontal and vertical edge pixels, [h, w] each, with one pixel of
    slack across the edge (a border may fall between two rows)."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    h, w = a.shape[:2]
    horizontal = np.zeros((h, w), dtype=bool)
    vertical = np.zeros((h, w), dtype=bool)
    horizontal[1:-1] = _largest_channel(cv2.absdiff(a[2:], a[:-2])) >= step
    vertical[:, 1:-1] = _largest_channel(cv2.absdiff(a[:, 2:], a[:, :-2])) >= step
    horizontal[1:-1] |= horizontal[:-2] | horizontal[2:]
    vertical[:, 1:-1] |= vertical[:, :-2] | vertical[:, 2:]
    return horizontal, vertical


def _largest_channel(diff: np.ndarray) -> np.ndarray:
    """The largest channel of ``[h, w, c]`` uint8 (``max(axis=2)`` is several times slower)."""
    diff = diff.reshape(diff.shape[0], diff.shape[1], -1)
    out = diff[..., 0].copy()
    for c in range(1, diff.shape[2]):
        np.maximum(out, diff[..., c], out=out)
    return out


def candidate_lines(edges: np.ndarray, min_length: int, max_lines: int) -> EdgeLines:
    """The strongest rows of ``edges`` (pass the transpose for columns): local peaks of the
    edge count with at least ``min_length`` edge pixels, plus both border rows."""
    counts = edges.sum(axis=1)
    padded = np.concatenate([[-1], counts, [-1]])
    # A peak is at least its neighbours: the two rows of one slack-widened edge both qualify,
    # the later one is dropped below as a duplicate of its neighbour.
    peaks = (counts >= padded[:-2]) & (counts >= padded[2:]) & (counts >= min_length)
    rows = np.flatnonzero(peaks)
    rows = rows[np.concatenate([[True], np.diff(rows) > 1])] if len(rows) else rows
    rows = rows[np.argsort(-counts[rows], kind="stable")[:max_lines]]
    border = np.array([0, len(counts) - 1])
    positions = np.unique(np.concatenate([rows, border]))
    cumulative = np.zeros((len(positions), edges.shape[1] + 1), dtype=np.int32)
    np.cumsum(edges[positions], axis=1, out=cumulative[:, 1:])
    return EdgeLines(positions, np.isin(positions, border), cumulative)


def _side_support(lines: EdgeLines, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """[lines, spans]: share of edge pixels of every line between ``starts`` and ``stops``;
    1 on the image border (the paste ends there)."""
    inside = lines.cumulative[:, stops] - lines.cumulative[:, starts]
    share = inside / np.maximum(stops - starts, 1)[None, :]
    return np.where(lines.on_border[:, None], 1.0, share)


def find_rectangles(
    rgb: np.ndarray, params: RectangleParams, max_boxes: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[n, 4]`` (x0, y0, x1, y1 in pixels) and scores ``[n]`` of the rectangles whose
    weakest interior side is at least ``min_support`` edge, best first (ties: larger first)."""
    h, w = np.asarray(rgb).shape[:2]
    horizontal, vertical = edge_maps(rgb, params.step)
    rows = candidate_lines(horizontal, round(params.min_side * w), params.max_lines)
    cols = candidate_lines(vertical.T, round(params.min_side * h), params.max_lines)
    top, bottom = _line_pairs(rows.positions, params.min_side * h)  # row pairs r
    left, right = _line_pairs(cols.positions, params.min_side * w)  # column pairs c
    y0, y1 = rows.positions[top], rows.positions[bottom]
    x0, x1 = cols.positions[left], cols.positions[right]
    # Support of each side over every (row pair r, column pair c): [4, r, c].
    along_rows = _side_support(rows, x0, x1)  # [rows, c]
    along_cols = _side_support(cols, y0, y1)  # [columns, r]
    sides = np.stack(
        np.broadcast_arrays(
            along_rows[top], along_rows[bottom], along_cols[left].T, along_cols[right].T
        )
    )
    inside_rows = (~rows.on_border[top]).astype(int) + ~rows.on_border[bottom]
    inside_cols = (~cols.on_border[left]).astype(int) + ~cols.on_border[right]
    interior = inside_rows[:, None] + inside_cols[None, :]  # sides inside the image
    score = sides.min(axis=0) if sides.size else np.zeros((len(top), len(left)))
    r, c = np.nonzero((interior >= params.min_interior_sides) & (score >= params.min_support))
    boxes = np.stack([x0[c], y0[r], x1[c] + 1, y1[r] + 1], axis=1).reshape(-1, 4)
    scores = score[r, c]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.lexsort((-area, -scores))[:max_boxes]
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)


def _line_pairs(positions: np.ndarray, min_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of every pair of lines with ``positions[j] - positions[i] >= min_gap``
    (positions are sorted, so ``i < j``)."""
    i, j = np.meshgrid(np.arange(len(positions)), np.arange(len(positions)), indexing="ij")
    keep = (positions[j] - positions[i]) >= min_gap
    return i[keep], j[keep]
