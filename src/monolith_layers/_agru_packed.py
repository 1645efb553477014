"""The attention-GRU recurrence over real steps only: the packed layout of
:mod:`monolith_layers._packing`, with a hand-written backward that keeps only
the states. Same maths and notation as :mod:`monolith_layers._agru_scan`
(``h_t = h_{t-1} + z_t (c_t - h_{t-1})``, ``z`` = u, a or 1 - (1 - a) u),
without a mask: only real steps are packed.

Memory and the backward's structure are those of
:mod:`monolith_layers._gru_packed`: per time chunk, from the last, the gates,
candidates and update weights are recomputed in bulk from the saved states,
the per-step loop carries only dL/dh, and the chunk's gradients become input
and weight gradients in bulk. The per-step backward (derived in
``_agru_scan``)::

    dc_t  = g_h z_t act'(c_t)            dq_t = dc_t @ W_ch^T   (q_t = r_t h_{t-1})
    d[r|u]pre_t = [dq_t | g_h] * [r'(t) h_{t-1} | u'(t) (c_t - h_{t-1}) dz/du]
    dL/dh_{t-1} = g_h (1 - z_t) + dq_t r_t + d[r|u]pre_t @ W_gh^T
"""

from __future__ import annotations

import torch

from . import _native
from ._fused import activate_, derivative_from_output, pre_scale, refuse_double_backward
from ._packing import Packing


def _update_weight(mode: str, u, a):
    """z: u without scores, a for AGRU, 1 - (1 - a) u for AUGRU."""
    if mode == "none":
        return u
    if mode == "AGRU":
        return a
    return torch.addcmul(torch.ones_like(a), 1.0 - a, u, value=-1.0)


def _forward(x, w_x, b_x, w_gh, w_ch, h0, a, packing: Packing, mode: str, act: str):
    """States buffer (B + N, U): the initial states, then every real step's state."""
    batch, units = h0.shape
    k = pre_scale(act)
    states = x.new_empty(batch + packing.total, units)
    states[:batch] = h0
    widest = packing.sizes[0] if packing.sizes else 0
    native = _native.usable(x, w_x, w_gh, w_ch, h0, a)
    if native is None:  # the Python loop's per-step buffers
        gates = packing.prefixes(x.new_empty(widest, 2 * units))
        cands = packing.prefixes(x.new_empty(widest, units))
        one = x.new_ones(())
    for t0, t1 in packing.chunks(3 * units, native is not None):
        r0, r1 = packing.offsets[t0], packing.offsets[t1]
        xp = torch.addmm(b_x, x[r0:r1], w_x)  # [gates (2U) | candidate (U)]
        if native is not None:
            a_chunk = None if a is None else a[r0:r1]
            codes = _native.MODES[mode], _native.ACTIVATIONS[act]
            native.agru_packed_forward(
                xp, a_chunk, w_gh, w_ch, states, packing.forward_plan(t0, t1), *codes
            )
            continue
        xg = packing.steps_of(xp[:, : 2 * units], t0, t1)
        xc = packing.steps_of(xp[:, 2 * units :], t0, t1)
        new = packing.steps_of(states[batch + r0 : batch + r1], t0, t1)
        if mode == "AGRU":
            z_t = packing.steps_of(a[r0:r1], t0, t1)
        elif mode == "AUGRU":
            damp_t = packing.steps_of(torch.sub(1.0, a[r0:r1]), t0, t1)
        for i, t in enumerate(range(t0, t1)):
            n, base = packing.sizes[t], packing.prev_base(t)
            prev = states[base : base + n]
            g = torch.addmm(xg[i], prev, w_gh, out=gates[n]).sigmoid_()
            u = g[:, units:]
            pre = torch.addmm(xc[i], g[:, :units] * prev, w_ch, beta=k, alpha=k, out=cands[n])
            if mode == "AUGRU":
                z = torch.addcmul(one, damp_t[i], u, value=-1.0)
            else:
                z = u if mode == "none" else z_t[i]
            torch.lerp(prev, activate_(pre, act), z, out=new[i])
    return states


def _chunk_factors(x, w_x, b_x, w_gh, w_ch, prev, a, mode: str, act: str):
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


