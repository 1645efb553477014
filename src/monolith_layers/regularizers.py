"""Weight regularizers with Keras's formulas: ``l1 * sum|w| + l2 * sum w^2``.

``get`` accepts ``None``, ``'l1'`` / ``'l2'`` / ``'l1_l2'`` (Keras's default
factor 0.01), a Keras dict such as ``{'class_name': 'L1L2', 'config':
{'l1': 0.0, 'l2': 0.01}}``, a regularizer object, or a callable
``f(weight) -> scalar``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._registry import Registry


class Regularizer:
    def __call__(self, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        if l1 < 0 or l2 < 0:
            raise ValueError(f"L1L2: l1 and l2 must be >= 0, got l1={l1!r}, l2={l2!r}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        penalty = weight.new_zeros(())
        if self.l1:
            penalty = penalty + self.l1 * weight.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * weight.square().sum()
        return penalty

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def _l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    return L1L2(l1=l1, l2=l2)


_REGISTRY = Registry("regularizer", {"L1L2": L1L2, "L1": L1, "L2": L2, "l1_l2": _l1_l2})

RegularizerLike = str | dict | Regularizer | Callable[[torch.Tensor], torch.Tensor] | None


def get(identifier: RegularizerLike):
    """Resolve a regularizer; ``None`` stays ``None``."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, (str, dict)):
        cls, config = _REGISTRY.lookup(identifier)
        return cls(**config)
    if callable(identifier):
        return identifier
    raise TypeError(f"regularizers.get: cannot interpret {identifier!r} as a regularizer")


def serialize(regularizer: Regularizer) -> dict[str, Any]:
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}
