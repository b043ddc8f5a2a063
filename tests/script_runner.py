"""Run a rule script in-process as Snakemake would: a global ``snakemake`` stand-in."""

from __future__ import annotations

import logging
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow_scripts"


def run_script(name: str, snakemake: SimpleNamespace) -> None:
    """Run ``workflow_scripts/<name>``, restoring stdout, stderr and the logging setup it
    replaces."""
    saved, saved_stdout, root = sys.stderr, sys.stdout, logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # so the script's basicConfig takes effect, as in a fresh process
    try:
        runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": snakemake})
    finally:
        if sys.stderr is not saved:
            sys.stderr.close()
        sys.stderr, sys.stdout = saved, saved_stdout
        root.handlers, root.level = handlers, level