class _AGRUPacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_x, b_x, w_gh, w_ch, h0, a, packing: Packing, mode: str, act: str):
        # x (N, D) packed; w_x (D, 3U) = [W_gx | W_cx]; b_x (3U,); a (N, 1) or None;
        # h0 (B, U) in sorted row order. -> states (B + N, U).
        states = _forward(x, w_x, b_x, w_gh, w_ch, h0, a, packing, mode, act)
        ctx.save_for_backward(x, w_x, b_x, w_gh, w_ch, states, a)
        ctx.packing, ctx.mode, ctx.act = packing, mode, act
        return states

    @staticmethod
    def backward(ctx, d_states):
        refuse_double_backward("dynamic_rnn_with_attention")
        x, w_x, b_x, w_gh, w_ch, states, a = ctx.saved_tensors
        packing, mode = ctx.packing, ctx.mode
        batch, units = packing.batch, w_gh.shape[0]
        dh_all = d_states.new_zeros(batch, units)  # dL/d(latest state) of every sorted row
        dh = packing.prefixes(dh_all)
        d_x = x.new_empty(x.shape) if ctx.needs_input_grad[0] else None
        d_a = a.new_empty(a.shape) if a is not None and ctx.needs_input_grad[6] else None
        d_w_x, d_b_x = torch.zeros_like(w_x), torch.zeros_like(b_x)
        d_w_gh, d_w_ch = torch.zeros_like(w_gh), torch.zeros_like(w_ch)
        native = _native.usable(x, w_x, w_gh, w_ch, d_states, a)
        for t0, t1 in reversed(packing.chunks(5 * units, native is not None)):
            r0, r1 = packing.offsets[t0], packing.offsets[t1]
            prev = packing.prev_states(states, t0, t1)
            a_c = None if a is None else a[r0:r1]
            q, r, diff, u, coefs, z_act, keep = _chunk_factors(
                x[r0:r1], w_x, b_x, w_gh, w_ch, prev, a_c, mode, ctx.act
            )
            pairs = prev.new_empty(r1 - r0, 2 * units)  # [dq | dh] per step
            d_xp = prev.new_empty(r1 - r0, 3 * units)  # [d gates-pre | d candidate-pre]
            d_out = d_states[batch + r0 : batch + r1]
            if native is not None:
                buffers = (d_out.contiguous(), z_act.contiguous(), coefs, keep.contiguous(), r)
                plan = packing.backward_plan(t0, t1)
                native.agru_packed_backward(*buffers, pairs, d_xp, dh_all, w_gh, w_ch, plan)
            else:
                _backward_steps(
                    packing, t0, t1, d_out, z_act, coefs, keep, r, pairs, d_xp, dh, w_gh, w_ch
                )
            if d_a is not None:
                d_z = pairs[:, units:].mul_(diff)  # dL/dz; pairs is spent
                if mode == "AUGRU":
                    d_z.mul_(u)
                torch.sum(d_z, -1, keepdim=True, out=d_a[r0:r1])
            if d_x is not None:
                torch.mm(d_xp, w_x.t(), out=d_x[r0:r1])
            d_w_x.addmm_(x[r0:r1].t(), d_xp)
            d_b_x.add_(d_xp.sum(0))
            d_w_gh.addmm_(prev.t(), d_xp[:, : 2 * units])
            d_w_ch.addmm_(q.t(), d_xp[:, 2 * units :])
        d_h0 = dh_all.add_(d_states[:batch])
        return d_x, d_w_x, d_b_x, d_w_gh, d_w_ch, d_h0, d_a, None, None, None


def _backward_steps(packing, t0, t1, d_out, z_act, coefs, keep, r, pairs, d_xp, dh, w_gh, w_ch):
    """The backward's per-step loop over a chunk, in Python (the native one's twin)."""
    units = w_gh.shape[0]
    w_gh_t, w_ch_t = w_gh.t(), w_ch.t()
    views = [
        packing.steps_of(t, t0, t1)
        for t in (
            d_out,
            z_act,
            coefs,
            keep,
            r,
            pairs,
            pairs[:, :units],
            pairs[:, units:],
            d_xp[:, : 2 * units],
            d_xp[:, 2 * units :],
        )
    ]
    for i in range(t1 - t0 - 1, -1, -1):
        d_out_t, z_act_t, coef_t, keep_t, r_t, pair, dq_t, dh_t, d_g, d_c = (v[i] for v in views)
        dh_n = dh[d_out_t.shape[0]]
        torch.add(dh_n, d_out_t, out=dh_t)
        dc = torch.mul(dh_t, z_act_t, out=d_c)
        dq = torch.mm(dc, w_ch_t, out=dq_t)
        torch.mul(pair, coef_t, out=d_g)
        carry = torch.mul(dh_t, keep_t).addcmul_(dq, r_t)
        torch.addmm(carry, d_g, w_gh_t, out=dh_n)


def agru_packed(cell, inputs, att_scores, init_state, packing: Packing, mode: str, act: str):
    """:func:`dynamic_rnn_with_attention` over the real steps of validated inputs.

    Returns ``(outputs (B, T, U), final_state (B, U))``; padded steps output zeros.
    """
    w_gx, w_gh, w_cx, w_ch = cell.split_kernels()
    w_x = torch.cat([w_gx, w_cx], dim=1)
    b_x = torch.cat([cell.gates_bias, cell.candidate_bias])
    x = packing.pack(inputs)
    a = None if att_scores is None else packing.pack(att_scores.unsqueeze(-1))
    h0 = packing.sort_rows(init_state)
    args = (x, w_x, b_x, w_gh, w_ch, h0, a)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        states = _AGRUPacked.apply(*args, packing, mode, act)
    else:  # inference: nothing is kept for a backward
        states = _forward(*args, packing, mode, act)
    return packing.unpack(states[packing.batch :]), packing.final_states(states)
