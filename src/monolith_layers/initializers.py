"""Weight initializers by the names Keras and Monolith use.

Every initializer draws from the same distribution as its Keras namesake,
with Keras's fan rules for kernels laid out ``(fan_in, fan_out)`` as in
TensorFlow (which is how every kernel in this library is stored).

``get`` accepts ``None``, a name (``'glorot_normal'``, ``'GlorotNormal'``,
``'he_uniform'``, ...; case and underscores do not matter), a Keras dict
``{'class_name': 'VarianceScaling', 'config': {...}}``, an initializer object,
or any callable ``f(shape, dtype) -> Tensor``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._registry import Registry

Shape = Sequence[int]


def compute_fans(shape: Shape) -> tuple[float, float]:
    """Keras's fan rule: last axis is fan_out, the one before it fan_in."""
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


class Initializer:
    """Base: ``fill_(tensor)`` draws in place; ``init(shape, dtype)`` returns a new tensor.

    ``fill_`` works on any device and dtype and does nothing on the meta
    device, so layers can be built there and materialised later with
    ``to_empty()`` + ``reset_parameters()``. ``get_config()`` round-trips.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        values = torch.empty(tuple(shape), dtype=dtype or torch.get_default_dtype())
        self.fill_(values)
        return values

    def fill_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` with a fresh draw; returns it."""
        if tensor.is_meta:
            return tensor
        with torch.no_grad():
            generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
            # A seeded CPU generator cannot draw on another device, and the
            # truncated normal's inverse CDF is not defined for float16 on CPU:
            # draw those on a CPU scratch in float32 (or float64) and copy.
            direct = tensor.dtype in (torch.float32, torch.float64) and (
                generator is None or tensor.device.type == "cpu"
            )
            if direct:
                self._draw_(tensor, generator)
            else:
                scratch_dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
                scratch = torch.empty(tensor.shape, dtype=scratch_dtype)
                self._draw_(scratch, generator)
                tensor.copy_(scratch)
        return tensor

    def _draw_(self, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def _draw_(self, tensor, generator):
        tensor.zero_()

    def get_config(self):
        return {}


class Ones(Initializer):
    def _draw_(self, tensor, generator):
        tensor.fill_(1.0)

    def get_config(self):
        return {}


class Constant(Initializer):
    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.value = value

    def _draw_(self, tensor, generator):
        tensor.copy_(torch.as_tensor(self.value, dtype=tensor.dtype).expand_as(tensor))

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def _draw_(self, tensor, generator):
        nn.init.normal_(tensor, self.mean, self.stddev, generator=generator)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None
    ) -> None:
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def _draw_(self, tensor, generator):
        nn.init.uniform_(tensor, self.minval, self.maxval, generator=generator)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def _truncated_normal_(tensor, mean, stddev, generator):
    """Normal(mean, stddev) restricted to two standard deviations, as TF draws it.

    TF redraws samples outside [-2, 2] standard deviations; torch's
    ``trunc_normal_`` samples the same truncated distribution by inverse CDF.
    """
    nn.init.trunc_normal_(
        tensor, mean, stddev, mean - 2.0 * stddev, mean + 2.0 * stddev, generator=generator
    )


class TruncatedNormal(RandomNormal):
    def _draw_(self, tensor, generator):
        _truncated_normal_(tensor, self.mean, self.stddev, generator)


# std of a unit normal truncated to [-2, 2]: Keras divides by it so that the
# truncated draw has the variance the scaling rule asks for.
_TRUNCATED_STD = 0.87962566103423978


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: variance ``scale / fan`` with fan by ``mode``."""

    MODES = ("fan_in", "fan_out", "fan_avg")
    DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "normal", "uniform")

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"VarianceScaling: scale must be a positive number, got {scale!r}")
        if mode not in self.MODES:
            raise ValueError(f"VarianceScaling: mode must be one of {self.MODES}, got {mode!r}")
        distribution = str(distribution).lower()
        if distribution not in self.DISTRIBUTIONS:
            raise ValueError(
                f"VarianceScaling: distribution must be one of {self.DISTRIBUTIONS}, "
                f"got {distribution!r}"
            )
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def variance(self, shape: Shape) -> float:
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        return self.scale / max(1.0, fan[self.mode])

    def _draw_(self, tensor, generator):
        variance = self.variance(tensor.shape)
        if self.distribution == "truncated_normal":
            _truncated_normal_(tensor, 0.0, math.sqrt(variance) / _TRUNCATED_STD, generator)
        elif self.distribution in ("untruncated_normal", "normal"):
            nn.init.normal_(tensor, 0.0, math.sqrt(variance), generator=generator)
        else:
            limit = math.sqrt(3.0 * variance)
            nn.init.uniform_(tensor, -limit, limit, generator=generator)

    def get_config(self):
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


def _preset(class_name: str, scale: float, mode: str, distribution: str) -> type:
    """A named VarianceScaling preset (GlorotUniform, HeNormal, ...) with Keras's config."""

    def __init__(self, seed: int | None = None) -> None:
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    return type(class_name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config})


GlorotUniform = _preset("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _preset("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _preset("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _preset("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _preset("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _preset("LecunNormal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """Keras's orthogonal: the tensor viewed as (prod(shape[:-1]), shape[-1])."""

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.gain = gain

    def _draw_(self, tensor, generator):
        if tensor.dim() < 2:
            nn.init.orthogonal_(tensor.view(1, -1), self.gain, generator=generator)
            return
        # torch flattens trailing axes, Keras leading ones: view the tensor the Keras way.
        nn.init.orthogonal_(tensor.view(-1, tensor.shape[-1]), self.gain, generator=generator)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


class _FromCallable(Initializer):
    """A user's ``f(shape, dtype) -> Tensor``, copied into the weight."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def fill_(self, tensor):
        if tensor.is_meta:
            return tensor
        values = torch.as_tensor(self.fn(tuple(tensor.shape), tensor.dtype))
        if tuple(values.shape) != tuple(tensor.shape):
            raise ValueError(
                f"initializer {self.fn!r} returned shape {tuple(values.shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
        with torch.no_grad():
            tensor.copy_(values)
        return tensor

    def get_config(self):
        return {"fn": getattr(self.fn, "__name__", repr(self.fn))}


_REGISTRY = Registry(
    "initializer",
    {
        cls.__name__: cls
        for cls in (
            Zeros,
            Ones,
            Constant,
            RandomNormal,
            RandomUniform,
            TruncatedNormal,
            VarianceScaling,
            GlorotUniform,
            GlorotNormal,
            HeUniform,
            HeNormal,
            LecunUniform,
            LecunNormal,
            Orthogonal,
        )
    },
    aliases={"zero": "Zeros", "one": "Ones", "normal": "RandomNormal", "uniform": "RandomUniform"},
)

InitializerLike = str | dict | Initializer | Callable[..., torch.Tensor] | None


def get(identifier: InitializerLike, default: InitializerLike = None):
    """Resolve an initializer; ``None`` gives ``default`` (resolved the same way)."""
    if identifier is None:
        return None if default is None else get(default)
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, (str, dict)):
        cls, config = _REGISTRY.lookup(identifier)
        return cls(**config)
    if callable(identifier):
        return _FromCallable(identifier)
    raise TypeError(f"initializers.get: cannot interpret {identifier!r} as an initializer")


def serialize(initializer) -> dict[str, Any]:
    """Keras's form ``{'class_name': ..., 'config': ...}``."""
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}


def initialize(
    initializer: InitializerLike, shape: Shape, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Draw a fresh tensor of ``shape`` from ``initializer``."""
    return get(initializer)(tuple(shape), dtype)
