"""Run a rule script in-process as Snakemake would: a global ``snakemake`` stand-in."""

from __future__ import annotations

import logging
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow_scripts"


class Named(dict):
    """A Snakemake section stand-in (``snakemake.resources``, ``.wildcards``): attribute access
    and ``get``."""

    __getattr__ = dict.__getitem__


def complete_job(snakemake: SimpleNamespace) -> SimpleNamespace:
    """``snakemake`` with what Snakemake gives every job and a test may leave out: one thread,
    no resources beyond the defaults (so no ``gpu``), no wildcards. Params stay the test's own:
    a script reads exactly what its rule declares."""
    given = vars(snakemake)
    return SimpleNamespace(
        **{"threads": 1, "resources": Named(), "wildcards": Named(), **given},
    )


def run_script(name: str, snakemake: SimpleNamespace) -> None:
    """Run ``workflow_scripts/<name>``, restoring stdout, stderr and the logging setup it
    replaces."""
    saved, saved_stdout, root = sys.stderr, sys.stdout, logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # so the script's basicConfig takes effect, as in a fresh process
    try:
        runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": complete_job(snakemake)})
    finally:
        if sys.stderr is not saved:
            sys.stderr.close()
        sys.stderr, sys.stdout = saved, saved_stdout
        root.handlers, root.level = handlers, level
        logging.captureWarnings(False)
