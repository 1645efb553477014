"""The fast attention-GRU recurrence: hoisted projections, fused steps, and a
hand-written backward through time.

Why it is fast: ``[x, h] @ W = x @ W_x + h @ W_h``, so the ``x`` half of both
matmuls is done for all T steps at once before the loop. Each step then does
two (B, U) matmuls and a handful of in-place elementwise ops into
preallocated time-major buffers. The backward keeps the same shape: every
factor that does not depend on the incoming gradient (sigmoid' of the gates,
act' of the candidate, ``c - h``) is computed for all steps in bulk, the
loop carries only ``dh``, and the weight gradients are one big matmul each
after the loop.

Notation (time-major, T steps, batch B, units U)::

    g_t = sigmoid(xg_t + h_{t-1} @ W_gh)            r_t, u_t = split(g_t)
    c_t = act(xc_t + (r_t * h_{t-1}) @ W_ch)
    h_t = h_{t-1} + z_t * (c_t - h_{t-1})            (torch.lerp)
    z_t = m_t * u_t                    no score
    z_t = m_t * a_t                    AGRU
    z_t = m_t - m_t (1 - a_t) * u_t    AUGRU (= m_t * (1 - (1 - a_t) u_t))

with ``m_t`` the padding mask (1 real, 0 padded; all ones without a mask).
Padded inputs and scores arrive as zeros (the callers select them away), so
every intermediate is finite and ``m_t = 0`` gives ``z_t = 0`` exactly.

The backward, derived (``*`` elementwise, ``g_h`` = dL/dh_t accumulated from
the later steps and from ``outputs[t]``; ``act'`` from the candidate's output)::

    h_t = h_{t-1} + z_t (c_t - h_{t-1})
      dL/dc_t      = g_h z_t
      dL/dcpre_t   = g_h z_t act'(c_t)                         -> d xc_t (input projection)
      dL/dq_t      = dL/dcpre_t @ W_ch^T,  q_t = r_t * h_{t-1}
      dL/drpre_t   = dL/dq_t * h_{t-1} * r_t (1 - r_t)          -> d xg_t, reset half
      dL/dz_t      = g_h * (c_t - h_{t-1})
      per mode, dz_t/du_t and dz_t/da_t:
        none:   z = m u              dz/du = m           dz/da = -
        AGRU:   z = m a              dz/du = 0           dz/da = m
        AUGRU:  z = m (1 - (1-a) u)  dz/du = m (a - 1)   dz/da = m u
      dL/dupre_t   = dL/dz_t * dz/du * u_t (1 - u_t)           -> d xg_t, update half
      dL/da_t      = sum_U dL/dz_t * dz/da
      dL/dh_{t-1}  = g_h (1 - z_t) + dL/dq_t * r_t + dL/dgpre_t @ W_gh^T
    dW_gh = sum_t h_{t-1}^T dL/dgpre_t;  dW_ch = sum_t q_t^T dL/dcpre_t

The loop carries only ``g_h``; every factor that does not depend on it
(sigmoid', act', ``c - h``, dz/du) is computed for all steps at once.
"""

from __future__ import annotations

import torch

from . import _native
from ._fused import (
    activate_,
    derivative_from_output,
    fused_activation_name,
    pre_scale,
    refuse_double_backward,
)


