"""Plain configs (dataclass <-> JSON) shared by the data, model and training stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class ConfigError(ValueError):
    """A configuration names an unknown key or holds an invalid value."""


class JsonConfig:
    """Mixin for dataclass configs: ``to_dict()`` and a strict ``from_dict()``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
        """Build from a dict; unknown keys raise :class:`ConfigError` naming them."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{cls.__name__}: expected a JSON object, got {type(values).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**values)
