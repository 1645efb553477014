"""Monolith's Dense layer with optional weight normalisation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._checks import check_float, check_positive_int
from .activations import Activation
from .layer import Layer, attach_activation

# TF's l2_normalize floor on the squared column norm:
# l2_normalize(V, axis=0) = V / sqrt(max(sum(V^2, axis=0), 1e-6)).
KERNEL_NORM_EPSILON = 1e-6


class Dense(Layer):
    """``y = activation(x @ K + b)`` over the last axis of ``x``.

    With ``allow_kernel_norm`` the kernel is weight-normalised:
    ``K = g * V / ||V||_col`` (column norms, floor 1e-6 on the squared norm);
    ``g`` (``trainable_kernel_norm``) starts at the column norms of the initial
    ``V`` and is learnt when ``kernel_norm_trainable``, otherwise the columns
    are unit norm. The kernel regulariser sees the raw ``V``.

    Shapes: ``x`` (..., input_dim) -> (..., units).

    Args:
        units: output width.
        activation: activation by name / module / callable; ``None`` is linear.
        use_bias: add a bias (initialised by ``bias_initializer``).
        kernel_initializer: initializer of ``V`` (default glorot_uniform).
        bias_initializer: initializer of the bias (default zeros).
        kernel_regularizer, bias_regularizer: penalties added to ``losses``.
        allow_kernel_norm: weight-normalise the kernel.
        kernel_norm_trainable: learn the column norms ``g``.
        input_dim: width of the last axis of ``x``.
        name: layer name (Monolith scope), default ``'dense'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        allow_kernel_norm: bool = False,
        kernel_norm_trainable: bool = False,
        *,
        input_dim: int,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.units = check_positive_int(where, "units", units)
        self.input_dim = check_positive_int(where, "input_dim", input_dim)
        self.allow_kernel_norm = bool(allow_kernel_norm)
        self.kernel_norm_trainable = bool(kernel_norm_trainable)

        self.add_weight(
            "kernel",
            (input_dim, units),
            kernel_initializer or "glorot_uniform",
            kernel_regularizer,
            init_arg="kernel_initializer",
            reg_arg="kernel_regularizer",
        )
        # Optional weights exist as None so that attribute access is uniform.
        self.register_parameter("trainable_kernel_norm", None)
        self.register_parameter("bias", None)
        if self.allow_kernel_norm and self.kernel_norm_trainable:
            # Drawn in reset_parameters: the column norms of the fresh kernel.
            self.add_weight("trainable_kernel_norm", (units,), "ones")
        if use_bias:
            self.add_weight(
                "bias",
                (units,),
                bias_initializer or "zeros",
                bias_regularizer,
                init_arg="bias_initializer",
                reg_arg="bias_regularizer",
            )
        self.activation = attach_activation(self, activation, units)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.trainable_kernel_norm is not None:
            with torch.no_grad():
                # g starts at the column norms of V, so the initial kernel is V itself.
                self.trainable_kernel_norm.copy_(self.kernel.norm(dim=0))

    def extra_repr(self) -> str:
        return (
            f"{self.input_dim}, {self.units}, bias={self.bias is not None}, "
            f"kernel_norm={self.allow_kernel_norm}, "
            f"learnable_norm={self.trainable_kernel_norm is not None}, name={self.name!r}"
        )

    def effective_kernel(self) -> torch.Tensor:
        """The kernel the layer multiplies by, (input_dim, units)."""
        if not self.allow_kernel_norm:
            return self.kernel
        # One (units,) scale per column, then one multiply of the kernel.
        scale = torch.rsqrt(self.kernel.square().sum(dim=0).clamp_min(KERNEL_NORM_EPSILON))
        if self.trainable_kernel_norm is not None:
            scale = scale * self.trainable_kernel_norm
        return self.kernel * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., input_dim) -> (..., units)."""
        x = check_float(self.where, "x", x, self.kernel.dtype)
        if x.dim() < 1 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"Dense({self.name}): x must have shape (..., {self.input_dim}), "
                f"got {tuple(x.shape)}"
            )
        y = F.linear(x, self.effective_kernel().t(), self.bias)
        if self.activation is None:
            return y
        # y is fresh and F.linear's backward does not read it: activate in place.
        return (
            self.activation.apply_(y)
            if isinstance(self.activation, Activation)
            else self.activation(y)
        )
