"""Config sections → parameter dataclasses, the same way for every stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def check_known(
    cls: type, values: Mapping[str, Any], section: str, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` naming the keys of ``values`` that ``cls`` has no field for: a typo in
    the config would otherwise be silently unused."""
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise error(f"unknown {section} parameters: {unknown}")


def from_config(
    cls: type[T],
    values: Mapping[str, Any] | None,
    section: str,
    error: type[Exception] = ValueError,
) -> T:
    """``cls(**values)`` for a config section (``None`` = all defaults), unknown keys refused."""
    values = dict(values or {})
    check_known(cls, values, section, error)
    return cls(**values)
