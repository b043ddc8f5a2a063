"""One source of config truth: config/config.yaml (defaults), config/schema.yaml (types and
ranges) and the parameter dataclasses must name the same keys, and every key must be read."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import copydetect
from copydetect.params import REGISTRY, ConfigError, config_defaults, config_schema, defaults

ROOT = Path(__file__).resolve().parents[1]
Path_ = tuple[str, ...]


def leaves(config: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Key paths of the values of a config (an empty mapping is a value: a user-filled map)."""
    if isinstance(config, dict) and config:
        for key, value in config.items():
            yield from leaves(value, (*prefix, str(key)))
    elif prefix:
        yield prefix


def resolve(node: dict) -> dict:
    """A schema node with its ``$ref`` (only local ``#/$defs/...`` ones are used) followed."""
    while "$ref" in node:
        node = config_schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def child(node: dict, key: str) -> dict | None:
    """The schema of ``key`` under ``node``: a property, a property of one of its oneOf
    branches, or the schema of a free map's values (models, overlay.train.augment)."""
    node = resolve(node)
    if key in node.get("properties", {}):
        return resolve(node["properties"][key])
    for branch in node.get("oneOf", []):
        found = child(branch, key)
        if found is not None:
            return found
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def keys_missing_from_schema(config: dict) -> list[str]:
    missing = []
    for path in leaves(config):
        node: dict | None = config_schema()
        for key in path:
            node = child(node, key) if node is not None else None
        if node is None:
            missing.append(".".join(path))
    return missing


def schema_keys(node: dict, prefix: Path_ = ()) -> Iterator[Path_]:
    """Key paths the schema names explicitly (free maps such as ``models`` are not walked)."""
    node = resolve(node)
    for key, sub in node.get("properties", {}).items():
        sub = resolve(sub)
        if sub.get("type") == "object" and "properties" in sub:
            yield from schema_keys(sub, (*prefix, key))
        else:
            yield (*prefix, key)


# --- which config keys the rules read ----------------------------------------------------------

ACCESS = re.compile(r"\bconfig((?:\[[^\[\]]+\])+)")
ALIAS = re.compile(r"^\s*(\w+) = config((?:\[[^\[\]]+\])+)\s*$", re.M)
SUBSCRIPT = re.compile(r"\[([^\[\]]+)\]")
# config[set_name] in rules/common.smk: set_name is one of its IMAGE_SETS.
DYNAMIC_TOP_LEVEL = ("queries", "references", "training")


def _keys(subscripts: str) -> Path_:
    """``["a"][name]`` → ("a", "*"): a non-literal subscript reads any key."""
    keys = []
    for item in SUBSCRIPT.findall(subscripts):
        literal = re.fullmatch(r"""\s*["'](\w+)["']\s*""", item)
        keys.append(literal.group(1) if literal else "*")
    return tuple(keys)


def rule_reads(text: str) -> set[Path_]:
    """Key paths the rules read: every ``config[...]`` chain (one that is passed on whole,
    e.g. to ``params:``, reads everything under it), and chains through a local alias
    (``fusion = config["fusion"]`` then ``fusion["method"]``)."""
    # An alias assignment itself is no read of the whole section: only its uses are.
    reads = {_keys(chain) for chain in ACCESS.findall(ALIAS.sub("", text))}
    for name, chain in ALIAS.findall(text):
        base = _keys(chain)
        uses = re.findall(rf"\b{name}((?:\[[^\[\]]+\])+)", text)
        reads |= {(*base, *_keys(sub)) for sub in uses} or {base}
    return reads


def unread_keys(config: dict, reads: set[Path_]) -> list[str]:
    def covered(path: Path_) -> bool:
        for read in reads:
            if read and read[0] == "*":
                continue  # config[set_name]: see DYNAMIC_TOP_LEVEL
            if len(read) <= len(path) and all(r in ("*", path[i]) for i, r in enumerate(read)):
                return True
        return path[0] in DYNAMIC_TOP_LEVEL and len(path) == 1

    return [".".join(path) for path in leaves(config) if not covered(path)]


@pytest.fixture(scope="module")
def workflow_text() -> str:
    files = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
    return "\n".join(path.read_text() for path in files)


