"""Native paths of the feature transforms: AutoInt's rounds and the whole of SeNet.

Each function returns None when its native kernel cannot run (fast paths
switched off or tracing, native kernels off or unbuildable, not CPU float32 /
float64); the layer then runs its tensor-op form, which these are tested
against. The kernels (``csrc/interactions.cpp``) do a sample's work in cache
where ATen would make several passes over the batch.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from . import _native
from ._fused import refuse_double_backward


class _AutoIntRounds(torch.autograd.Function):
    """``rounds`` AutoInt rounds on (B, F, E); backward from the saved round
    inputs and attention weights (what autograd would save for the tensor ops)."""

    @staticmethod
    def forward(ctx: Any, x, present, rounds: int, divisor: float, kernels: ModuleType, save: bool):
        # save is decided by the caller: ctx.needs_input_grad is True for an
        # input that requires grad even under torch.no_grad().
        results = kernels.autoint_forward(x, present, rounds, divisor, save)
        ctx.kernels, ctx.divisor = kernels, divisor
        if save:
            ctx.save_for_backward(x, results[1], results[2], present)
        return results[0]

    @staticmethod
    def backward(ctx: Any, d_out):
        refuse_double_backward("AutoInt")
        x, hidden, weights, present = ctx.saved_tensors
        d_x = ctx.kernels.autoint_backward(
            x, hidden, weights, d_out.contiguous(), present, ctx.divisor
        )
        return d_x, None, None, None, None, None


def autoint_rounds(
    x: torch.Tensor, present: torch.Tensor | None, rounds: int, divisor: float
) -> torch.Tensor | None:
    """x (B, F, E) with absent fields' rows already zero, present (B, F) bool or
    None -> x after ``rounds`` rounds of ``softmax(x x^T / divisor) x`` over the
    present fields, absent rows zero; None where the kernel cannot run."""
    kernels = _native.fast_kernels(x)
    if kernels is None:
        return None
    if present is not None:
        present = present.contiguous()
    save = torch.is_grad_enabled() and x.requires_grad
    return _AutoIntRounds.apply(x.contiguous(), present, rounds, divisor, kernels, save)


class _SeNet(torch.autograd.Function):
    """x (B, F, E) -> x scaled per field by the excitation of its field means.
    The tower's raw weights (V, g, b of each dense, or all None) are inputs:
    the kernel applies their weight norm itself and returns their gradients."""

    @staticmethod
    def forward(ctx: Any, x, v1, g1, b1, v2, g2, b2, eps: float, kernels: ModuleType):
        tower = (v1, g1, b1, v2, g2, b2)
        out, squeezed, hidden, excitation = kernels.senet_forward(x, *tower, eps)
        ctx.kernels, ctx.eps = kernels, eps
        ctx.save_for_backward(x, *tower, squeezed, hidden, excitation)
        return out

    @staticmethod
    def backward(ctx: Any, d_out):
        refuse_double_backward("SeNet")
        x, *tower, squeezed, hidden, excitation = ctx.saved_tensors
        if d_out.stride(2) not in (0, 1):
            d_out = d_out.contiguous()
        need_x = ctx.needs_input_grad[0]
        grads = ctx.kernels.senet_backward(
            d_out, x, *tower, ctx.eps, squeezed, hidden, excitation, need_x
        )
        tower_grads = tuple(grads[1:]) if tower[0] is not None else (None,) * 6
        return (grads[0] if need_x else None), *tower_grads, None, None


Tower = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def senet(x: torch.Tensor, tower: Tower | None, eps: float) -> torch.Tensor | None:
    """x (B, F, E) scaled per field by ``sigmoid(relu(s K1 + b1) K2 + b2)``, s the
    field means over E, or by s itself when ``tower`` is None. ``tower`` = (V1
    (F, C), g1 (C), b1 (C), V2 (C, F), g2 (F), b2 (F)), each kernel weight-normalised
    column-wise, K = V g / sqrt(max(|V|^2, eps)) as :meth:`Dense.effective_kernel`
    computes it. None where the kernel cannot run."""
    weights = tower if tower is not None else (None,) * 6
    kernels = _native.fast_kernels(x, *weights)
    if kernels is None:
        return None
    return _SeNet.apply(x.contiguous(), *weights, eps, kernels)
