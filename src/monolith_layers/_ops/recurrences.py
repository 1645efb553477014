"""The recurrences as operators: ``monolith_layers::gru`` and ``monolith_layers::agru``.

Both run in C++ (``csrc/recurrences.cpp``), forward and hand-written
backward, over one layout: the padded batch is packed to its real steps only
(rows sorted by length, step t holding the rows still alive, as in
``torch.nn.utils.rnn.PackedSequence``; a row's real steps need not be
left-aligned, and a batch without padding is packing with every row alive).
The plan is made from the mask in one pass on the host, with no device
round trip. The backward keeps only the states: the outputs the forward
returns are the states, so the backward re-packs them rather than saving a
second copy. This module defines the operators around the kernels.

Keras GRU (``reset_after=True``), one step over the n rows alive (``gi`` =
input projection with ``bias[0]``)::

    gh_t = h_{t-1} @ W_r + b_r                       (n, 3U)
    z_t, r_t = sigmoid(gi_zr_t + gh_zr_t)
    hh_t = act(gi_h_t + r_t * gh_h_t)
    h_t  = z_t * h_{t-1} + (1 - z_t) * hh_t

    dL/dhpre_t   = g_h (1 - z_t) act'(hh_t)               -> d gi_h_t
    dL/dzpre_t   = g_h (h_{t-1} - hh_t) z_t (1 - z_t)      -> d gi_z_t = d gh_z_t
    dL/drpre_t   = dL/dhpre_t gh_h_t r_t (1 - r_t)         -> d gi_r_t = d gh_r_t
    dL/dgh_h_t   = dL/dhpre_t r_t
    dL/dh_{t-1}  = g_h z_t + dL/dgh_t @ W_r^T

Attention GRU (Monolith's AGRUCell; ``z`` = u without scores, a for AGRU,
1 - (1 - a) u for AUGRU)::

    g_t = sigmoid(xg_t + h_{t-1} @ W_gh)            r_t, u_t = split(g_t)
    c_t = act(xc_t + (r_t * h_{t-1}) @ W_ch)
    h_t = h_{t-1} + z_t (c_t - h_{t-1})

    dc_t  = g_h z_t act'(c_t)            dq_t = dc_t @ W_ch^T   (q_t = r_t h_{t-1})
    d[r|u]pre_t = [dq_t | g_h] * [r'(t) h_{t-1} | u'(t) (c_t - h_{t-1}) dz/du]
    dL/dh_{t-1} = g_h (1 - z_t) + dq_t r_t + d[r|u]pre_t @ W_gh^T
    dz/du: 1 (none), 0 (AGRU), a - 1 (AUGRU);  dL/da_t = sum_U g_h (c_t - h_{t-1}) dz/da

Memory: per time chunk, from the last, the backward recomputes the gates in
bulk from the states, runs the per-step loop carrying only dL/dh, and turns
the chunk's gate gradients into input and weight gradients in bulk.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import build
from .registry import (
    define,
    input_needs,
    refuse_double_backward,
    require_kernels,
    triton_implementations,
)


def _setup(ctx, inputs, output) -> None:
    """Both recurrences save their tensor inputs and their outputs (the states);
    their str inputs (mode, activation) are options for the backward."""
    ctx.save_for_backward(*(x for x in inputs if not isinstance(x, str)), output[0])
    ctx.options = [x for x in inputs if isinstance(x, str)]
    ctx.needs = input_needs(inputs)
    ctx.set_materialize_grads(False)


def _backward_with(backward_op, where: str):
    """The autograd formula of a recurrence: its backward operator on what
    :func:`_setup` saved; None for inputs that need no gradient (and for the
    mask and the options)."""

    def backward(ctx, d_outputs, d_final):
        refuse_double_backward(where)
        *tensors, outputs = ctx.saved_tensors
        needs = ctx.needs
        grads = list(backward_op(d_outputs, d_final, *tensors, outputs, *ctx.options, needs[0]))
        grads += [None] * (len(needs) - len(grads))  # the mask and the options
        return tuple(g if need else None for g, need in zip(grads, needs, strict=True))

    return backward


def _or_empty(grad: Tensor | None, like: Tensor) -> Tensor:
    """A gradient the kernel left undefined (not asked for) as an empty tensor."""
    return like.new_empty(0) if grad is None else grad


# -- Keras GRU --


def gru_impl(
    inputs: Tensor,
    init_state: Tensor,
    kernel: Tensor,
    recurrent_kernel: Tensor,
    bias: Tensor,
    mask: Tensor | None,
    activation: str,
) -> tuple[Tensor, Tensor]:
    """inputs (B, T, D), init_state (B, U), kernel (D, 3U), recurrent_kernel (U, 3U),
    bias (2, 3U), mask (B, T) bool or None -> (outputs (B, T, U), final (B, U))."""
    kernels = require_kernels("gru")
    act = build.ACTIVATIONS[activation]
    outputs, final = kernels.gru_forward(
        inputs, mask, kernel, bias, recurrent_kernel, init_state, act
    )
    return outputs, final


def gru_fake(inputs, init_state, *_):
    batch, steps = inputs.shape[:2]
    units = init_state.shape[1]
    return inputs.new_empty(batch, steps, units), init_state.new_empty(batch, units)


def gru_backward_impl(
    d_outputs: Tensor | None,
    d_final: Tensor | None,
    inputs: Tensor,
    init_state: Tensor,
    kernel: Tensor,
    recurrent_kernel: Tensor,
    bias: Tensor,
    mask: Tensor | None,
    outputs: Tensor,
    activation: str,
    need_inputs: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`gru_impl`'s inputs: d_inputs (zero at padded steps;
    empty unless ``need_inputs``), d_init_state, d_kernel, d_recurrent_kernel, d_bias."""
    kernels = require_kernels("gru")
    d_x, *rest = kernels.gru_backward(
        d_outputs,
        d_final,
        inputs,
        mask,
        kernel,
        bias,
        recurrent_kernel,
        init_state,
        outputs,
        build.ACTIVATIONS[activation],
        need_inputs,
    )
    return _or_empty(d_x, inputs), *rest


