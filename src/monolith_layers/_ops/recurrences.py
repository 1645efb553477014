"""The recurrences as operators: ``monolith_layers::gru`` and ``monolith_layers::agru``.

Both run over the packed layout of :mod:`.packing` (real steps only; a batch
without padding is packing with every row alive), with the time loops in
C++ (``csrc/recurrences.cpp``) and a hand-written backward that keeps only
the states: the outputs the forward returns are the states, so the backward
re-packs them rather than saving a second copy.

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
bulk from the states, runs the per-step loop carrying only dL/dh in C++, and
turns the chunk's gate gradients into input and weight gradients in bulk.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import build
from .packing import Packing, plan
from .registry import define, refuse_double_backward, require_kernels

ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")
MODES = ("none", "AGRU", "AUGRU")


# -- elementwise pieces of the backward's bulk recomputation --


def pre_scale(act: str) -> float:
    """tanh is computed as ``2 sigmoid(2x) - 1`` (several times cheaper than
    ATen's tanh on CPU, equal to float rounding); the 2 folds into the
    matmul or multiply-add that produces the pre-activation."""
    return 2.0 if act == "tanh" else 1.0


def activate_(scaled_pre: Tensor, act: str) -> Tensor:
    """In place: ``pre_scale(act) * pre`` -> ``act(pre)``."""
    if act == "tanh":
        return scaled_pre.sigmoid_().mul_(2.0).sub_(1.0)
    if act == "sigmoid":
        return scaled_pre.sigmoid_()
    if act == "relu":
        return scaled_pre.relu_()
    return scaled_pre


def derivative_from_output(out: Tensor, act: str) -> Tensor | None:
    """``act'(pre)`` written in terms of ``out = act(pre)``; None means 1."""
    if act == "tanh":
        return torch.mul(out, out).neg_().add_(1.0)
    if act == "sigmoid":
        return torch.sub(1.0, out).mul_(out)
    if act == "relu":
        return (out > 0).to(out.dtype)
    return None


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


# -- Keras GRU --


def _gru_forward(kernels, x, kernel, b_in, w_r, b_r, h0, packing: Packing, act: str) -> Tensor:
    batch, units = h0.shape
    states = x.new_empty(batch + packing.total, units)
    states[:batch] = h0
    for t0, t1 in packing.chunks(3 * units):
        r0, r1 = packing.offsets[t0], packing.offsets[t1]
        gi = torch.addmm(b_in, x[r0:r1], kernel)  # the kernel's activations need no pre-scaling
        kernels.gru_packed_forward(
            gi, w_r, b_r, states, packing.forward_plan(t0, t1), build.ACTIVATIONS[act]
        )
    return states


def _gru_factors(x, kernel, b_in, prev, w_r, b_r, act: str):
    """For a chunk: ``(z, c1, c2)``, every factor of the backward that does not
    depend on the incoming gradient: c1 = [dhpre/dh | dzpre/dh], c2 = [drpre/dhpre | r]."""
    units = prev.shape[1]
    gi = torch.addmm(b_in, x, kernel)
    k = pre_scale(act)
    if k != 1.0:
        gi[:, 2 * units :].mul_(k)
    gh = torch.addmm(b_r, prev, w_r)
    zr = gi[:, : 2 * units].add_(gh[:, : 2 * units]).sigmoid_()
    hh = activate_(gi[:, 2 * units :].addcmul_(zr[:, units:], gh[:, 2 * units :], value=k), act)
    z, r = zr[:, :units], zr[:, units:]
    slopes = torch.sub(1.0, zr).mul_(zr)  # sigmoid' of z and r
    c1 = torch.empty_like(zr)
    torch.sub(1.0, z, out=c1[:, :units])
    slope = derivative_from_output(hh, act)
    if slope is not None:
        c1[:, :units].mul_(slope)
    torch.sub(prev, hh, out=c1[:, units:]).mul_(slopes[:, :units])
    c2 = torch.cat([slopes[:, units:].mul_(gh[:, 2 * units :]), r], dim=1)
    return z.contiguous(), c1, c2


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
    states = _gru_forward(
        kernels,
        packing.pack(inputs),
        kernel,
        bias[0],
        recurrent_kernel,
        bias[1],
        packing.sort_rows(init_state),
        packing,
        activation,
    )
    return _results(packing, states)


def gru_fake(inputs, init_state, kernel, recurrent_kernel, bias, mask, activation):
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`gru_impl`'s inputs: d_inputs (zero at padded steps),
    d_init_state, d_kernel, d_recurrent_kernel, d_bias."""
    kernels = require_kernels("gru")
    packing = plan(mask, *inputs.shape[:2], inputs.device)
    w_r, b_in, b_r = recurrent_kernel, bias[0], bias[1]
    x = packing.pack(inputs)
    states = _states(packing, init_state, outputs)
    d_states = _d_states(packing, d_outputs, d_final, outputs)
    batch, units = packing.batch, w_r.shape[0]
    dh_all = d_states.new_zeros(batch, units)  # dL/d(latest state) of every sorted row
    d_x = torch.empty_like(x)
    d_kernel, d_bias = torch.zeros_like(kernel), torch.zeros_like(bias)
    d_w_r = torch.zeros_like(w_r)
    for t0, t1 in reversed(packing.chunks(4 * units)):
        r0, r1 = packing.offsets[t0], packing.offsets[t1]
        prev = packing.prev_states(states, t0, t1)
        z, c1, c2 = _gru_factors(x[r0:r1], kernel, b_in, prev, w_r, b_r, activation)
        grads = z.new_empty(r1 - r0, 4 * units)  # per step [dhpre | dz | dr | dgh_h]
        d_out = d_states[batch + r0 : batch + r1].contiguous()
        kernels.gru_packed_backward(
            d_out, z, c1, c2, grads, dh_all, w_r, packing.backward_plan(t0, t1)
        )
        d_gi = torch.cat([grads[:, units : 3 * units], grads[:, :units]], dim=1)  # z, r, h
        torch.mm(d_gi, kernel.t(), out=d_x[r0:r1])
        d_kernel.addmm_(x[r0:r1].t(), d_gi)
        d_bias[0].add_(d_gi.sum(0))
        d_gh = grads[:, units:]
        d_w_r.addmm_(prev.t(), d_gh)
        d_bias[1].add_(d_gh.sum(0))
    d_h0 = packing.unsort_rows(dh_all.add_(d_states[:batch]))
    return packing.unpack(d_x), d_h0, d_kernel, d_w_r, d_bias


def gru_backward_fake(d_outputs, d_final, inputs, init_state, kernel, recurrent_kernel, bias, *_):
    return tuple(torch.empty_like(t) for t in (inputs, init_state, kernel, recurrent_kernel, bias))


def _gru_setup(ctx, inputs, output) -> None:
    *tensors, activation = inputs
    ctx.save_for_backward(*tensors, output[0])
    ctx.activation = activation
    ctx.set_materialize_grads(False)


def _gru_backward(ctx, d_outputs, d_final):
    refuse_double_backward("gru_sequence")
    *tensors, outputs = ctx.saved_tensors
    grads = gru_backward(d_outputs, d_final, *tensors, outputs, ctx.activation)
    return (
        *(
            g if need else None
            for g, need in zip(grads, ctx.needs_input_grad[: len(grads)], strict=True)
        ),
        None,
        None,
    )


gru = define("gru", gru_impl, gru_fake, _gru_setup, _gru_backward)
gru_backward = define("gru_backward", gru_backward_impl, gru_backward_fake)


# -- attention GRU --


def _update_weight(mode: str, u: Tensor, a: Tensor | None) -> Tensor:
    """z: u without scores, a for AGRU, 1 - (1 - a) u for AUGRU."""
    if mode == "none":
        return u
    if mode == "AGRU":
        return a
    return torch.addcmul(torch.ones_like(a), 1.0 - a, u, value=-1.0)


def _agru_forward(kernels, x, w_x, b_x, w_gh, w_ch, h0, a, packing: Packing, mode, act):
    batch, units = h0.shape
    states = x.new_empty(batch + packing.total, units)
    states[:batch] = h0
    codes = build.MODES[mode], build.ACTIVATIONS[act]
    for t0, t1 in packing.chunks(3 * units):
        r0, r1 = packing.offsets[t0], packing.offsets[t1]
        xp = torch.addmm(b_x, x[r0:r1], w_x)  # [gates (2U) | candidate (U)]
        a_chunk = None if a is None else a[r0:r1]
        kernels.agru_packed_forward(
            xp, a_chunk, w_gh, w_ch, states, packing.forward_plan(t0, t1), *codes
        )
    return states


def _agru_factors(x, w_x, b_x, w_gh, w_ch, prev, a, mode: str, act: str):
    """For a chunk: every factor of the backward independent of the incoming gradient.

    Returns ``(q, r, diff, u, coefs, z_act, keep)``: q = r h_{t-1}, diff = c - h_{t-1},
    coefs = [r'(t) h_{t-1} | u'(t) diff dz/du], z_act = z act'(c), keep = 1 - z.
    """
    units = prev.shape[1]
    xp = torch.addmm(b_x, x, w_x)
    g = torch.addmm(xp[:, : 2 * units], prev, w_gh).sigmoid_()
    r, u = g[:, :units], g[:, units:]
    q = r * prev
    k = pre_scale(act)
    c = activate_(torch.addmm(xp[:, 2 * units :], q, w_ch, beta=k, alpha=k), act)
    z = _update_weight(mode, u, a)
    diff = c.sub(prev)
    coefs = torch.sub(1.0, g).mul_(g)
    coefs[:, :units].mul_(prev)
    if mode == "AGRU":
        coefs[:, units:] = 0.0  # the update gate does not reach h
    else:
        coefs[:, units:].mul_(diff)
        if mode == "AUGRU":
            coefs[:, units:].mul_(a - 1.0)
    slope = derivative_from_output(c, act)
    z_act = z.expand_as(c) if slope is None else slope.mul_(z)
    return q, r.contiguous(), diff, u, coefs, z_act, torch.sub(1.0, z)


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
    w_x, b_x, w_gh, w_ch = _agru_weights(
        inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias
    )
    states = _agru_forward(
        kernels,
        packing.pack(inputs),
        w_x,
        b_x,
        w_gh,
        w_ch,
        packing.sort_rows(init_state),
        _packed_scores(packing, att_scores),
        packing,
        mode,
        activation,
    )
    return _results(packing, states)


def agru_fake(inputs, att_scores, init_state, *_):
    batch, steps = inputs.shape[:2]
    units = init_state.shape[1]
    return inputs.new_empty(batch, steps, units), init_state.new_empty(batch, units)


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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`agru_impl`'s inputs: d_inputs, d_att_scores (empty
    without scores), d_init_state, d_gates_kernel, d_gates_bias,
    d_candidate_kernel, d_candidate_bias."""
    kernels = require_kernels("agru")
    packing = plan(mask, *inputs.shape[:2], inputs.device)
    w_x, b_x, w_gh, w_ch = _agru_weights(
        inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias
    )
    x, a = packing.pack(inputs), _packed_scores(packing, att_scores)
    states = _states(packing, init_state, outputs)
    d_states = _d_states(packing, d_outputs, d_final, outputs)
    batch, units = packing.batch, w_gh.shape[0]
    dh_all = d_states.new_zeros(batch, units)  # dL/d(latest state) of every sorted row
    d_x = torch.empty_like(x)
    d_a = None if a is None else torch.empty_like(a)
    d_w_x, d_b_x = torch.zeros_like(w_x), torch.zeros_like(b_x)
    d_w_gh, d_w_ch = torch.zeros_like(w_gh), torch.zeros_like(w_ch)
    for t0, t1 in reversed(packing.chunks(5 * units)):
        r0, r1 = packing.offsets[t0], packing.offsets[t1]
        prev = packing.prev_states(states, t0, t1)
        a_c = None if a is None else a[r0:r1]
        q, r, diff, u, coefs, z_act, keep = _agru_factors(
            x[r0:r1], w_x, b_x, w_gh, w_ch, prev, a_c, mode, activation
        )
        pairs = prev.new_empty(r1 - r0, 2 * units)  # [dq | dh] per step
        d_xp = prev.new_empty(r1 - r0, 3 * units)  # [d gates-pre | d candidate-pre]
        d_out = d_states[batch + r0 : batch + r1].contiguous()
        buffers = (d_out, z_act.contiguous(), coefs, keep.contiguous(), r)
        plan_rows = packing.backward_plan(t0, t1)
        kernels.agru_packed_backward(*buffers, pairs, d_xp, dh_all, w_gh, w_ch, plan_rows)
        if d_a is not None:
            d_z = pairs[:, units:].mul_(diff)  # dL/dz; pairs is spent
            if mode == "AUGRU":
                d_z.mul_(u)
            torch.sum(d_z, -1, keepdim=True, out=d_a[r0:r1])
        torch.mm(d_xp, w_x.t(), out=d_x[r0:r1])
        d_w_x.addmm_(x[r0:r1].t(), d_xp)
        d_b_x.add_(d_xp.sum(0))
        d_w_gh.addmm_(prev.t(), d_xp[:, : 2 * units])
        d_w_ch.addmm_(q.t(), d_xp[:, 2 * units :])
    d_h0 = packing.unsort_rows(dh_all.add_(d_states[:batch]))
    d_gates_kernel = torch.cat([d_w_x[:, : 2 * units], d_w_gh])
    d_candidate_kernel = torch.cat([d_w_x[:, 2 * units :], d_w_ch])
    d_att = inputs.new_empty(0) if d_a is None else packing.unpack(d_a).squeeze(-1)
    return (
        packing.unpack(d_x),
        d_att,
        d_h0,
        d_gates_kernel,
        d_b_x[: 2 * units].clone(),
        d_candidate_kernel,
        d_b_x[2 * units :].clone(),
    )


def agru_backward_fake(d_outputs, d_final, inputs, att_scores, init_state, gk, gb, ck, cb, *_):
    d_att = inputs.new_empty(0) if att_scores is None else torch.empty_like(att_scores)
    rest = (init_state, gk, gb, ck, cb)
    return (torch.empty_like(inputs), d_att, *(torch.empty_like(t) for t in rest))


def _agru_setup(ctx, inputs, output) -> None:
    *tensors, mode, activation = inputs
    ctx.save_for_backward(*tensors, output[0])
    ctx.mode, ctx.activation = mode, activation
    ctx.set_materialize_grads(False)


def _agru_backward(ctx, d_outputs, d_final):
    refuse_double_backward("dynamic_rnn_with_attention")
    *tensors, outputs = ctx.saved_tensors
    grads = list(agru_backward(d_outputs, d_final, *tensors, outputs, ctx.mode, ctx.activation))
    if tensors[1] is None:
        grads[1] = None
    return (
        *(
            g if need else None
            for g, need in zip(grads, ctx.needs_input_grad[: len(grads)], strict=True)
        ),
        None,
        None,
        None,
    )


agru = define("agru", agru_impl, agru_fake, _agru_setup, _agru_backward)
agru_backward = define("agru_backward", agru_backward_impl, agru_backward_fake)