def _scan_forward(xp, w_gh, w_ch, h0, a, m, mode: str, act: str, history: bool):
    """The forward loop. Returns ``(states, gates, cands, z_all)``.

    ``history=True`` keeps every step's gates and candidate for the backward;
    ``history=False`` (inference) reuses one step's worth of scratch instead.
    """
    steps, batch, units = xp.shape[0], xp.shape[1], xp.shape[2] // 3
    xg, xc = xp[..., : 2 * units], xp[..., 2 * units :]
    kept = steps if history else 1
    states = xp.new_empty(steps + 1, batch, units)  # states[t] = h before step t
    states[0] = h0
    gates = xp.new_empty(kept, batch, 2 * units)
    cands = xp.new_empty(kept, batch, units)

    def per_step(buffer):
        # Per-step views, made once: indexing a Python list costs nothing.
        return buffer.unbind(0) if history else [buffer[0]] * steps

    z_all = None  # 'none' mode: z is u (times m), rebuilt from the gates in backward
    if mode == "AGRU":
        z_all = a if m is None else a * m  # independent of the state: bulk
    elif mode == "AUGRU":
        z_all = xp.new_empty(kept, batch, units)  # filled step by step
    native = _native.usable(xp, w_gh, w_ch, h0, a, m)
    if native is not None:
        codes = _native.MODES[mode], _native.ACTIVATIONS[act]
        native.agru_forward(xp, w_gh, w_ch, states, gates, cands, z_all, a, m, *codes, history)
        return states, gates, cands, z_all
    if mode == "AGRU":
        z_t = z_all.unbind(0)
    elif mode == "AUGRU":
        z_t = per_step(z_all)
        keep_t = (torch.ones_like(a) if m is None else m).unbind(0)
        damp_t = (1.0 - a if m is None else m * (1.0 - a)).unbind(0)
    state_t, gate_t, cand_t = states.unbind(0), per_step(gates), per_step(cands)
    reset_t, update_t = per_step(gates[..., :units]), per_step(gates[..., units:])
    xg_t, xc_t = xg.unbind(0), xc.unbind(0)
    k = pre_scale(act)
    for t in range(steps):
        h = state_t[t]
        torch.addmm(xg_t[t], h, w_gh, out=gate_t[t]).sigmoid_()
        c = activate_(
            torch.addmm(xc_t[t], reset_t[t] * h, w_ch, beta=k, alpha=k, out=cand_t[t]), act
        )
        if mode == "AUGRU":
            z = torch.addcmul(keep_t[t], damp_t[t], update_t[t], value=-1.0, out=z_t[t])
        elif mode == "none":
            z = update_t[t] if m is None else update_t[t] * m[t]
        else:
            z = z_t[t]
        torch.lerp(h, c, z, out=state_t[t + 1])
    return states, gates, cands, z_all


def _time_major(att, mask, dtype):
    """(B, T) scores and mask -> (T, B, 1) in ``dtype`` (None stays None)."""
    a = None if att is None else att.t().unsqueeze(-1).to(dtype)
    m = None if mask is None else mask.t().unsqueeze(-1).to(dtype)
    return a, m


def _outputs(states, m):
    outputs = states[1:] if m is None else torch.where(m.bool(), states[1:], 0.0)
    return outputs, states[-1].clone()


class _AGRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, w_gh, w_ch, h0, att, mask, mode: str, act: str):
        # xp (T, B, 3U): input projections with biases, [gates (2U) | candidate (U)],
        # time-major so that each step's slice is one block of memory.
        # att, mask: (B, T) or None. mode: 'none' | 'AGRU' | 'AUGRU'.
        a, m = _time_major(att, mask, xp.dtype)
        states, gates, cands, z_all = _scan_forward(xp, w_gh, w_ch, h0, a, m, mode, act, True)
        # An unused output (DIEN reads only one of the two) then arrives in
        # backward as None instead of a tensor of zeros to add in every step.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(w_gh, w_ch, states, gates, cands, z_all, a, m)
        ctx.mode, ctx.act = mode, act
        return _outputs(states, m)

    @staticmethod
    def backward(ctx, d_outputs, d_final):
        refuse_double_backward("dynamic_rnn_with_attention")
        w_gh, w_ch, states, gates, cands, z_all, a, m = ctx.saved_tensors
        mode, act = ctx.mode, ctx.act
        steps, batch, units = cands.shape
        prev = states[:-1]
        r, u = gates[..., :units], gates[..., units:]
        if mode == "none":
            z_all = u if m is None else u * m
        # Every factor that does not depend on the incoming gradient, for all
        # steps at once; built in place to keep large temporaries few.
        diff = cands - prev  # d h_t / d z_t
        # coefs[t] = [d r-pre from dq, d u-pre from dh_t]: sigmoid' times the rest.
        coefs = torch.sub(1.0, gates).mul_(gates)
        coefs[..., :units].mul_(prev)
        if mode == "AGRU":
            coefs[..., units:] = 0.0  # the update gate does not reach h
        else:
            coefs[..., units:].mul_(diff)
            if mode == "AUGRU":
                coefs[..., units:].mul_((a - 1.0) if m is None else m * (a - 1.0))
            elif m is not None:
                coefs[..., units:].mul_(m)
        act_slope = derivative_from_output(cands, act)
        z_act = z_all if act_slope is None else act_slope.mul_(z_all)
        if d_outputs is not None and m is not None:
            d_outputs = torch.where(m.bool(), d_outputs, 0.0)  # select: a nan there stays out

        # pairs[t] = [dq_t, dh_t] side by side, so that one contiguous multiply
        # by coefs[t] gives both gate gradients.
        pairs = gates.new_empty(steps, batch, 2 * units)
        d_xp = gates.new_empty(steps, batch, 3 * units)  # [d gate-pre | d candidate-pre]
        d_gates, d_cand = d_xp[..., : 2 * units], d_xp[..., 2 * units :]
        dh = d_final if d_final is not None else cands.new_zeros(batch, units)
        native = _native.usable(cands, dh, d_outputs)
        if native is not None:
            if d_outputs is not None:
                d_outputs = d_outputs.contiguous()  # e.g. the expanded gradient of a sum
            buffers = (z_act, z_all, gates, coefs, pairs, d_xp, w_gh, w_ch)
            dh = native.agru_backward(d_outputs, dh, *buffers)
        else:
            dh = _backward_loop(d_outputs, dh, z_act, z_all, gates, coefs, pairs, d_xp, w_gh, w_ch)
        flat = steps * batch
        d_att = None
        if mode != "none" and ctx.needs_input_grad[4]:
            d_z = pairs[..., units:].mul_(diff)  # dh_t * dh_t/dz_t; pairs is spent
            if mode == "AUGRU":
                d_z.mul_(u)
            d_att = d_z.sum(-1) if m is None else d_z.sum(-1) * m.squeeze(-1)
            d_att = d_att.t()
        d_w_gh = prev.reshape(flat, units).t() @ d_gates.reshape(flat, 2 * units)
        q = torch.mul(r, prev, out=diff)  # diff is not needed after this
        d_w_ch = q.reshape(flat, units).t() @ d_cand.reshape(flat, units)
        return (
            d_xp,
            d_w_gh,
            d_w_ch,
            dh,
            d_att,
            None,
            None,
            None,
        )


