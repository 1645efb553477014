"""The fast Keras-GRU recurrence (``reset_after=True``) with a hand-written
backward through time; same construction as :mod:`monolith_layers._agru_scan`.

Notation (time-major; ``gi`` = input projections with ``bias[0]``, hoisted)::

    gh_t = h_{t-1} @ W_r + b_r                       (B, 3U)
    z_t, r_t = sigmoid(gi_zr_t + gh_zr_t)
    hh_t = act(gi_h_t + r_t * gh_h_t)
    h_t  = w_t * h_{t-1} + (1 - w_t) * hh_t
    w_t  = z_t                 without a mask
    w_t  = z_t m_t + 1 - m_t   with one (a padded step keeps h)

Padded inputs arrive as zeros (the callers select them away), so every
intermediate is finite and ``m_t = 0`` gives ``w_t = 1`` exactly.

The backward, derived (``g_h`` = dL/dh_t from the later steps and ``outputs[t]``)::

    dL/dhh_t     = g_h (1 - w_t)
    dL/dhpre_t   = g_h (1 - w_t) act'(hh_t)               -> d gi_h_t
    dL/dz_t      = g_h m_t (h_{t-1} - hh_t)
    dL/dzpre_t   = dL/dz_t z_t (1 - z_t)                   -> d gi_z_t = d gh_z_t
    dL/dr_t      = dL/dhpre_t * gh_h_t
    dL/drpre_t   = dL/dr_t r_t (1 - r_t)                    -> d gi_r_t = d gh_r_t
    dL/dgh_h_t   = dL/dhpre_t * r_t
    dL/dh_{t-1}  = g_h w_t + dL/dgh_t @ W_r^T
    dW_r = sum_t h_{t-1}^T dL/dgh_t;  db_r = sum_t dL/dgh_t

Only ``g_h`` is carried through the loop; every factor that does not depend
on it is computed for all steps at once.
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


def _scan_forward(gi, w_r, b_r, h0, m, act: str, history: bool):
    """The forward loop. Returns ``(states, gh, zr, hh, carry)``.

    ``history=True`` keeps every step's intermediates for the backward;
    ``history=False`` (inference) reuses one step's worth of scratch instead.
    """
    steps, batch, units = gi.shape[0], gi.shape[1], gi.shape[2] // 3
    kept = steps if history else 1
    states = gi.new_empty(steps + 1, batch, units)
    states[0] = h0
    gh = gi.new_empty(kept, batch, 3 * units)
    zr = gi.new_empty(kept, batch, 2 * units)
    hh = gi.new_empty(kept, batch, units)
    carry = None if m is None else gi.new_empty(kept, batch, units)
    native = _native.usable(gi, w_r, b_r, h0)
    if native is not None:
        code = _native.ACTIVATIONS[act]
        native.gru_forward(gi, w_r, b_r, states, gh, zr, hh, carry, m, code, history)
        return states, gh, zr, hh, carry
    k = pre_scale(act)
    gi_h = gi[..., 2 * units :] * k if k != 1.0 else gi[..., 2 * units :]

    def per_step(buffer):
        # Per-step views, made once: indexing a Python list costs nothing.
        return buffer.unbind(0) if history else [buffer[0]] * steps

    state_t, gh_t, zr_t, hh_t = states.unbind(0), per_step(gh), per_step(zr), per_step(hh)
    gi_zr_t, gi_h_t = gi[..., : 2 * units].unbind(0), gi_h.unbind(0)
    gh_zr_t, gh_h_t = per_step(gh[..., : 2 * units]), per_step(gh[..., 2 * units :])
    z_t, r_t = per_step(zr[..., :units]), per_step(zr[..., units:])
    if m is not None:
        m_t, carry_t, pad_t = m.unbind(0), per_step(carry), (1.0 - m).unbind(0)
    for t in range(steps):
        h = state_t[t]
        torch.addmm(b_r, h, w_r, out=gh_t[t])
        torch.add(gi_zr_t[t], gh_zr_t[t], out=zr_t[t]).sigmoid_()
        cand = activate_(torch.addcmul(gi_h_t[t], r_t[t], gh_h_t[t], value=k, out=hh_t[t]), act)
        w = z_t[t] if m is None else torch.addcmul(pad_t[t], z_t[t], m_t[t], out=carry_t[t])
        # Keras's order, z * h + (1 - z) * hh, so float32 rounding matches.
        torch.mul(w, h, out=state_t[t + 1]).add_((1.0 - w) * cand)
    return states, gh, zr, hh, carry


def _time_major_mask(mask, dtype):
    return None if mask is None else mask.t().unsqueeze(-1).to(dtype)  # (T, B, 1)


def _outputs(states, m):
    outputs = states[1:] if m is None else torch.where(m.bool(), states[1:], 0.0)
    return outputs, states[-1].clone()


class _GRUScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi, w_r, b_r, h0, mask, act: str):
        m = _time_major_mask(mask, gi.dtype)
        states, gh, zr, hh, carry = _scan_forward(gi, w_r, b_r, h0, m, act, True)
        # An unused output (DIEN reads only one of the two) then arrives in
        # backward as None instead of a tensor of zeros to add in every step.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(w_r, states, gh, zr, hh, carry, m)
        ctx.act = act
        return _outputs(states, m)

    @staticmethod
    def backward(ctx, d_outputs, d_final):
        refuse_double_backward("gru_sequence")
        w_r, states, gh, zr, hh, carry, m = ctx.saved_tensors
        steps, batch, units = hh.shape
        prev = states[:-1]
        z, r = zr[..., :units], zr[..., units:]
        if carry is None:
            carry = z
        # Factors independent of the incoming gradient, for all steps at once.
        slopes = torch.sub(1.0, zr).mul_(zr)  # sigmoid' of z and r
        z_coef = slopes[..., :units].mul_(prev - hh)  # d h_t / d z-pre
        if m is not None:
            z_coef.mul_(m)
        r_coef = slopes[..., units:].mul_(gh[..., 2 * units :])  # d r-pre / d h-pre
        h_coef = torch.sub(1.0, carry)  # d h_t / d h-pre, times act'
        act_slope = derivative_from_output(hh, ctx.act)
        if act_slope is not None:
            h_coef.mul_(act_slope)
        if d_outputs is not None and m is not None:
            d_outputs = torch.where(m.bool(), d_outputs, 0.0)  # select: a nan there stays out

        d_gh = hh.new_empty(steps, batch, 3 * units)
        d_gi = hh.new_empty(steps, batch, 3 * units)
        dh = d_final if d_final is not None else hh.new_zeros(batch, units)
        native = _native.usable(hh, dh, d_outputs)
        if native is not None:
            if d_outputs is not None:
                d_outputs = d_outputs.contiguous()  # e.g. the expanded gradient of a sum
            coefs = (h_coef, z_coef, r_coef, zr, carry, w_r)
            dh = native.gru_backward(d_outputs, dh, *coefs, d_gh, d_gi)
            return _gru_grads(d_gh, d_gi, prev, dh)
        w_r_t = w_r.t()
        d_out_t = None if d_outputs is None else d_outputs.unbind(0)
        d_gh_t, d_h_pre_t = d_gh.unbind(0), d_gi[..., 2 * units :].unbind(0)
        d_z_t = d_gh[..., :units].unbind(0)
        d_r_t, d_ghh_t = d_gh[..., units : 2 * units].unbind(0), d_gh[..., 2 * units :].unbind(0)
        z_coef_t, r_coef_t, h_coef_t = z_coef.unbind(0), r_coef.unbind(0), h_coef.unbind(0)
        carry_t, r_t = carry.unbind(0), r.unbind(0)
        for t in range(steps - 1, -1, -1):
            if d_out_t is not None:
                dh = dh + d_out_t[t]
            d_h_pre = torch.mul(dh, h_coef_t[t], out=d_h_pre_t[t])
            torch.mul(dh, z_coef_t[t], out=d_z_t[t])
            torch.mul(d_h_pre, r_coef_t[t], out=d_r_t[t])
            torch.mul(d_h_pre, r_t[t], out=d_ghh_t[t])
            dh = torch.mul(dh, carry_t[t]).addmm_(d_gh_t[t], w_r_t)
        return _gru_grads(d_gh, d_gi, prev, dh)


def _gru_grads(d_gh, d_gi, prev, dh):
    """The backward's results once the loop has filled d_gh and d_gi's candidate part."""
    steps, batch, units = prev.shape
    d_gi[..., : 2 * units] = d_gh[..., : 2 * units]  # z and r pre-activations add gi + gh
    flat = steps * batch
    d_w_r = prev.reshape(flat, units).t() @ d_gh.reshape(flat, 3 * units)
    d_b_r = d_gh.sum(dim=(0, 1))
    return d_gi, d_w_r, d_b_r, dh, None, None


def gru_scan(cell, inputs, init_state, mask):
    """Fast :func:`monolith_layers.gru.gru_sequence` on validated inputs."""
    batch, steps, dim = inputs.shape
    flat = inputs.transpose(0, 1).reshape(steps * batch, dim)
    gi = torch.addmm(cell.bias[0], flat, cell.kernel).view(steps, batch, 3 * cell.units)
    act = fused_activation_name(cell.activation)
    args = (gi, cell.recurrent_kernel, cell.bias[1], init_state)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        outputs, final = _GRUScan.apply(*args, mask, act)
    else:  # inference: nothing to keep for a backward
        m = _time_major_mask(mask, gi.dtype)
        outputs, final = _outputs(_scan_forward(*args, m, act, False)[0], m)
    return outputs.transpose(0, 1), final