@pytest.fixture(scope="module")
def param_classes() -> dict:
    """Every parameter dataclass: import all copydetect modules so each one registers."""
    for module in pkgutil.iter_modules(copydetect.__path__):
        importlib.import_module(f"copydetect.{module.name}")
    return dict(REGISTRY)


# --- the tests ---------------------------------------------------------------------------------


def test_every_config_key_is_in_the_schema() -> None:
    assert keys_missing_from_schema(config_defaults()) == []
    broken = copy.deepcopy(config_defaults())
    broken["verify"]["ratioo"] = 0.7
    broken["models"]["vlad"]["powr"] = 0.5
    assert sorted(keys_missing_from_schema(broken)) == ["models.vlad.powr", "verify.ratioo"]


def test_every_schema_key_has_its_default_in_the_config() -> None:
    configured = {path[:n] for path in leaves(config_defaults()) for n in range(1, len(path) + 1)}
    assert sorted(set(schema_keys(config_schema())) - configured) == []
    vlad = set(resolve(config_schema()["$defs"]["vlad_model"])["properties"])
    assert vlad == set(config_defaults()["models"]["vlad"])


def test_the_schema_has_no_defaults() -> None:
    text = (ROOT / "config" / "schema.yaml").read_text()
    assert not re.search(r"\bdefault:", text), "defaults belong in config/config.yaml"


def test_every_config_key_is_read_by_a_rule(workflow_text: str) -> None:
    assert "config[set_name]" in workflow_text  # what DYNAMIC_TOP_LEVEL stands for
    reads = rule_reads(workflow_text)
    assert unread_keys(config_defaults(), reads) == []
    extra = copy.deepcopy(config_defaults())
    extra["unused"] = 1
    extra["local"]["unused"] = 2
    extra["overlay"]["unused"] = 3  # read through the alias `overlay = config["overlay"]`
    assert unread_keys(extra, reads) == ["local.unused", "overlay.unused", "unused"]


def test_rule_reads_follow_aliases_and_wildcards() -> None:
    text = 'x = config["a"]\ny = x["b"]\nz = config["c"][wildcards.m]\nw = config["d"]\n'
    assert rule_reads(text) == {("a", "b"), ("c", "*"), ("d",)}


def test_every_dataclass_names_exactly_its_config_section(param_classes: dict) -> None:
    assert len(param_classes) >= 14
    for cls, spec in param_classes.items():
        names = {f.name for f in dataclasses.fields(cls)}
        if spec.section is None:  # defaults in the class: compare with the schema's keys
            schema = resolve(config_schema()["$defs"][spec.schema.rsplit("/", 1)[-1]])
            assert names == set(schema["properties"]) - set(spec.read_elsewhere), cls
            continue
        section = defaults(spec.section)
        assert names == set(section) - set(spec.read_elsewhere), cls
        for field in dataclasses.fields(cls):
            default = (
                field.default
                if field.default is not dataclasses.MISSING
                else field.default_factory()  # type: ignore[misc]
            )
            assert default == section[field.name], (cls, field.name)


def test_a_field_the_schema_lacks_stops_the_import() -> None:
    from copydetect.params import config_params

    with pytest.raises(TypeError, match="differ from the schema's sift keys"):

        @config_params("sift")
        class Broken:
            max_short_side: int
            sigma: float


def test_params_are_checked_by_the_schema_naming_the_key(param_classes: dict) -> None:
    from copydetect.normalization import NormalizationParams
    from copydetect.verify import VerifyParams

    with pytest.raises(ConfigError, match=r"global\.normalization\.pca_dim: 0 is less than"):
        NormalizationParams(pca_dim=0)
    with pytest.raises(ConfigError, match=r"verify\.method: 'projective' is not one of"):
        VerifyParams(method="projective")
    with pytest.raises(ConfigError, match=r"unknown verify parameters: \['ratioo'\]"):
        VerifyParams.from_mapping({"ratioo": 0.7})


def test_defaults_are_copies() -> None:
    section = defaults("local.search")
    section["k"] = 99
    assert defaults("local.search")["k"] != 99
    assert yaml.safe_load((ROOT / "config" / "config.yaml").read_text()) == config_defaults()
