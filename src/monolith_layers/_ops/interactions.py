"""The feature transforms' operators: ``monolith_layers::autoint`` (AutoInt's
rounds) and ``monolith_layers::senet`` (the whole of SeNet).

The kernels (``csrc/interactions.cpp``) do a sample's work in cache where
ATen would make several passes over the batch. The layers' tensor-op forms
are the references these are tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import define, input_needs, refuse_double_backward, require_kernels


def _padded_fields(fields: int, element_size: int) -> int:
    """Columns of the kernel's saved attention weights: F rounded up to 64 bytes."""
    lane = 64 // element_size
    return (fields + lane - 1) // lane * lane


# -- AutoInt --


def autoint_impl(
    x: Tensor, present: Tensor | None, rounds: int, divisor: float, save: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """x (B, F, E) with absent fields' rows zero, present (B, F) bool or None ->
    (x after ``rounds`` rounds of ``softmax(x x^T / divisor) x`` over the present
    fields, absent rows zero; and, when ``save``, the round inputs (L - 1, B, F, E)
    and attention weights (L, B, F, Fp) the backward reads, else empty)."""
    kernels = require_kernels("autoint")
    results = kernels.autoint_forward(x.contiguous(), present, rounds, divisor, save)
    if save:
        return results[0], results[1], results[2]
    return results[0], x.new_empty(0), x.new_empty(0)


def autoint_fake(x, present, rounds, divisor, save):
    batch, fields, width = x.shape
    if not save:
        return torch.empty_like(x), x.new_empty(0), x.new_empty(0)
    hidden = x.new_empty(rounds - 1, batch, fields, width)
    weights = x.new_empty(rounds, batch, fields, _padded_fields(fields, x.element_size()))
    return torch.empty_like(x), hidden, weights


def autoint_backward_impl(
    d_out: Tensor,
    x: Tensor,
    present: Tensor | None,
    hidden: Tensor,
    weights: Tensor,
    divisor: float,
) -> Tensor:
    kernels = require_kernels("autoint")
    return kernels.autoint_backward(
        x.contiguous(), hidden, weights, d_out.contiguous(), present, divisor
    )


def autoint_backward_fake(d_out, x, *_):
    return torch.empty_like(x)


def _autoint_setup(ctx, inputs, output) -> None:
    x, present, _rounds, divisor, _save = inputs
    ctx.mark_non_differentiable(output[1], output[2])  # saved for the backward, not outputs
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, present, output[1], output[2])
    ctx.divisor = divisor


def _autoint_backward(ctx, d_out, _d_hidden, _d_weights):
    refuse_double_backward("AutoInt")
    if d_out is None:  # the output's gradient is undefined: so are the inputs'
        return (None,) * 5
    x, present, hidden, weights = ctx.saved_tensors
    if hidden.numel() == 0 and weights.numel() == 0:
        raise RuntimeError("AutoInt: the forward ran without saving for a backward (save=False)")
    return autoint_backward(d_out, x, present, hidden, weights, ctx.divisor), None, None, None, None


autoint = define("autoint", autoint_impl, autoint_fake, _autoint_setup, _autoint_backward)
autoint_backward = define("autoint_backward", autoint_backward_impl, autoint_backward_fake)


# -- SeNet --


def _tower_args(tower: list[Tensor]) -> list[Tensor | None]:
    """The kernel's six optional tower arguments (all None without a tower)."""
    return list(tower) if tower else [None] * 6


def senet_impl(x: Tensor, tower: list[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x (B, F, E) scaled per field by ``sigmoid(relu(s K1 + b1) K2 + b2)``, s the
    field means over E, or by s itself without a tower (``tower`` empty).
    ``tower`` = [V1 (F, C), g1 (C), b1 (C), V2 (C, F), g2 (F), b2 (F)], each
    kernel weight-normalised column-wise, K = V g / sqrt(max(|V|^2, eps)).
    Returns (out (B, F, E), squeezed (B, F), hidden (B, C), excitation (B, F))."""
    kernels = require_kernels("senet")
    out, squeezed, hidden, excitation = kernels.senet_forward(
        x.contiguous(), *_tower_args(tower), eps
    )
    return out, squeezed, hidden, excitation


def senet_fake(x, tower, eps):
    batch, fields = x.shape[:2]
    rows = x.new_empty(batch, fields)
    hidden = x.new_empty(batch, tower[0].shape[1] if tower else 0)
    return torch.empty_like(x), rows, hidden, torch.empty_like(rows)


def senet_backward_impl(
    d_out: Tensor, x: Tensor, tower: list[Tensor], eps: float, saved: list[Tensor], need_x: bool
) -> tuple[Tensor, list[Tensor]]:
    """(d_x (empty unless ``need_x``), [dV1, dg1, db1, dV2, dg2, db2] or []
    without a tower) from the forward's squeezed, hidden and excitation (``saved``)."""
    kernels = require_kernels("senet")
    if d_out.stride(2) not in (0, 1):
        d_out = d_out.contiguous()
    d_x, *d_tower = kernels.senet_backward(
        d_out, x.contiguous(), *_tower_args(tower), eps, *saved, need_x
    )
    return x.new_empty(0) if d_x is None else d_x, d_tower


def senet_backward_fake(d_out, x, tower, eps, saved, need_x):
    d_x = torch.empty_like(x) if need_x else x.new_empty(0)
    return d_x, [torch.empty_like(t) for t in tower]


def _senet_setup(ctx, inputs, output) -> None:
    x, tower, eps = inputs
    ctx.mark_non_differentiable(*output[1:])  # saved for the backward, not outputs
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, *tower, *output[1:])
    ctx.eps, ctx.layers, ctx.needs = eps, len(tower), input_needs(inputs)


def _senet_backward(ctx, d_out, *_unused):
    refuse_double_backward("SeNet")
    if d_out is None:  # the output's gradient is undefined: so are the inputs'
        return None, [None] * ctx.layers, None
    x, *rest = ctx.saved_tensors
    tower, saved = rest[: ctx.layers], rest[ctx.layers :]
    need_x = ctx.needs[0]
    d_x, d_tower = senet_backward(d_out, x, tower, ctx.eps, saved, need_x)
    return d_x if need_x else None, d_tower, None


senet = define("senet", senet_impl, senet_fake, _senet_setup, _senet_backward)
senet_backward = define("senet_backward", senet_backward_impl, senet_backward_fake)
