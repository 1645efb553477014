"""The recurrences as operators: ``monolith_layers::gru`` and ``monolith_layers::agru``.

Both run over the packed layout of :mod:`.packing` (real steps only; a batch
without padding is packing with every row alive), forward and hand-written
backward in C++ (``csrc/recurrences.cpp``). The backward keeps only the
states: the outputs the forward returns are the states, so the backward
re-packs them rather than saving a second copy. This module moves tensors
between the padded layout and the packed one and defines the operators.

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
from .packing import Packing, plan
from .registry import define, input_needs, refuse_double_backward, require_kernels


def _states(packing: Packing, init_state: Tensor, outputs: Tensor) -> Tensor:
    """The (B + N, U) states buffer rebuilt from what the forward returned."""
    return torch.cat([packing.sort_rows(init_state), packing.pack(outputs)])


def _d_states(packing: Packing, d_outputs: Tensor | None, d_final: Tensor | None, like: Tensor):
    """dL/d(states buffer) from the gradients of the two outputs."""
    d_states = like.new_zeros(packing.batch + packing.total, like.shape[-1])
    if d_outputs is not None:
        d_states[packing.batch :] = packing.pack(d_outputs)
    if d_final is not None:
        d_states.index_add_(0, packing.final_index, d_final)
    return d_states


def _results(packing: Packing, states: Tensor) -> tuple[Tensor, Tensor]:
    return packing.unpack(states[packing.batch :]), packing.final_states(states)


def _unpacked(packing: Packing, d_x: Tensor | None, inputs: Tensor) -> Tensor:
    """The inputs' gradient in the padded layout, or empty where none was asked for."""
    return inputs.new_empty(0) if d_x is None else packing.unpack(d_x)


def _like(*tensors: Tensor) -> tuple[Tensor, ...]:
    return tuple(torch.empty_like(t) for t in tensors)


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
    packing = plan(mask, *inputs.shape[:2], inputs.device)
    states = kernels.gru_forward(
        packing.pack(inputs),
        kernel,
        bias,
        recurrent_kernel,
        packing.sort_rows(init_state),
        list(packing.sizes),
        build.ACTIVATIONS[activation],
    )
    return _results(packing, states)


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
    packing = plan(mask, *inputs.shape[:2], inputs.device)
    d_x, d_h0, *d_weights = kernels.gru_backward(
        _d_states(packing, d_outputs, d_final, outputs),
        packing.pack(inputs),
        kernel,
        bias,
        recurrent_kernel,
        _states(packing, init_state, outputs),
        list(packing.sizes),
        build.ACTIVATIONS[activation],
        need_inputs,
    )
    return _unpacked(packing, d_x, inputs), packing.unsort_rows(d_h0), *d_weights


def gru_backward_fake(
    d_outputs, d_final, inputs, init_state, kernel, recurrent_kernel, bias, *rest
):
    d_inputs = torch.empty_like(inputs) if rest[-1] else inputs.new_empty(0)
    return d_inputs, *_like(init_state, kernel, recurrent_kernel, bias)


gru_backward = define("gru_backward", gru_backward_impl, gru_backward_fake)
gru = define("gru", gru_impl, gru_fake, _setup, _backward_with(gru_backward, "gru_sequence"))


# -- attention GRU --


def _agru_weights(inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias):
    """``(w_x (D, 3U), b_x (3U), w_gh (U, 2U), w_ch (U, U))`` from the cell's kernels."""
    d = inputs.shape[-1]
    w_x = torch.cat([gates_kernel[:d], candidate_kernel[:d]], dim=1)
    b_x = torch.cat([gates_bias, candidate_bias])
    return w_x, b_x, gates_kernel[d:], candidate_kernel[d:]


def _packed_scores(packing: Packing, att_scores: Tensor | None) -> Tensor | None:
    return None if att_scores is None else packing.pack(att_scores.unsqueeze(-1))


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
    packing = plan(mask, *inputs.shape[:2], inputs.device)
    weights = _agru_weights(inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias)
    states = kernels.agru_forward(
        packing.pack(inputs),
        _packed_scores(packing, att_scores),
        *weights,
        packing.sort_rows(init_state),
        list(packing.sizes),
        build.MODES[mode],
        build.ACTIVATIONS[activation],
    )
    return _results(packing, states)


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
    packing = plan(mask, *inputs.shape[:2], inputs.device)
    weights = _agru_weights(inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias)
    d_x, d_a, d_h0, d_w_x, d_b_x, d_w_gh, d_w_ch = kernels.agru_backward(
        _d_states(packing, d_outputs, d_final, outputs),
        packing.pack(inputs),
        _packed_scores(packing, att_scores),
        *weights,
        _states(packing, init_state, outputs),
        list(packing.sizes),
        build.MODES[mode],
        build.ACTIVATIONS[activation],
        need_inputs,
    )
    units = d_w_gh.shape[0]
    return (
        _unpacked(packing, d_x, inputs),
        inputs.new_empty(0) if d_a is None else packing.unpack(d_a).squeeze(-1),
        packing.unsort_rows(d_h0),
        torch.cat([d_w_x[:, : 2 * units], d_w_gh]),
        d_b_x[: 2 * units].clone(),
        torch.cat([d_w_x[:, 2 * units :], d_w_ch]),
        d_b_x[2 * units :].clone(),
    )


def agru_backward_fake(d_outputs, d_final, inputs, att_scores, *rest):
    d_inputs = torch.empty_like(inputs) if rest[-1] else inputs.new_empty(0)
    d_att = inputs.new_empty(0) if att_scores is None else torch.empty_like(att_scores)
    return (d_inputs, d_att, *_like(*rest[:5]))


agru_backward = define("agru_backward", agru_backward_impl, agru_backward_fake)
agru = define(
    "agru",
    agru_impl,
    agru_fake,
    _setup,
    _backward_with(agru_backward, "dynamic_rnn_with_attention"),
)
