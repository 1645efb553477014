"""DIN's attention pooling as an operator: ``monolith_layers::din_attention``.

The kernel (``csrc/din.cpp``) runs the tower and the pooling one batch row
at a time, reading only the row's real keys, and keeps for the backward the
hidden activations of the real positions only. The tower arrives as its raw
weights (V, g, b per dense layer): the kernel applies their weight norm
itself and returns their gradients. :class:`~monolith_layers.DIN`'s tensor-op
form is the reference it is tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .build import ACTIVATIONS as _SHARED_ACTIVATIONS
from .registry import (
    define,
    input_needs,
    refuse_double_backward,
    require_kernels,
    triton_implementations,
)

# The tower activations the kernel knows: the recurrences' four, and PReLU
# (csrc/din.cpp's kPrelu), whose slopes arrive beside the tower.
ACTIVATIONS = {**_SHARED_ACTIVATIONS, "prelu": 4}


def din_attention_impl(
    queries: Tensor,
    keys: Tensor,
    mask: Tensor | None,
    tower: list[Tensor],
    activations: list[int],
    slopes: list[Tensor],
    sum_mode: bool,
    decay: float,
    eps: float,
    save: bool,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """queries (B, H), keys (B, T, H), mask (B, T) bool or None, tower [V1, g1, b1,
    V2, ...] (the first layer reads 4H inputs, the last has one unit), one
    activation code per hidden layer (:data:`ACTIVATIONS`) and one slopes
    tensor per hidden layer (a PReLU layer's alpha (h_l), else empty) -> (out
    (B, H) when ``sum_mode`` else (B, T, H), attention weights (B, T) after
    ``decay``, zero at padding, and when ``save`` each hidden layer's
    activations at the P real positions (P, h_l), else [])."""
    kernels = require_kernels("din_attention")
    rows = _contiguous(queries, keys, mask)
    out, weights, *hidden = kernels.din_forward(
        *rows, tower, activations, slopes, sum_mode, decay, eps, save
    )
    return out, weights, hidden


def _contiguous(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.contiguous() for t in tensors]


def din_attention_fake(queries, keys, mask, tower, activations, slopes, sum_mode, decay, eps, save):
    batch, steps, width = keys.shape
    out = keys.new_empty(batch, width) if sum_mode else torch.empty_like(keys)
    hidden = []
    if save:
        real = batch * steps if mask is None else torch.library.get_ctx().new_dynamic_size()
        hidden = [keys.new_empty(real, v.shape[1]) for v in tower[0:-3:3]]
    return out, keys.new_empty(batch, steps), hidden


def din_attention_backward_impl(
    d_out: Tensor,
    queries: Tensor,
    keys: Tensor,
    mask: Tensor | None,
    tower: list[Tensor],
    activations: list[int],
    slopes: list[Tensor],
    sum_mode: bool,
    decay: float,
    eps: float,
    weights: Tensor,
    hidden: list[Tensor],
    need_queries: bool,
    need_keys: bool,
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """(d_queries, d_keys, [dV1, dg1, db1, ...], [d_slopes per hidden layer]) from
    what the forward saved; d_queries / d_keys empty where not asked for."""
    kernels = require_kernels("din_attention")
    options = (tower, activations, slopes, sum_mode, decay, eps, weights, hidden)
    d_queries, d_keys, *d_weights = kernels.din_backward(
        *_contiguous(d_out, queries, keys, mask), *options, need_queries, need_keys
    )
    d_queries, d_keys = (keys.new_empty(0) if d is None else d for d in (d_queries, d_keys))
    return d_queries, d_keys, d_weights[: len(tower)], d_weights[len(tower) :]


def din_attention_backward_fake(d_out, queries, keys, mask, tower, activations, slopes, *rest):
    need_queries, need_keys = rest[-2:]
    d_queries = torch.empty_like(queries) if need_queries else keys.new_empty(0)
    d_keys = torch.empty_like(keys) if need_keys else keys.new_empty(0)
    like = [torch.empty_like(t) for t in tower], [torch.empty_like(t) for t in slopes]
    return d_queries, d_keys, *like


def _setup(ctx, inputs, output) -> None:
    queries, keys, mask, tower, activations, slopes, sum_mode, decay, eps, save = inputs
    out, weights, hidden = output
    # The weights and hidden rows are for reading, not differentiating: without
    # this, autograd would fill a zero gradient for each, (P, h_l) per layer.
    ctx.mark_non_differentiable(weights, *hidden)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(queries, keys, mask, weights, *tower, *slopes, *hidden)
    ctx.layers, ctx.hidden_layers = len(tower), len(slopes)
    ctx.options = list(activations), sum_mode, decay, eps
    ctx.saved, ctx.needs = save, input_needs(inputs)


def _backward(ctx, d_out, _d_weights, _d_hidden):
    refuse_double_backward("DIN")
    # The gradient's structure must be the inputs': torch treats a list of ints
    # as one leaf, and an empty list as an empty list.
    no_grad_codes = None if ctx.options[0] else []
    if d_out is None:  # the output's gradient is undefined: so are the inputs'
        none = [None] * ctx.layers, [None] * ctx.hidden_layers
        return None, None, None, none[0], no_grad_codes, none[1], None, None, None, None
    if not ctx.saved:
        raise RuntimeError("DIN: the forward ran without saving for a backward (save=False)")
    queries, keys, mask, weights, *rest = ctx.saved_tensors
    tower, rest = rest[: ctx.layers], rest[ctx.layers :]
    slopes, hidden = rest[: ctx.hidden_layers], rest[ctx.hidden_layers :]
    codes, sum_mode, decay, eps = ctx.options
    need_queries, need_keys = ctx.needs[:2]
    options = (codes, slopes, sum_mode, decay, eps, weights, hidden, need_queries, need_keys)
    d_queries, d_keys, d_tower, d_slopes = din_attention_backward(
        d_out, queries, keys, mask, tower, *options
    )
    d_queries = d_queries if need_queries else None
    d_keys = d_keys if need_keys else None
    return d_queries, d_keys, None, d_tower, no_grad_codes, d_slopes, None, None, None, None


def din_attention_triton(*args):
    return triton_implementations().din_forward(*args)


def din_attention_backward_triton(*args):
    return triton_implementations().din_backward(*args)


din_attention = define(
    "din_attention",
    din_attention_impl,
    din_attention_fake,
    _setup,
    _backward,
    triton_impl=din_attention_triton,
)
din_attention_backward = define(
    "din_attention_backward",
    din_attention_backward_impl,
    din_attention_backward_fake,
    triton_impl=din_attention_backward_triton,
)
