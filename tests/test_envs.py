"""The conda environments cover what their rules import: every third-party module a rule script
imports (itself or through the copydetect modules it imports, transitively, heavy imports inside
functions included) belongs to a distribution listed in the env the rule's ``conda:`` names."""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "copydetect"
PACKAGE_DIR = ROOT / "workflow_scripts" / PACKAGE

# Import name -> the distributions that provide it (any one will do). An import missing here
# fails the test: add its distribution to the env and to this table.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "cv2": ("opencv-python-headless", "opencv-python", "opencv"),
    "faiss": ("faiss-cpu", "faiss-gpu"),
    "h5py": ("h5py",),
    "jsonschema": ("jsonschema",),
    "matplotlib": ("matplotlib",),
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "pandas": ("pandas",),
    "PIL": ("pillow",),
    "pyarrow": ("pyarrow",),
    "safetensors": ("safetensors",),
    "skimage": ("scikit-image",),
    "sklearn": ("scikit-learn",),
    "timm": ("timm",),
    "torch": ("torch", "pytorch"),
    "torchvision": ("torchvision",),
    "ultralytics": ("ultralytics",),
    "yaml": ("pyyaml",),
}
# What parquet tables need at run time without an import naming it (pandas' engine).
RUNTIME_ONLY = {"pandas": ("pyarrow",)}


@dataclass(frozen=True)
class ScriptRule:
    """A rule that runs a script in a conda env (paths relative to the checkout)."""

    name: str
    env: Path
    script: Path


def script_rules() -> list[ScriptRule]:
    """Every rule of rules/*.smk with both ``conda:`` and ``script:`` (snakefmt layout: the
    value on the line after the keyword)."""
    found = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        blocks = re.split(r"^(?=(?:rule|checkpoint) \w+:)", smk.read_text(), flags=re.M)
        for block in blocks[1:]:
            name = re.match(r"(?:rule|checkpoint) (\w+):", block).group(1)
            values = {
                key: (smk.parent / path).resolve()
                for key, path in re.findall(r'^    (conda|script):\n\s+"([^"]+)"', block, re.M)
            }
            if "script" in values:
                assert "conda" in values, f"rule {name} runs a script but names no conda env"
                found.append(ScriptRule(name, values["conda"], values["script"]))
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_optional(node: ast.Try) -> bool:
    """A try whose handler catches ImportError: the code runs on without the module."""
    caught = [h.type for h in node.handlers if h.type is not None]
    names = [n for t in caught for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
    return any(isinstance(n, ast.Name) and n.id.endswith("ImportError") for n in names) or any(
        isinstance(n, ast.Name) and n.id == "ModuleNotFoundError" for n in names
    )


def _imported_names(tree: ast.AST, module: str) -> set[str]:
    """Dotted names of the modules a file imports anywhere (heavy imports inside functions
    too), except under TYPE_CHECKING and in a try that handles ImportError (optional)."""
    names: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Try) and _is_optional(node):
            stack.extend([*node.handlers, *node.orelse, *node.finalbody])
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y inside copydetect
                base = ".".join(module.split(".")[: -node.level] + [node.module or ""])
            else:
                base = node.module or ""
            names.add(base.rstrip("."))
            # `from copydetect import x` may name a submodule
            names.update(f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _package_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    path = PACKAGE_DIR.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


@cache
def third_party_imports(script: Path) -> frozenset[str]:
    """Top-level names of the non-stdlib modules a script needs, following copydetect."""
    seen: set[Path] = set()
    todo = [(script, "__main__")]
    found: set[str] = set()
    while todo:
        path, module = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(ast.parse(path.read_text()), module):
            top = name.split(".")[0]
            if top == PACKAGE:
                target = _package_file(name)
                if target is not None:
                    todo.append((target, name if target.name != "__init__.py" else name))
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return frozenset(found)


def env_distributions(env: Path) -> set[str]:
    """Lower-case distribution names of a conda env file: conda and pip dependencies."""
    spec = yaml.safe_load(env.read_text())
    entries: list[str] = []
    for dep in spec["dependencies"]:
        entries.extend(dep["pip"] if isinstance(dep, dict) else [dep])
    names = set()
    for entry in entries:
        match = re.match(r"([A-Za-z0-9_.\-]+)", entry.strip())
        if match and not entry.startswith("-"):
            names.add(match.group(1).lower().replace("_", "-"))
    return names


RULES = script_rules()


def test_every_script_rule_is_found() -> None:
    scripts = {rule.script.name for rule in RULES}
    assert len(RULES) >= 20 and "synthesize_overlay_data.py" in scripts
    assert all(rule.env.is_file() and rule.script.is_file() for rule in RULES)


def test_the_import_walk_follows_copydetect_and_function_level_imports() -> None:
    """synthesize_overlay_data imports yaml only through copydetect.overlay; embed_shard's
    torch is imported inside functions."""
    scripts = ROOT / "workflow_scripts"
    assert "yaml" in third_party_imports(scripts / "synthesize_overlay_data.py")
    assert {"torch", "timm"} <= third_party_imports(scripts / "embed_shard.py")


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_the_rule_env_provides_every_import_of_its_script(rule: ScriptRule) -> None:
    listed = env_distributions(rule.env)
    imports = third_party_imports(rule.script)
    unknown = sorted(imports - DISTRIBUTIONS.keys())
    assert not unknown, f"{rule.script.name} imports {unknown}: add them to DISTRIBUTIONS"
    needed = {name: DISTRIBUTIONS[name] for name in imports}
    needed |= {f"{name} (runtime)": RUNTIME_ONLY[name] for name in imports & RUNTIME_ONLY.keys()}
    missing = {
        name: dists for name, dists in needed.items() if not listed & {d.lower() for d in dists}
    }
    assert not missing, f"{rule.env.name} lacks, for rule {rule.name}: {missing}"


def pins(lines: list[str]) -> dict[str, str]:
    """name -> version of the ``name==version`` lines (comments and other lines skipped)."""
    found = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


@pytest.mark.parametrize(
    ("env", "requirements"),
    [("cpu.yaml", "requirements.txt"), ("gpu.yaml", "requirements-gpu.txt")],
)
def test_env_pins_are_the_requirements_pins(env: str, requirements: str) -> None:
    """The conda route installs what the pip route does (the same versions)."""
    spec = yaml.safe_load((ROOT / "envs" / env).read_text())
    pip = next(dep["pip"] for dep in spec["dependencies"] if isinstance(dep, dict))
    env_pins = pins(pip)
    required: dict[str, str] = {}
    for name in (requirements, "requirements-opencv.txt"):  # OpenCV's pin has its own file
        required |= pins((ROOT / name).read_text().splitlines())
    differ = {n: (v, required.get(n)) for n, v in env_pins.items() if required.get(n) != v}
    assert env_pins and not differ, f"{env} vs {requirements}: {differ}"
    python = next(dep for dep in spec["dependencies"] if str(dep).startswith("python="))
    assert python == "python=3.11"
