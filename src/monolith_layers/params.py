"""Editable constructor parameters, Monolith's ``Layer.params()`` idiom.

``DIN.params()`` returns a :class:`Params` holding every constructor argument
with its default; set attributes, then ``.instantiate()`` builds the layer::

    p = DIN.params()
    p.hidden_units = [10, 1]
    p.embed_dim = 8
    layer = p.instantiate()
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

REQUIRED = inspect.Parameter.empty


class Params:
    """An attribute bag bound to one layer class; unknown names raise."""

    def __init__(self, cls: type, values: dict[str, Any]) -> None:
        object.__setattr__(self, "cls", cls)
        object.__setattr__(self, "_values", dict(values))

    @classmethod
    def of(cls, layer_cls: type) -> Params:
        """All constructor arguments of ``layer_cls`` with their defaults."""
        values = {}
        for name, param in inspect.signature(layer_cls.__init__).parameters.items():
            if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if name in ("device", "dtype"):  # placement, not configuration
                continue
            values[name] = param.default
        return cls(layer_cls, values)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name not in values:
            raise AttributeError(self._unknown(name))
        value = values[name]
        if value is REQUIRED:
            cls = object.__getattribute__(self, "cls")
            raise AttributeError(f"{cls.__name__}.params(): required parameter {name!r} is not set")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._values:
            raise AttributeError(self._unknown(name))
        self._values[name] = value

    __getitem__ = __getattr__
    __setitem__ = __setattr__

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __iter__(self):
        return iter(self._values)

    def _unknown(self, name: str) -> str:
        return (
            f"{self.cls.__name__}.params(): unknown parameter {name!r}; "
            f"known parameters are {sorted(self._values)}"
        )

    def missing(self) -> list[str]:
        """Names of required arguments that are still unset."""
        return [name for name, value in self._values.items() if value is REQUIRED]

    def as_dict(self) -> dict[str, Any]:
        """The set values (required ones that are still unset are left out)."""
        return {k: v for k, v in self._values.items() if v is not REQUIRED}

    def copy(self) -> Params:
        return Params(self.cls, copy.deepcopy(self._values))

    def instantiate(self):
        """Build the layer from these values."""
        missing = self.missing()
        if missing:
            raise ValueError(
                f"{self.cls.__name__}.params().instantiate(): required parameters "
                f"{missing} are not set"
            )
        return self.cls(**self._values)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={'<required>' if v is REQUIRED else repr(v)}" for k, v in self._values.items()
        )
        return f"Params[{self.cls.__name__}]({shown})"
