"""DIN's native path: the attention tower and the pooling one batch row at a time.

:func:`din_native` returns None where the kernel cannot run (fast paths off or
tracing, native kernels off or unbuildable, not CPU float32 / float64, or a
tower the kernel does not know); :class:`~monolith_layers.DIN` then runs its
tensor-op paths, which the kernel is tested against. The kernel
(``csrc/din.cpp``) reads only each row's real keys and keeps a row's work in
cache; for the backward it keeps the hidden activations of the real
positions only.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from . import _native
from ._fused import fused_activation_name, refuse_double_backward
from .dense import KERNEL_NORM_EPSILON

if TYPE_CHECKING:
    from .feature_seq import DIN
    from .mlp import MLP


class _DINAttention(torch.autograd.Function):
    """queries (B, H), keys (B, T, H), mask -> the pooled keys. The tower's raw
    weights (V, g, b per dense) are inputs: the kernel applies their weight
    norm itself and returns their gradients."""

    @staticmethod
    def forward(ctx: Any, queries, keys, mask, options: tuple, kernels: ModuleType, *layers):
        acts, sum_mode, decay, save = options
        out, weights, *hidden = kernels.din_forward(
            queries, keys, mask, list(layers), acts, sum_mode, decay, KERNEL_NORM_EPSILON, save
        )
        ctx.kernels, ctx.options, ctx.layers = kernels, options, len(layers)
        ctx.save_for_backward(queries, keys, mask, weights, *layers, *hidden)
        ctx.mark_non_differentiable(weights)
        return out, weights

    @staticmethod
    def backward(ctx: Any, d_out, _d_weights):
        refuse_double_backward("DIN")
        queries, keys, mask, weights, *rest = ctx.saved_tensors
        layers, hidden = rest[: ctx.layers], rest[ctx.layers :]
        acts, sum_mode, decay, _ = ctx.options
        need_queries, need_keys = ctx.needs_input_grad[:2]
        d_queries, d_keys, *d_layers = ctx.kernels.din_backward(
            d_out.contiguous(),
            queries,
            keys,
            mask,
            layers,
            acts,
            sum_mode,
            decay,
            KERNEL_NORM_EPSILON,
            weights,
            hidden,
            need_queries,
            need_keys,
        )
        return (
            d_queries if need_queries else None,
            d_keys if need_keys else None,
            None,
            None,
            None,
            *d_layers,
        )


def _tower_layout(tower: MLP) -> list[int] | None:
    """The hidden activations' codes if the tower is dense, activation, ..., dense,
    each dense weight-normalised with learnable norms and a bias, and every
    activation one the kernel knows; else None."""
    n = len(tower.output_dims)
    acts, expected = [], []
    for i in range(n):
        dense = getattr(tower, f"dense_{i}")
        if not dense.allow_kernel_norm or dense.trainable_kernel_norm is None or dense.bias is None:
            return None
        expected.append(f"dense_{i}")
        if i < n - 1:
            activation = getattr(tower, f"activation_{i}", None)
            name = "linear" if activation is None else fused_activation_name(activation)
            if name is None:
                return None
            if activation is not None:
                expected.append(f"activation_{i}")
            acts.append(_native.ACTIVATIONS[name])
    return acts if tower._stack == expected else None


def din_native(
    layer: DIN, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(pooled keys, attention weights (B, T)) from the native kernel, or None.

    queries (B, H), keys (B, T, H), mask (B, T) bool or None; padded keys are
    never read.
    """
    kernels = _native.fast_kernels(queries, keys)
    tower = layer.compress_tower
    acts = _tower_layout(tower) if kernels is not None else None
    if acts is None:
        return None
    layers = []
    for i in range(len(tower.output_dims)):
        dense = getattr(tower, f"dense_{i}")
        layers += [dense.kernel, dense.trainable_kernel_norm, dense.bias]
    save = torch.is_grad_enabled() and any(t.requires_grad for t in (queries, keys, *layers))
    decay = layer.embed_dim**0.5 if layer.decay else 1.0
    options = (acts, layer.mode == "sum", decay, save)
    if mask is not None:
        mask = mask.contiguous()
    return _DINAttention.apply(
        queries.contiguous(), keys.contiguous(), mask, options, kernels, *layers
    )
