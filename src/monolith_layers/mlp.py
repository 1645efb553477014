"""Monolith's MLP: a stack of (weight-normalised) Dense layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import initializers as _initializers
from . import regularizers as _regularizers
from ._checks import check_dims_list, check_float, check_positive_int, resolve
from .activations import Activation
from .batch_norm import BatchNorm
from .dense import Dense
from .layer import Layer, attach_activation


def _per_layer(where: str, arg: str, value: Any, count: int) -> list[Any]:
    """One value for every layer: a list must have ``count`` entries, a scalar is repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"{where}: {arg} must have one entry per layer ({count}), got {len(value)}"
            )
        return list(value)
    return [value] * count


class MLP(Layer):
    """Dense layers of widths ``output_dims`` with per-layer activations.

    Order per layer, as in Monolith: ``[BN(input)] -> dense_i -> [BN] -> activation``;
    batch norm (when enabled) is on the input and after every dense but the last.

    Shapes: ``x`` (..., input_dim) -> (..., output_dims[-1]).

    Args:
        output_dims: widths of the dense layers (non-empty, positive).
        activations: ``None`` -> relu on all but the last layer, which is linear;
            one activation -> that one on all but the last; a list -> one per layer.
        initializers: kernel initializer, one for all or a list of one per layer
            (``None`` -> glorot_uniform).
        kernel_regularizer, bias_regularizer: penalties for every dense.
        use_weight_norm: weight-normalise each kernel (Monolith's default).
        use_learnable_weight_norm: learn the column norms.
        use_bias: dense layers have biases.
        enable_batch_normalization: add Keras-style batch norm (see above).
        batch_normalization_momentum: Keras momentum of the moving statistics.
        batch_normalization_renorm, batch_normalization_renorm_clipping,
        batch_normalization_renorm_momentum: accepted for config compatibility;
            batch renormalisation itself is not supported (``True`` raises).
        input_dim: width of the last axis of ``x``.
        name: Monolith scope, default ``'mlp'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        output_dims: list[int],
        activations: Any = None,
        initializers: Any = None,
        kernel_regularizer: Any = None,
        use_weight_norm: bool = True,
        use_learnable_weight_norm: bool = True,
        use_bias: bool = True,
        bias_regularizer: Any = None,
        enable_batch_normalization: bool = False,
        batch_normalization_momentum: float = 0.99,
        batch_normalization_renorm: bool = False,
        batch_normalization_renorm_clipping: Any = None,
        batch_normalization_renorm_momentum: float = 0.99,
        *,
        input_dim: int,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        dims = check_dims_list(where, "output_dims", output_dims)
        check_positive_int(where, "input_dim", input_dim)
        if batch_normalization_renorm:
            raise ValueError(f"{where}: batch_normalization_renorm=True is not supported")
        n = len(dims)
        if activations is None:
            acts = ["relu"] * (n - 1) + [None]
        elif isinstance(activations, (list, tuple)):
            acts = _per_layer(where, "activations", activations, n)
        else:
            acts = [activations] * (n - 1) + [None]
        init_arg = (
            (lambda i: f"initializers[{i}]")
            if isinstance(initializers, (list, tuple))
            else (lambda i: "initializers")
        )
        inits = [
            resolve(where, init_arg(i), _initializers.get, init)
            for i, init in enumerate(_per_layer(where, "initializers", initializers, n))
        ]
        act_arg = (
            (lambda i: f"activations[{i}]")
            if isinstance(activations, (list, tuple))
            else (lambda i: "activations")
        )
        kernel_regularizer = resolve(
            where, "kernel_regularizer", _regularizers.get, kernel_regularizer
        )
        bias_regularizer = resolve(where, "bias_regularizer", _regularizers.get, bias_regularizer)

        self.output_dims, self.input_dim = dims, input_dim
        # The order the layers run in, as Monolith's get_layer(i) indexes them.
        self._stack: list[str] = []
        bn = enable_batch_normalization
        if bn:
            self._push(
                "BatchNorm/in",
                BatchNorm(input_dim, batch_normalization_momentum, **self.factory_kwargs),
            )
        width = input_dim
        for i, dim in enumerate(dims):
            dense = Dense(
                dim,
                use_bias=use_bias,
                kernel_initializer=inits[i],
                kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer,
                allow_kernel_norm=use_weight_norm,
                kernel_norm_trainable=use_learnable_weight_norm,
                input_dim=width,
                name=f"dense_{i}",
                **self.factory_kwargs,
            )
            self._push(f"dense_{i}", dense)
            if bn and i != n - 1:
                scope = "BatchNorm/out" if i == 0 else f"BatchNorm/out_{i}"
                self._push(
                    scope, BatchNorm(dim, batch_normalization_momentum, **self.factory_kwargs)
                )
            activation = attach_activation(
                self, acts[i], dim, attr=f"activation_{i}", arg=act_arg(i)
            )
            if activation is not None:
                self._stack.append(f"activation_{i}")
            width = dim

    def _push(self, tf_scope: str, module: nn.Module) -> None:
        attr = tf_scope.replace("/", "_")
        self.add_sublayer(tf_scope, module, attr=attr)
        self._stack.append(attr)

    def get_layer(self, index: int) -> nn.Module:
        """The ``index``-th module in running order (batch norms, denses, activations)."""
        if not -len(self._stack) <= index < len(self._stack):
            raise IndexError(
                f"MLP({self.name}).get_layer: index {index} out of range for "
                f"{len(self._stack)} layers"
            )
        return getattr(self, self._stack[index])

    def plain_layers(self) -> list[tuple[Dense, nn.Module | None]] | None:
        """``[(dense_i, activation after it or None), ...]`` in running order, or
        None when batch norms sit in between: the form fused kernels take an
        MLP in (DIN's tower, SeNet's)."""
        layers: list[tuple[Dense, nn.Module | None]] = []
        for attr in self._stack:
            module = getattr(self, attr)
            if isinstance(module, Dense):
                layers.append((module, None))
            elif isinstance(module, BatchNorm) or not layers or layers[-1][1] is not None:
                return None
            else:
                layers[-1] = (layers[-1][0], module)
        return layers

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, output_dims={self.output_dims}, name={self.name!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., input_dim) -> (..., output_dims[-1])."""
        check_float(self.where, "x", x, self.dense_0.kernel.dtype)
        return self.run_from(x, 0)

    def run_from(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Run the layers from ``get_layer(index)`` on: lets a caller compute the
        first dense itself (DIN does, without materialising its input)."""
        for attr in self._stack[index:]:
            layer = getattr(self, attr)
            # Every activation here follows a dense or batch norm whose
            # backward does not read its output, so it may run in place.
            x = layer.apply_(x) if isinstance(layer, Activation) else layer(x)
        return x
