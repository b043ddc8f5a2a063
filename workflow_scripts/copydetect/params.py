"""Config sections → parameter dataclasses, with one source for every default and every check.

``config/config.yaml`` holds the defaults (every key commented), ``config/schema.yaml`` the
types and ranges. A parameter dataclass only names its typed fields: :func:`config_params`
fills their defaults from the config file and checks every instance against the schema, so
params built by a rule script, a test or a benchmark obey the same rules as the workflow's
config. Only what the schema cannot say (relations between keys) is checked in the class.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonschema import Draft202012Validator

T = TypeVar("T")

# The checkout's (or the installed package's) config folder: the defaults the workflow runs with.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


class ConfigError(ValueError):
    """A parameter value the schema refuses, or an unknown key."""


@dataclasses.dataclass(frozen=True)
class ParamsSpec:
    """Where a parameter dataclass comes from (what tests/test_config.py checks)."""

    section: str | None  # dotted path into config/config.yaml; None: defaults in the class
    schema: str  # dotted config path or JSON pointer into config/schema.yaml
    read_elsewhere: tuple[str, ...]  # keys of the section that are not fields


# Every class made by config_params, in the order they were imported.
REGISTRY: dict[type, ParamsSpec] = {}


# libyaml's loader when PyYAML has it: the same documents ~10x faster (every job parses both
# files at import; the pure-Python loader took ~0.1 CPU s of each job's start-up).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def config_defaults() -> dict[str, Any]:
    """config/config.yaml as a dict (the workflow's defaults)."""
    return yaml.load((CONFIG_DIR / "config.yaml").read_text(), Loader=_YAML_LOADER)


@cache
def config_schema() -> dict[str, Any]:
    """config/schema.yaml as a dict."""
    return yaml.load((CONFIG_DIR / "schema.yaml").read_text(), Loader=_YAML_LOADER)


def fill_defaults(config: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Add to ``config`` (in place) every key of ``defaults`` it lacks, section by section, as
    Snakemake's ``configfile:`` merge would: a value ``config`` has wins, nested mappings merge.
    Returns ``config``."""
    for key, value in defaults.items():
        if key not in config:
            config[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(config[key], dict):
            fill_defaults(config[key], value)
    return config


def defaults(section: str) -> dict[str, Any]:
    """A copy of a config section's defaults, e.g. ``defaults("global.normalization")``."""
    value: Any = config_defaults()
    for key in section.split("."):
        value = value[key]
    return copy.deepcopy(value)


def section_schema(pointer: str) -> dict[str, Any]:
    """The sub-schema at a dotted config path (``global.search``: the ``properties`` chain) or at
    a JSON pointer into schema.yaml (``/$defs/vlad_model``)."""
    node: Any = config_schema()
    if pointer.startswith("/"):
        for key in pointer.strip("/").split("/"):
            node = node[key]
    else:
        for key in pointer.split("."):
            node = node["properties"][key]
    return node


@cache
def _validator(pointer: str) -> Draft202012Validator:
    # The section's references ("#/$defs/...") resolve against the whole document's $defs.
    root_defs = config_schema().get("$defs", {})
    return Draft202012Validator({"$defs": root_defs, **section_schema(pointer)})


def _plain(value: Any) -> Any:
    """YAML-shaped data: tuples as lists (JSON Schema arrays), mappings as dicts."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def check_section(
    values: Mapping[str, Any], pointer: str, section: str, error: type[Exception] = ConfigError
) -> None:
    """Raise ``error`` naming the key (``section.key``) of the first value the schema refuses."""
    for problem in _validator(pointer).iter_errors(_plain(values)):
        where = ".".join([section, *map(str, problem.absolute_path)])
        raise error(f"{where}: {problem.message}")


def config_params(
    section: str | None,
    *,
    schema: str | None = None,
    read_elsewhere: tuple[str, ...] = (),
    error: type[Exception] = ConfigError,
) -> Callable[[type[T]], type[T]]:
    """Make ``cls`` a frozen dataclass of the config section ``section`` (a dotted path).

    Field defaults come from config/config.yaml (``section`` None: the class writes its own,
    for entries the config file has no complete example of); every instance is checked against
    the sub-schema (``schema``: a dotted path or JSON pointer, default ``section``) before the
    class's own ``__post_init__`` runs. The fields must be exactly the schema's keys less
    ``read_elsewhere`` (keys of the section that another reader uses). ``cls.from_mapping``
    builds an instance from a config dict: unknown keys are refused, ``read_elsewhere`` keys
    dropped, missing keys take the defaults.
    """
    pointer = schema or section
    assert pointer is not None, "a config_params class needs a section or a schema"
    label = section or pointer.rsplit("/", 1)[-1]

    def wrap(cls: type[T]) -> type[T]:
        names = _field_names(cls, pointer, read_elsewhere, label)
        section_defaults = defaults(section) if section is not None else {}
        for name, value in section_defaults.items():
            if name in names:
                setattr(cls, name, _default(value))
        own_check = cls.__dict__.get("__post_init__")
        # The section's other keys, as configured, so that the schema sees a whole section.
        others = {k: v for k, v in section_defaults.items() if k in read_elsewhere}

        def __post_init__(self: Any) -> None:
            values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
            check_section({**others, **values}, pointer, label, error)
            if own_check is not None:
                own_check(self)

        def from_mapping(klass: type[T], values: Mapping[str, Any] | None) -> T:
            values = {k: v for k, v in dict(values or {}).items() if k not in read_elsewhere}
            unknown = sorted(set(values) - set(names))
            if unknown:
                raise error(f"unknown {label} parameters: {unknown} (known: {sorted(names)})")
            return klass(**values)

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
        cls.from_mapping = classmethod(from_mapping)  # type: ignore[attr-defined]
        made = dataclasses.dataclass(frozen=True)(cls)
        REGISTRY[made] = ParamsSpec(section, pointer, read_elsewhere)
        return made

    return wrap


def _field_names(cls: type, pointer: str, read_elsewhere: tuple[str, ...], label: str) -> list[str]:
    """The annotated fields of ``cls``; a TypeError at import unless they are exactly the
    schema's keys of the section less ``read_elsewhere``."""
    names = list(cls.__dict__.get("__annotations__", {}))
    expected = set(section_schema(pointer).get("properties", {})) - set(read_elsewhere)
    if set(names) != expected:
        raise TypeError(
            f"{cls.__name__} fields {sorted(names)} differ from the schema's "
            f"{label} keys {sorted(expected)}"
        )
    return names


def _default(value: Any) -> Any:
    """A dataclass default: mutable values (lists, dicts) as a factory of fresh copies."""
    if isinstance(value, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value))
    return value
