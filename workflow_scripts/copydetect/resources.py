"""Static files the workflow ships: the checkout's top-level ``resources/`` folder.

They are found through this package's own path, never the working directory, so a run in any
folder (``--directory``) and a workflow that includes this one as a module find the same files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

# Beside config/ (see copydetect.params.CONFIG_DIR): the package lies in workflow_scripts/.
RESOURCES_DIR = Path(__file__).resolve().parents[2] / "resources"


def resource_path(name: str) -> Path:
    """The path of ``resources/<name>``; a missing file is an error naming where it was looked
    for (a checkout without its resources/ folder)."""
    path = RESOURCES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: a file of the workflow's resources/ folder is missing")
    return path


@cache
def resource_text(name: str) -> str:
    """The UTF-8 text of ``resources/<name>``, exactly as stored (read once per process)."""
    return resource_path(name).read_text(encoding="utf-8")
