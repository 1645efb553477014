"""DIN's native path: the attention tower and the pooling one batch row at a time.

:func:`din_native` returns None where the kernel cannot run (fast paths off or
tracing, native kernels off or unbuildable, not CPU float32 / float64, or a
tower the kernel does not know); :class:`~monolith_layers.DIN` then runs its
tensor-op paths, which the kernel is tested against. The kernel
(``csrc/din.cpp``) reads only each row's real keys and keeps the tower's
activations in cache; its backward recomputes them per row, so nothing of
size (B, T, hidden) is kept for it.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from . import _native
from ._fused import fast_paths_on, fused_activation_name, refuse_double_backward

if TYPE_CHECKING:
    from .feature_seq import DIN
    from .mlp import MLP


class _DINAttention(torch.autograd.Function):
    """queries (B, H), keys (B, T, H), mask -> the pooled keys; the tower's
    effective kernels and biases are inputs, so autograd carries their
    gradients on to the weights (through the weight norm)."""

    @staticmethod
    def forward(ctx: Any, queries, keys, mask, options: tuple, kernels: ModuleType, *tower):
        acts, sum_mode, decay = options
        w1, biases, later = tower[0], list(tower[1::2]), list(tower[2::2])
        out, weights = kernels.din_forward(
            queries, keys, mask, w1, later, biases, acts, sum_mode, decay
        )
        ctx.kernels, ctx.options = kernels, options
        ctx.save_for_backward(queries, keys, mask, weights, *tower)
        ctx.mark_non_differentiable(weights)
        return out, weights

    @staticmethod
    def backward(ctx: Any, d_out, _d_weights):
        refuse_double_backward("DIN")
        queries, keys, mask, weights, *tower = ctx.saved_tensors
        acts, sum_mode, decay = ctx.options
        w1, biases, later = tower[0], tower[1::2], tower[2::2]
        need_queries, need_keys = ctx.needs_input_grad[:2]
        d_queries, d_keys, *d_tower = ctx.kernels.din_backward(
            d_out.contiguous(),
            queries,
            keys,
            mask,
            w1,
            list(later),
            list(biases),
            acts,
            sum_mode,
            decay,
            weights,
            need_queries,
            need_keys,
        )
        return (
            (d_queries if need_queries else None),
            (d_keys if need_keys else None),
            None,
            None,
            None,
            *d_tower,
        )


def _tower_layout(tower: MLP) -> list[int] | None:
    """The hidden activations' codes if the tower is dense, activation, ..., dense
    with biases and activations the kernel knows; else None."""
    n = len(tower.output_dims)
    acts, expected = [], []
    for i in range(n):
        expected.append(f"dense_{i}")
        if getattr(tower, f"dense_{i}").bias is None:
            return None
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
    if not fast_paths_on():
        return None
    kernels = _native.usable(queries, keys)
    tower = layer.compress_tower
    acts = _tower_layout(tower) if kernels is not None else None
    if acts is None:
        return None
    weights: list[torch.Tensor] = []
    for i in range(len(tower.output_dims)):
        dense = getattr(tower, f"dense_{i}")
        weights += [dense.effective_kernel(), dense.bias] if i == 0 else [dense.bias]
        if i + 1 < len(tower.output_dims):
            weights.append(getattr(tower, f"dense_{i + 1}").effective_kernel())
    decay = layer.embed_dim**0.5 if layer.decay else 1.0
    options = (acts, layer.mode == "sum", decay)
    if mask is not None:
        mask = mask.contiguous()
    return _DINAttention.apply(
        queries.contiguous(), keys.contiguous(), mask, options, kernels, *weights
    )
