"""Merge per-shard ingest outcomes into one summary per image set."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from copydetect.atomic import atomic_path
from copydetect.ingest import read_rejects
from copydetect.shards import read_shard_ids


@dataclass
class ImageSetSummary:
    """Counts of one image set after ingest; ``reasons`` counts rejects by reason code."""

    n_shards: int = 0
    n_images: int = 0
    n_rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    images_per_shard: dict[str, int] = field(default_factory=dict)


def _reason_code(reason: str) -> str:
    # Reasons are "code: detail"; the code is what a user counts.
    return reason.split(":", 1)[0].strip()


def summarize_shards(
    shards: Sequence[str | os.PathLike],
    reject_tables: Sequence[str | os.PathLike],
    merged_rejects: str | os.PathLike,
    listing_rejects: Sequence[Sequence[str]] = (),
) -> ImageSetSummary:
    """Count images per shard and merge the reject tables (``id,path,reason``) into one, after
    ``listing_rejects``: the rows of files that listing the set turned away (not images,
    unreadable folders, names that are not UTF-8), which never reach an ingest job."""
    summary = ImageSetSummary(n_shards=len(shards))
    for shard in shards:
        n = len(read_shard_ids(shard))
        summary.images_per_shard[Path(shard).stem] = n
        summary.n_images += n
    reasons: Counter[str] = Counter()
    with atomic_path(merged_rejects) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "path", "reason"])
        for image_id, path, reason in listing_rejects:
            writer.writerow([image_id, path, reason])
            reasons[_reason_code(reason)] += 1
        for table in reject_tables:
            for reject in read_rejects(table):
                writer.writerow([reject.id, reject.path, reject.reason])
                reasons[_reason_code(reject.reason)] += 1
    summary.n_rejected = sum(reasons.values())
    summary.reasons = dict(sorted(reasons.items()))
    return summary


def write_summary(summary: ImageSetSummary, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n")


def format_run_summary(results: str | os.PathLike) -> str:
    """Human-readable lines about a finished run: shards, rejects, predictions and metrics."""
    results = Path(results)
    lines = []
    for summary_file in sorted(results.glob("images/*/summary.json")):
        s = json.loads(summary_file.read_text())
        reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items()) or "none"
        lines.append(
            f"{summary_file.parent.name:>10}: {s['n_images']} images in {s['n_shards']} shards, "
            f"{s['n_rejected']} rejected ({reasons})"
        )
    predictions = results / "predictions.csv"
    if predictions.exists():
        n_rows = sum(1 for _ in predictions.open()) - 1
        lines.append(f"predictions: {n_rows} rows in {predictions}")
    metrics_file = results / "eval" / "metrics.json"
    if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
        threshold = m["threshold_at_p90"]
        lines.append(
            f"    metrics: micro-AP {m['micro_ap']:.4f}, recall@P90 {m['recall_at_p90']:.4f}"
            f" (score threshold {threshold if threshold is None else f'{threshold:.4f}'}), "
            f"recall@1 {m['recall_at_rank1']:.4f} — {metrics_file}"
        )
    lines += _ablation_lines(results / "eval" / "ablation.csv")
    gallery = results / "report" / "gallery.html"
    if gallery.exists():
        lines.append(f"    gallery: {gallery} (open it in a browser)")
    return "\n".join(lines)


def _ablation_lines(path: Path) -> list[str]:
    """One line: micro-AP of each branch alone next to the fused score's."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    figures = ", ".join(f"{r['branch']} {float(r['micro_ap']):.4f}" for r in rows)
    return [f"   branches: micro-AP {figures} — {path}"]
