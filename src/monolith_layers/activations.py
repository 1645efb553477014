"""Activations by the names Monolith uses, each an ``nn.Module``.

Names (case and underscores do not matter): relu, sigmoid, sigmoid2 (2 *
sigmoid), tanh, linear, elu, selu, gelu, swish, softplus, softsign,
exponential, hard_sigmoid, leakyrelu, prelu, softmax, thresholdedrelu.

``get`` also accepts Monolith's serialised forms (``{'name': 'ReLU', ...}``
or its ``repr`` string), Keras dicts (``{'class_name': ..., 'config': ...}``),
modules (returned as they are) and plain callables such as ``torch.tanh``.
PReLU has one learnable slope per unit (the last axis), so it needs
``units``; its slopes start at zero, as in Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import initializers as _initializers
from . import regularizers as _regularizers
from ._registry import Registry, normalize_name


class Activation(nn.Module):
    """Base of the activations here: a module with a JSON-able config."""

    def get_config(self) -> dict[str, Any]:
        return {}

    def apply_(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to a fresh intermediate ``x`` that nothing else reads, in place
        where the activation has an in-place form whose backward needs only its
        output (relu, sigmoid, tanh); saves a full-size allocation per layer."""
        return self(x)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())


class Identity(Activation):
    """The linear activation (Keras's ``'linear'``; ``'identity'`` also names it)."""

    def forward(self, x):
        return x


class Sigmoid(Activation):
    def forward(self, x):
        return torch.sigmoid(x)

    def apply_(self, x):
        return x.sigmoid_()


class Sigmoid2(Activation):
    """``2 * sigmoid(x)``: a gate that can amplify as well as damp."""

    def forward(self, x):
        return 2.0 * torch.sigmoid(x)


class Tanh(Activation):
    def forward(self, x):
        return torch.tanh(x)

    def apply_(self, x):
        return x.tanh_()


class ReLU(Activation):
    """Keras's ReLU: optional cap, leaky slope below ``threshold``."""

    def __init__(
        self, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0
    ) -> None:
        super().__init__()
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def _plain(self) -> bool:
        return self.max_value is None and self.negative_slope == 0.0 and self.threshold == 0.0

    def apply_(self, x):
        return x.relu_() if self._plain() else self(x)

    def forward(self, x):
        if self._plain():
            return torch.relu(x)
        out = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        if self.max_value is not None:
            out = torch.clamp(out, max=self.max_value)
        return out

    def get_config(self):
        return {
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
        }


class ELU(Activation):
    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, alpha=self.alpha)

    def get_config(self):
        return {"alpha": self.alpha}


class SELU(Activation):
    def forward(self, x):
        return F.selu(x)


class GELU(Activation):
    def __init__(self, approximate: bool = False) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate="tanh" if self.approximate else "none")

    def get_config(self):
        return {"approximate": self.approximate}


class Swish(Activation):
    def forward(self, x):
        return F.silu(x)


class Softplus(Activation):
    def forward(self, x):
        return F.softplus(x)


class Softsign(Activation):
    def forward(self, x):
        return F.softsign(x)


class Exponential(Activation):
    def forward(self, x):
        return torch.exp(x)


class HardSigmoid(Activation):
    """Keras 2.4's piecewise-linear sigmoid: ``clip(0.2 x + 0.5, 0, 1)``."""

    def forward(self, x):
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class LeakyReLU(Activation):
    def __init__(self, alpha: float = 0.3) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.leaky_relu(x, self.alpha)

    def get_config(self):
        return {"alpha": self.alpha}


class ThresholdedReLU(Activation):
    def __init__(self, theta: float = 1.0) -> None:
        super().__init__()
        self.theta = theta

    def forward(self, x):
        return x * (x > self.theta).to(x.dtype)

    def get_config(self):
        return {"theta": self.theta}


class Softmax(Activation):
    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return torch.softmax(x, dim=self.axis)

    def get_config(self):
        return {"axis": self.axis}


