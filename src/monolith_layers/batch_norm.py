"""Keras-semantics batch normalisation over the last axis.

Differs from ``torch.nn.BatchNorm1d`` in two ways that matter for parity with
Monolith checkpoints: the moving variance is updated with the *biased* batch
variance, and momentum is Keras's (``moving = m * moving + (1 - m) * batch``).
Works on inputs of any rank; statistics are taken over every axis but the last.
"""

from __future__ import annotations

import torch

from ._checks import check_finite_number, check_float, check_positive_int
from .layer import Layer


class BatchNorm(Layer):
    """``gamma * (x - mean) / sqrt(var + epsilon) + beta`` per feature (last axis).

    Shapes: ``x`` (..., F) -> (..., F).

    Args:
        num_features: F.
        momentum: Keras momentum of the moving statistics.
        epsilon: added to the variance (Keras's default 1e-3).
        name: Monolith scope, e.g. ``'BatchNorm/in'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        *,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.num_features = check_positive_int(where, "num_features", num_features)
        momentum = check_finite_number(where, "momentum", momentum, low=0.0)
        if momentum > 1.0:
            raise ValueError(f"{where}: momentum must be in [0, 1], got {momentum!r}")
        self.momentum = momentum
        self.epsilon = check_finite_number(where, "epsilon", epsilon, positive=True)
        self.add_weight("gamma", (num_features,), "ones")
        self.add_weight("beta", (num_features,), "zeros")
        self.add_weight("moving_mean", (num_features,), "zeros", trainable=False)
        self.add_weight("moving_variance", (num_features,), "ones", trainable=False)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, momentum={self.momentum}, epsilon={self.epsilon}, "
            f"name={self.name!r}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., F) -> (..., F)."""
        x = check_float(self.where, "x", x, self.gamma.dtype)
        if x.dim() < 1 or x.shape[-1] != self.gamma.shape[0]:
            raise ValueError(
                f"BatchNorm({self.name}): x must have shape (..., {self.gamma.shape[0]}), "
                f"got {tuple(x.shape)}"
            )
        if self.training:
            axes = tuple(range(x.dim() - 1))
            var, mean = torch.var_mean(x, dim=axes, unbiased=False)
            with torch.no_grad():
                keep = self.momentum
                self.moving_mean.mul_(keep).add_(
                    mean.detach().to(self.moving_mean.dtype), alpha=1 - keep
                )
                self.moving_variance.mul_(keep).add_(
                    var.detach().to(self.moving_variance.dtype), alpha=1 - keep
                )
        else:
            mean, var = self.moving_mean, self.moving_variance
        scale = self.gamma * torch.rsqrt(var + self.epsilon)
        return x * scale + (self.beta - mean * scale)
