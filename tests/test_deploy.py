"""Deploy once, run many folders; include as a module: the workflow run from a folder outside the
checkout with nothing but -s, --directory and the user's own config, and the example workflow
in examples/module that includes it with ``module`` and a prefix. Both run with copydetect not
installed (the editable install hidden), as from a deployed checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, best_per_query, write_tiny_sets

from copydetect.params import fill_defaults

MODULE_EXAMPLE = ROOT / "examples" / "module" / "Snakefile"

# sitecustomize runs after the .pth files: it drops the editable install's finder, so that
# `import copydetect` only works from the folders on sys.path (as when nothing is installed).
HIDE_INSTALLED_PACKAGE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
"""


def deployed_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell with a checkout that is not pip-installed: no
    PYTHONPATH to the checkout, and the venv's editable copydetect hidden (in every job too)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_INSTALLED_PACKAGE)
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONHASHSEED": "0"}


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


def test_the_package_is_hidden_in_the_deployed_environment(tmp_path: Path) -> None:
    """The other tests prove something only if copydetect is not importable there by itself."""
    python = Path(SNAKEMAKE).with_name("python")
    result = subprocess.run(
        [python, "-c", "import copydetect"],
        cwd=tmp_path,
        env=deployed_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert "No module named 'copydetect'" in result.stderr


def test_fill_defaults_adds_missing_keys_and_keeps_given_ones() -> None:
    config = {"verify": {"ratio": 0.7}, "models": {"mine": {"backend": "onnx"}}, "queries": "q"}
    defaults = {
        "verify": {"ratio": 0.8, "min_inliers": 12},
        "models": {"vlad": {"backend": "vlad"}},
        "queries": "",
        "references": "",
    }
    assert fill_defaults(config, defaults) is config
    assert config == {
        "verify": {"ratio": 0.7, "min_inliers": 12},
        "models": {"mine": {"backend": "onnx"}, "vlad": {"backend": "vlad"}},
        "queries": "q",
        "references": "",
    }
    defaults["verify"]["min_inliers"] = 99  # a copy was added, not the defaults' own object
    assert config["verify"]["min_inliers"] == 12


@pytest.mark.workflow
@pytest.mark.slow
def test_demo_runs_from_a_folder_outside_the_checkout(tmp_path: Path) -> None:
    """The demo's two commands, with only -s, --directory and the user's own config file (the
    demo's, smaller), run from a folder that is not the checkout."""
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["synthesize"].update(references=12, copy_queries=4, distractors=2, training=6)
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    env = deployed_env(tmp_path)
    common = ["-s", str(ROOT / "Snakefile"), "--directory", "run", "--cores", "2"]
    for target in (["synthesize_queries"], []):
        result = run(tmp_path, env, *target, *common, "--configfile", "my.yaml")
        assert result.returncode == 0, result.stdout[-5000:]
    results = tmp_path / "run" / "results"
    assert len(best_per_query(results / "predictions.csv")) >= 4
    assert (results / "eval" / "metrics.json").is_file()
    assert (results / "report" / "gallery.html").is_file()
    # The report's captions (report/*.rst) are found from the checkout too.
    result = run(
        tmp_path, env, *common, "--configfile", "my.yaml", "--report", str(tmp_path / "report.zip")
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert (tmp_path / "report.zip").stat().st_size > 0


def module_config(tmp_path: Path) -> Path:
    """The including workflow's config file: the copy-detection settings under `copydetect:`."""
    sets = write_tiny_sets(tmp_path / "data")
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump({"copydetect": sets}))
    return path


@pytest.mark.workflow
def test_module_example_plans_every_rule_renamed_with_outputs_under_its_prefix(
    tmp_path: Path,
) -> None:
    config = module_config(tmp_path)
    common = ["-s", str(MODULE_EXAMPLE), "--directory", "run", "--cores", "2"]
    result = run(tmp_path, deployed_env(tmp_path), *common, "--configfile", str(config), "-n")
    assert result.returncode == 0, result.stdout[-5000:]
    rules = {
        line.split()[1].rstrip(":")
        for line in result.stdout.splitlines()
        if line.startswith(("rule ", "localrule ", "checkpoint "))
    }
    assert rules - {"all", "matched_queries"}
    assert all(r.startswith("copydetect_") for r in rules - {"all", "matched_queries"})
    outputs = [
        line.split(":", 1)[1].strip()
        for line in result.stdout.splitlines()
        if line.strip().startswith("output:")
    ]
    paths = [p.strip() for line in outputs for p in line.split(",")]
    assert "copydetect/results/predictions.csv" in paths
    assert all(p.startswith("copydetect/") or p == "matched_queries.txt" for p in paths)


@pytest.mark.workflow
@pytest.mark.slow
def test_module_example_runs_to_its_own_target(tmp_path: Path) -> None:
    config = module_config(tmp_path)
    common = ["-s", str(MODULE_EXAMPLE), "--directory", "run", "--cores", "2"]
    result = run(tmp_path, deployed_env(tmp_path), *common, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-5000:]
    matched = (tmp_path / "run" / "matched_queries.txt").read_text().split()
    assert {f"Q{i:05d}" for i in range(4)} <= set(matched)
    best = best_per_query(tmp_path / "run" / "copydetect" / "results" / "predictions.csv")
    assert all(best[f"Q{i:05d}"][0] == f"R{i:06d}" for i in range(4))
    # Everything the module wrote is under its prefix.
    assert {p.name for p in (tmp_path / "run").iterdir()} == {
        ".snakemake",
        "copydetect",
        "logs",  # the including workflow's own rule's log
        "matched_queries.txt",
    }
