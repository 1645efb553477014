"""The Keras-GRU recurrence (``reset_after=True``) over real steps only: the
packed layout of :mod:`monolith_layers._packing`, with a hand-written
backward that keeps only the states.

Notation (one step, the n rows alive; ``gi`` = input projection with ``bias[0]``)::

    gh_t = h_{t-1} @ W_r + b_r                       (n, 3U)
    z_t, r_t = sigmoid(gi_zr_t + gh_zr_t)
    hh_t = act(gi_h_t + r_t * gh_h_t)
    h_t  = z_t * h_{t-1} + (1 - z_t) * hh_t

Only real steps are packed, so no mask appears inside the recurrence.

Memory: the forward saves the states alone (the packed inputs are saved
too, but the caller holds the inputs anyway). The backward walks time chunks
from the last: per chunk it recomputes the gates in bulk from the saved
states (two large matmuls), runs the per-step loop carrying only dL/dh, and
turns the chunk's gate gradients into input and weight gradients in bulk;
every work buffer is chunk-sized, so it stays in cache and is reused.

The backward, derived (``g_h`` = dL/dh_t from the later steps and the outputs)::

    dL/dhpre_t   = g_h (1 - z_t) act'(hh_t)               -> d gi_h_t
    dL/dzpre_t   = g_h (h_{t-1} - hh_t) z_t (1 - z_t)      -> d gi_z_t = d gh_z_t
    dL/drpre_t   = dL/dhpre_t gh_h_t r_t (1 - r_t)         -> d gi_r_t = d gh_r_t
    dL/dgh_h_t   = dL/dhpre_t r_t
    dL/dh_{t-1}  = g_h z_t + dL/dgh_t @ W_r^T
    dW_r = sum_t h_{t-1}^T dL/dgh_t;  db_r = sum_t dL/dgh_t

The per-step gradient is kept as ``[dhpre | dz | dr | dgh_h]`` (4U wide):
``dL/dgh_t`` is then a view, and two broadcast multiplies fill all four.
"""

from __future__ import annotations

import torch

from . import _native
from ._fused import activate_, derivative_from_output, pre_scale, refuse_double_backward
from ._packing import Packing


