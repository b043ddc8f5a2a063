"""Optional rule inputs: input functions return ``[]`` for an absent file, one path, or a list;
the rule scripts read them the same way through these two functions."""

from __future__ import annotations

from typing import Any


def input_files(inputs: Any, name: str) -> list[str]:
    """The files of the named input of ``snakemake.input``: absent or ``[]`` → ``[]``."""
    value = getattr(inputs, name, [])
    return [value] if isinstance(value, str) else list(value)


def optional_file(inputs: Any, name: str) -> str | None:
    """The single file of an optional input, or None when it is absent."""
    files = input_files(inputs, name)
    return files[0] if files else None
