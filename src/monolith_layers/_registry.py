"""Name look-up shared by activations, initializers and regularizers.

Keras and Monolith spell the same thing several ways: ``'glorot_normal'``,
``'GlorotNormal'``, ``{'class_name': 'GlorotNormal', 'config': {...}}``, and
Monolith's activations also as ``{'name': 'ReLU', ...}`` or the ``repr`` of
that dict. A :class:`Registry` turns any of these into ``(class, kwargs)``.
"""

from __future__ import annotations

import ast
from typing import Any


def normalize_name(name: str) -> str:
    """``'Glorot_Normal'`` and ``'glorotnormal'`` name the same thing."""
    return name.replace("_", "").lower()


class Registry:
    def __init__(
        self, kind: str, classes: dict[str, type], aliases: dict[str, str] | None = None
    ) -> None:
        self.kind = kind
        self._by_key = {normalize_name(name): cls for name, cls in classes.items()}
        for alias, target in (aliases or {}).items():
            self._by_key[normalize_name(alias)] = self._by_key[normalize_name(target)]
        self.names = sorted(classes)

    def known(self) -> str:
        return ", ".join(self.names)

    def _class(self, name: str) -> type:
        cls = self._by_key.get(normalize_name(name))
        if cls is None:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known {self.kind}s are: {self.known()}"
            )
        return cls

    def lookup(self, identifier: str | dict) -> tuple[type, dict[str, Any]]:
        """``(class, constructor kwargs)`` for a name or a serialised dict."""
        if isinstance(identifier, str):
            text = identifier.strip()
            if text.startswith("{"):
                # Monolith serialises activations as repr(dict); read it as a
                # literal, never with eval.
                return self.lookup(ast.literal_eval(text))
            return self._class(text), {}
        if isinstance(identifier, dict):
            if "class_name" in identifier:
                config = dict(identifier.get("config") or {})
                config.pop("name", None)
                config.pop("trainable", None)
                config.pop("dtype", None)
                return self._class(identifier["class_name"]), config
            if "name" in identifier:
                config = {k: v for k, v in identifier.items() if k != "name"}
                return self._class(identifier["name"]), config
        raise TypeError(f"cannot interpret {identifier!r} as a {self.kind}")
