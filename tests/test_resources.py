"""Static files in resources/: found through the package's path from any working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from copydetect import gallery
from copydetect.resources import RESOURCES_DIR, resource_path, resource_text

ROOT = Path(__file__).resolve().parents[1]


def test_resources_are_the_checkouts_top_level_folder() -> None:
    assert RESOURCES_DIR == ROOT / "resources"


def test_the_gallery_inlines_its_style_and_script_files() -> None:
    css = (ROOT / "resources" / "gallery" / "gallery.css").read_text(encoding="utf-8")
    js = (ROOT / "resources" / "gallery" / "gallery.js").read_text(encoding="utf-8")
    assert css == gallery.STYLE and "dl.evidence" in css
    assert js == gallery.SCRIPT and "imagesLoaded" in js


def test_a_resource_is_found_from_another_working_directory(tmp_path: Path) -> None:
    code = (
        "from copydetect.resources import resource_text;"
        "print(len(resource_text('gallery/gallery.js')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "workflow_scripts")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(result.stdout) == len(resource_text("gallery/gallery.js"))


def test_a_missing_resource_names_the_path() -> None:
    with pytest.raises(FileNotFoundError, match=r"resources/gallery/nothing\.css"):
        resource_path("gallery/nothing.css")