def _backward_loop(d_outputs, dh, z_act, z_all, gates, coefs, pairs, d_xp, w_gh, w_ch):
    """The backward's time loop in Python: fills pairs and d_xp, returns dL/dh_0."""
    steps, units = z_act.shape[0], gates.shape[2] // 2
    r = gates[..., :units]
    d_gates, d_cand = d_xp[..., : 2 * units], d_xp[..., 2 * units :]
    w_ch_t, w_gh_t = w_ch.t(), w_gh.t()
    d_out_t = None if d_outputs is None else d_outputs.unbind(0)
    dq_t, dh_t = pairs[..., :units].unbind(0), pairs[..., units:].unbind(0)
    pair_t, coef_t = pairs.unbind(0), coefs.unbind(0)
    d_gate_t, d_cand_t = d_gates.unbind(0), d_cand.unbind(0)
    z_act_t, z_t, reset_t = z_act.unbind(0), z_all.unbind(0), r.unbind(0)
    for t in range(steps - 1, -1, -1):
        if d_out_t is None:
            dh = dh_t[t].copy_(dh)
        else:
            dh = torch.add(dh, d_out_t[t], out=dh_t[t])
        dc = torch.mul(dh, z_act_t[t], out=d_cand_t[t])
        dq = torch.mm(dc, w_ch_t, out=dq_t[t])
        torch.mul(pair_t[t], coef_t[t], out=d_gate_t[t])
        # dh_{t-1} = dh_t (1 - z_t) + dq_t r_t + d_gates_t @ W_gh^T
        dh = torch.addcmul(dh, dh, z_t[t], value=-1.0).addcmul_(dq, reset_t[t])
        dh.addmm_(d_gate_t[t], w_gh_t)
    return dh


def agru_scan(cell, inputs, att_scores, init_state, mask):
    """Fast :func:`dynamic_rnn_with_attention` on validated inputs (see there)."""
    batch, steps, dim = inputs.shape
    w_gx, w_gh, w_cx, w_ch = cell.split_kernels()
    flat = inputs.transpose(0, 1).reshape(steps * batch, dim)
    # One matmul projects all steps' inputs for both the gates and the candidate.
    kernel = torch.cat([w_gx, w_cx], dim=1)
    bias = torch.cat([cell.gates_bias, cell.candidate_bias])
    xp = torch.addmm(bias, flat, kernel).view(steps, batch, 3 * cell.units)
    mode = "none" if att_scores is None else cell.att_type
    act = fused_activation_name(cell.activation)
    args = (xp, w_gh, w_ch, init_state, att_scores)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        outputs, final = _AGRUScan.apply(*args, mask, mode, act)
    else:  # inference: nothing to keep for a backward
        a, m = _time_major(att_scores, mask, xp.dtype)
        states = _scan_forward(xp, w_gh, w_ch, init_state, a, m, mode, act, False)[0]
        outputs, final = _outputs(states, m)
    return outputs.transpose(0, 1), final