def gru_backward_fake(
    d_outputs, d_final, inputs, init_state, kernel, recurrent_kernel, bias, *rest
):
    d_inputs = torch.empty_like(inputs) if rest[-1] else inputs.new_empty(0)
    return d_inputs, *(torch.empty_like(t) for t in (init_state, kernel, recurrent_kernel, bias))


def gru_triton(inputs, init_state, kernel, recurrent_kernel, bias, mask, activation):
    act = build.ACTIVATIONS[activation]
    return triton_implementations().gru_forward(
        inputs, init_state, kernel, recurrent_kernel, bias, mask, act
    )


def gru_backward_triton(*args):
    *tensors, activation, need_inputs = args
    gpu = triton_implementations()
    return gpu.gru_backward(*tensors, build.ACTIVATIONS[activation], need_inputs)


gru_backward = define(
    "gru_backward", gru_backward_impl, gru_backward_fake, triton_impl=gru_backward_triton
)
gru = define(
    "gru",
    gru_impl,
    gru_fake,
    _setup,
    _backward_with(gru_backward, "gru_sequence"),
    triton_impl=gru_triton,
)


# -- attention GRU --


def agru_impl(
    inputs: Tensor,
    att_scores: Tensor | None,
    init_state: Tensor,
    gates_kernel: Tensor,
    gates_bias: Tensor,
    candidate_kernel: Tensor,
    candidate_bias: Tensor,
    mask: Tensor | None,
    mode: str,
    activation: str,
) -> tuple[Tensor, Tensor]:
    """inputs (B, T, D), att_scores (B, T) or None, init_state (B, U), the cell's
    gates kernel (D + U, 2U) and bias (2U), candidate kernel (D + U, U) and bias
    (U), mask (B, T) bool or None -> (outputs (B, T, U), final (B, U))."""
    kernels = require_kernels("agru")
    weights = (gates_kernel, gates_bias, candidate_kernel, candidate_bias)
    codes = build.MODES[mode], build.ACTIVATIONS[activation]
    outputs, final = kernels.agru_forward(inputs, att_scores, mask, *weights, init_state, *codes)
    return outputs, final


def agru_fake(inputs, att_scores, init_state, *_):
    return gru_fake(inputs, init_state)


def agru_backward_impl(
    d_outputs: Tensor | None,
    d_final: Tensor | None,
    inputs: Tensor,
    att_scores: Tensor | None,
    init_state: Tensor,
    gates_kernel: Tensor,
    gates_bias: Tensor,
    candidate_kernel: Tensor,
    candidate_bias: Tensor,
    mask: Tensor | None,
    outputs: Tensor,
    mode: str,
    activation: str,
    need_inputs: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`agru_impl`'s inputs: d_inputs (empty unless
    ``need_inputs``), d_att_scores (empty without scores), d_init_state,
    d_gates_kernel, d_gates_bias, d_candidate_kernel, d_candidate_bias."""
    kernels = require_kernels("agru")
    weights = (gates_kernel, gates_bias, candidate_kernel, candidate_bias)
    codes = build.MODES[mode], build.ACTIVATIONS[activation]
    d_x, d_att, *rest = kernels.agru_backward(
        d_outputs,
        d_final,
        inputs,
        att_scores,
        mask,
        *weights,
        init_state,
        outputs,
        *codes,
        need_inputs,
    )
    return _or_empty(d_x, inputs), _or_empty(d_att, inputs), *rest


def agru_backward_fake(d_outputs, d_final, inputs, att_scores, *rest):
    d_inputs = torch.empty_like(inputs) if rest[-1] else inputs.new_empty(0)
    d_att = inputs.new_empty(0) if att_scores is None else torch.empty_like(att_scores)
    return (d_inputs, d_att, *(torch.empty_like(t) for t in rest[:5]))


def agru_triton(*args):
    *tensors, mode, activation = args
    codes = build.MODES[mode], build.ACTIVATIONS[activation]
    return triton_implementations().agru_forward(*tensors, *codes)


def agru_backward_triton(*args):
    *tensors, mode, activation, need_inputs = args
    codes = build.MODES[mode], build.ACTIVATIONS[activation]
    return triton_implementations().agru_backward(*tensors, *codes, need_inputs)


agru_backward = define(
    "agru_backward", agru_backward_impl, agru_backward_fake, triton_impl=agru_backward_triton
)
agru = define(
    "agru",
    agru_impl,
    agru_fake,
    _setup,
    _backward_with(agru_backward, "dynamic_rnn_with_attention"),
    triton_impl=agru_triton,
)
