"""The shared writer of ``benchmarks/results.md``: each benchmark owns one ``## `` section."""

from __future__ import annotations

from pathlib import Path


def replace_section(results: Path, heading: str, text: str) -> None:
    """Replace the section starting with ``heading`` (up to the next ``## ``) or append it.

    Re-reads the file just before writing: other benchmarks write their own sections.
    """
    old = results.read_text() if results.exists() else "# Benchmark results\n\n"
    start = old.find(heading)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(heading))
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + old[end + 1 :] if end >= 0 else "")
    results.write_text(new)
