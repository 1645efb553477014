"""Keras-semantics batch normalisation over the last axis.

Differs from ``torch.nn.BatchNorm1d`` in two ways that matter for parity with
Monolith checkpoints: the moving variance is updated with the *biased* batch
variance, and momentum is Keras's (``moving = m * moving + (1 - m) * batch``).
Works on inputs of any rank; statistics are taken over every axis but the last.
"""

from __future__ import annotations

import torch

from ._checks import check_positive_int
from .layer import Layer


class BatchNorm(Layer):
    """``gamma * (x - mean) / sqrt(var + epsilon) + beta`` per feature (last axis).

    Shapes: ``x`` (..., F) -> (..., F).

    Args:
        num_features: F.
        momentum: Keras momentum of the moving statistics.
        epsilon: added to the variance (Keras's default 1e-3).
        name: Monolith scope, e.g. ``'BatchNorm/in'``.
    """

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        check_positive_int(f"BatchNorm({self.name})", "num_features", num_features)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"BatchNorm({self.name}): momentum must be in [0, 1], got {momentum!r}"
            )
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.add_weight("gamma", (num_features,), "ones")
        self.add_weight("beta", (num_features,), "zeros")
        self.add_weight("moving_mean", (num_features,), "zeros", trainable=False)
        self.add_weight("moving_variance", (num_features,), "ones", trainable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.gamma.shape[0]:
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