def _project(x, kernel, b_in, act: str):
    """Input projections (rows, 3U) with the candidate's part pre-scaled."""
    gi = torch.addmm(b_in, x, kernel)
    k = pre_scale(act)
    if k != 1.0:
        gi[:, 2 * kernel.shape[1] // 3 :].mul_(k)
    return gi


def _forward(x, kernel, b_in, w_r, b_r, h0, packing: Packing, act: str) -> torch.Tensor:
    """States buffer (B + N, U): the initial states, then every real step's state."""
    batch, units = h0.shape
    k = pre_scale(act)
    states = x.new_empty(batch + packing.total, units)
    states[:batch] = h0
    widest = packing.sizes[0] if packing.sizes else 0
    native = _native.usable(x, kernel, b_in, w_r, b_r, h0)
    if native is None:  # the Python loop's per-step buffers
        gh, zr, hh = (packing.prefixes(x.new_empty(widest, w * units)) for w in (3, 2, 1))
    for t0, t1 in packing.chunks(3 * units, native is not None):
        r0, r1 = packing.offsets[t0], packing.offsets[t1]
        if native is not None:  # its activations need no pre-scaling
            gi = torch.addmm(b_in, x[r0:r1], kernel)
            plan = packing.forward_plan(t0, t1)
            native.gru_packed_forward(gi, w_r, b_r, states, plan, _native.ACTIVATIONS[act])
            continue
        gi = _project(x[r0:r1], kernel, b_in, act)
        gi_zr = packing.steps_of(gi[:, : 2 * units], t0, t1)
        gi_h = packing.steps_of(gi[:, 2 * units :], t0, t1)
        new = packing.steps_of(states[batch + r0 : batch + r1], t0, t1)
        for i, t in enumerate(range(t0, t1)):
            n, base = packing.sizes[t], packing.prev_base(t)
            prev, gh_t = states[base : base + n], gh[n]
            torch.addmm(b_r, prev, w_r, out=gh_t)
            zr_t = torch.add(gi_zr[i], gh_t[:, : 2 * units], out=zr[n]).sigmoid_()
            pre = torch.addcmul(gi_h[i], zr_t[:, units:], gh_t[:, 2 * units :], value=k, out=hh[n])
            # h = z h + (1 - z) hh, as hh + z (h - hh): one fused operation
            # (the dense scan keeps Keras's order for bit-level parity).
            torch.lerp(activate_(pre, act), prev, zr_t[:, :units], out=new[i])
    return states


def _chunk_factors(x, kernel, b_in, prev, w_r, b_r, act: str):
    """For a chunk: ``(z, c1, c2)``, every factor of the backward that does not
    depend on the incoming gradient: c1 = [dhpre/dh | dzpre/dh], c2 = [drpre/dhpre | r]."""
    units = prev.shape[1]
    gi = _project(x, kernel, b_in, act)
    gh = torch.addmm(b_r, prev, w_r)
    zr = gi[:, : 2 * units].add_(gh[:, : 2 * units]).sigmoid_()
    hh = activate_(
        gi[:, 2 * units :].addcmul_(zr[:, units:], gh[:, 2 * units :], value=pre_scale(act)), act
    )
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


class _GRUPacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, b_in, w_r, b_r, h0, packing: Packing, act: str):
        # x (N, D) packed inputs; h0 (B, U) in sorted row order. -> states (B + N, U).
        states = _forward(x, kernel, b_in, w_r, b_r, h0, packing, act)
        ctx.save_for_backward(x, kernel, b_in, w_r, b_r, states)
        ctx.packing, ctx.act = packing, act
        return states

    @staticmethod
    def backward(ctx, d_states):
        refuse_double_backward("gru_sequence")
        x, kernel, b_in, w_r, b_r, states = ctx.saved_tensors
        packing = ctx.packing
        batch, units = packing.batch, w_r.shape[0]
        dh_all = d_states.new_zeros(batch, units)  # dL/d(latest state) of every sorted row
        dh = packing.prefixes(dh_all)
        d_x = x.new_empty(x.shape) if ctx.needs_input_grad[0] else None
        d_kernel, d_b_in = torch.zeros_like(kernel), torch.zeros_like(b_in)
        d_w_r, d_b_r = torch.zeros_like(w_r), torch.zeros_like(b_r)
        native = _native.usable(x, kernel, w_r, d_states)
        for t0, t1 in reversed(packing.chunks(4 * units, native is not None)):
            r0, r1 = packing.offsets[t0], packing.offsets[t1]
            prev = packing.prev_states(states, t0, t1)
            z, c1, c2 = _chunk_factors(x[r0:r1], kernel, b_in, prev, w_r, b_r, ctx.act)
            # Per step, as (n, k, U) views: grads = [dhpre | dz | dr | dgh_h].
            grads = z.new_empty(r1 - r0, 4, units)
            d_out = d_states[batch + r0 : batch + r1]
            if native is not None:
                plan = packing.backward_plan(t0, t1)
                flat = grads.view(-1, 4 * units)
                native.gru_packed_backward(d_out.contiguous(), z, c1, c2, flat, dh_all, w_r, plan)
            else:
                _backward_steps(packing, t0, t1, d_out, z, c1, c2, grads, dh, w_r)
            grads = grads.view(-1, 4 * units)
            d_gi = torch.cat([grads[:, units : 3 * units], grads[:, :units]], dim=1)  # z, r, h
            if d_x is not None:
                torch.mm(d_gi, kernel.t(), out=d_x[r0:r1])
            d_kernel.addmm_(x[r0:r1].t(), d_gi)
            d_b_in.add_(d_gi.sum(0))
            d_gh = grads[:, units:]
            d_w_r.addmm_(prev.t(), d_gh)
            d_b_r.add_(d_gh.sum(0))
        d_h0 = dh_all.add_(d_states[:batch])
        return d_x, d_kernel, d_b_in, d_w_r, d_b_r, d_h0, None, None


def _backward_steps(packing, t0, t1, d_out, z, c1, c2, grads, dh, w_r):
    """The backward's per-step loop over a chunk, in Python (the native one's twin)."""
    units = w_r.shape[0]
    w_r_t = w_r.t()
    views = [
        packing.steps_of(t, t0, t1)
        for t in (
            d_out,
            z,
            c1.view(-1, 2, units),
            c2.view(-1, 2, units),
            grads[:, :2],
            grads[:, :1],
            grads[:, 2:],
            grads[:, 1:].reshape(-1, 3 * units),
        )
    ]
    for i in range(t1 - t0 - 1, -1, -1):
        d_out_t, z_t, c1_t, c2_t, g_h_z, g_h, g_r_gh, d_gh = (v[i] for v in views)
        dh_n = dh[d_out_t.shape[0]]
        dh_n.add_(d_out_t)
        torch.mul(dh_n.unsqueeze(1), c1_t, out=g_h_z)
        torch.mul(g_h, c2_t, out=g_r_gh)
        torch.addmm(dh_n * z_t, d_gh, w_r_t, out=dh_n)


def gru_packed(cell, inputs, init_state, packing: Packing, act: str):
    """:func:`monolith_layers.gru.gru_sequence` over the real steps of validated inputs.

    Returns ``(outputs (B, T, U), final_state (B, U))``; padded steps output zeros.
    """
    x = packing.pack(inputs)
    h0 = packing.sort_rows(init_state)
    args = (x, cell.kernel, cell.bias[0], cell.recurrent_kernel, cell.bias[1], h0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        states = _GRUPacked.apply(*args, packing, act)
    else:  # inference: nothing is kept for a backward
        states = _forward(*args, packing, act)
    return packing.unpack(states[packing.batch :]), packing.final_states(states)