class PReLU(Activation):
    """``relu(x) - alpha * relu(-x)`` with a learnable ``alpha`` per unit (last axis)."""

    needs_units = True

    def __init__(
        self,
        units: int,
        alpha_initializer: Any = "zeros",
        alpha_regularizer: Any = None,
        alpha_constraint: Any = None,
        shared_axes: Any = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if alpha_constraint is not None or shared_axes is not None:
            raise ValueError(
                "PReLU: alpha_constraint and shared_axes are not supported (alpha is one "
                f"slope per unit); got alpha_constraint={alpha_constraint!r}, "
                f"shared_axes={shared_axes!r}"
            )
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"PReLU: units must be a positive int, got {units!r}")
        self.units = units
        self.alpha_initializer = alpha_initializer
        self._alpha_init = _initializers.get(alpha_initializer)
        self.alpha_regularizer = _regularizers.get(alpha_regularizer)
        self.alpha = nn.Parameter(torch.empty(units, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._alpha_init.fill_(self.alpha)

    def forward(self, x):
        # Keras computes relu(x) - alpha * relu(-x); torch's prelu is the same
        # function in one kernel (and one for its backward), per channel of a
        # 2-D input, so the last axis becomes that channel axis.
        return F.prelu(x.reshape(-1, self.units), self.alpha).view(x.shape)

    def get_config(self):
        config: dict[str, Any] = {"units": self.units}
        init = self.alpha_initializer
        config["alpha_initializer"] = (
            init if isinstance(init, (str, dict)) else _initializers.serialize(init)
        )
        if self.alpha_regularizer is not None:
            config["alpha_regularizer"] = _regularizers.serialize(self.alpha_regularizer)
        return config


class Lambda(Activation):
    """Wraps a plain callable (e.g. ``torch.tanh``) so it can live in a module tree."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


_CLASSES = {
    "linear": Identity,
    "sigmoid": Sigmoid,
    "sigmoid2": Sigmoid2,
    "tanh": Tanh,
    "relu": ReLU,
    "elu": ELU,
    "selu": SELU,
    "gelu": GELU,
    "swish": Swish,
    "softplus": Softplus,
    "softsign": Softsign,
    "exponential": Exponential,
    "hard_sigmoid": HardSigmoid,
    "leakyrelu": LeakyReLU,
    "prelu": PReLU,
    "softmax": Softmax,
    "thresholdedrelu": ThresholdedReLU,
}
_REGISTRY = Registry("activation", _CLASSES, aliases={"silu": "swish", "identity": "linear"})

ActivationLike = str | dict | nn.Module | Callable[[torch.Tensor], torch.Tensor] | None


def get(identifier: ActivationLike, units: int | None = None, **factory: Any) -> nn.Module | None:
    """A fresh activation module for ``identifier``; ``None`` stays ``None``.

    Args:
        identifier: a name, a serialised dict or string, a module or a callable.
        units: size of the last axis the activation will see; PReLU needs it.
        factory: ``device`` / ``dtype`` for an activation with weights (PReLU).
    """
    if identifier is None or isinstance(identifier, nn.Module):
        return identifier
    if isinstance(identifier, (str, dict)):
        cls, config = _REGISTRY.lookup(identifier)
        if getattr(cls, "needs_units", False):
            config.setdefault("units", units)
            if config["units"] is None:
                raise ValueError(f"activations.get: {cls.__name__} needs the number of units")
            return cls(**config, **factory)
        return cls(**config)
    if callable(identifier):
        key = normalize_name(getattr(identifier, "__name__", ""))
        cls = _REGISTRY._by_key.get(key)
        if cls is not None and not getattr(cls, "needs_units", False):
            return cls()
        return Lambda(identifier)
    raise TypeError(f"activations.get: cannot interpret {identifier!r} as an activation")


def serialize(activation: nn.Module) -> dict[str, Any]:
    """Keras's form ``{'class_name': ..., 'config': ...}``; plain callables cannot be."""
    if isinstance(activation, Lambda) or not isinstance(activation, Activation):
        raise TypeError(f"activation {activation!r} has no serialisable name")
    return {"class_name": type(activation).__name__, "config": activation.get_config()}


def name_of(activation: nn.Module | None) -> str | None:
    """The registered name of a module's class (``'tanh'`` for :class:`Tanh`), if any."""
    if activation is None:
        return "linear"
    for name, cls in _CLASSES.items():
        if type(activation) is cls:
            return name
    return None


# torch's own spellings of the activations the kernels know.
_TORCH_MODULES = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.Identity: "linear"}
_TORCH_FUNCTIONS = {
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    torch.relu: "relu",
    F.relu: "relu",
    F.tanh: "tanh",
    F.sigmoid: "sigmoid",
}
KERNEL_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")


def kernel_name(activation: Any) -> str | None:
    """The name the C++ kernels know this activation by (``'tanh'``, ``'sigmoid'``,
    ``'relu'``, ``'linear'``; ``None`` is linear), or None when they do not know it."""
    if activation is None:
        return "linear"
    if isinstance(activation, ReLU) and activation.get_config() != {
        "max_value": None,
        "negative_slope": 0.0,
        "threshold": 0.0,
    }:
        return None
    if isinstance(activation, Lambda):
        activation = activation.fn
    if type(activation) in _TORCH_MODULES:
        return _TORCH_MODULES[type(activation)]
    if not isinstance(activation, nn.Module):
        try:
            return _TORCH_FUNCTIONS.get(activation)
        except TypeError:  # unhashable callable
            return None
    name = name_of(activation)
    return name if name in KERNEL_ACTIVATIONS else None
