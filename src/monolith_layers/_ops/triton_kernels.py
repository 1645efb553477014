"""The Triton kernels: the recurrences' time loops and DIN's pooling.

Imported only when a Triton path runs (:mod:`.gpu`), because ``@triton.jit``
decides at import time whether it compiles for the GPU or runs in Triton's
interpreter (``TRITON_INTERPRET=1``, which runs the same kernels on CPU
tensors; that is how they are tested on machines without a GPU).

The recurrences: one program owns a block of ``BLOCK_B`` batch rows and runs
the whole time loop for them, the recurrent weights loaded once and kept on
chip as (U, U) tiles (``BLOCK_U`` = U rounded up to a power of two, at
least 16 for ``tl.dot``). The input projections (one GEMM over every step)
arrive precomputed. A block stops at its longest row's last real step; a
padded step inside a row keeps that row's state (``tl.where``), so holes in
a mask are handled as the C++ kernels handle them. Outputs are written at
real steps only: the callers pass zero-filled buffers. The backward kernels
walk the same steps in reverse, carrying dL/dh, and write the gates'
pre-activation gradients per step; the callers turn those into input and
weight gradients with GEMMs. Matrix products use IEEE float32 (no TF32),
so results match the C++ kernels and the reference to float rounding.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Activation codes shared with the C++ kernels (build.ACTIVATIONS).
TANH, SIGMOID, RELU, LINEAR = 0, 1, 2, 3
# Update rules (build.MODES): z = u, z = a, z = 1 - (1 - a) u.
NO_SCORE, AGRU, AUGRU = 0, 1, 2


@triton.jit
def _mm(a, b):
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _activate(x, ACT: tl.constexpr):
    if ACT == 0:
        # tanh from exp: libdevice's tanh has no interpreter implementation.
        y = 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)
    elif ACT == 1:
        y = tl.sigmoid(x)
    elif ACT == 2:
        y = tl.maximum(x, 0.0)
    else:
        y = x
    return y


@triton.jit
def _derivative(y, ACT: tl.constexpr):
    """d act / d x, from the activation's output y."""
    if ACT == 0:
        d = 1.0 - y * y
    elif ACT == 1:
        d = y * (1.0 - y)
    elif ACT == 2:
        d = tl.where(y > 0.0, 1.0, 0.0).to(y.dtype)
    else:
        d = y * 0.0 + 1.0
    return d


@triton.jit
def _tile(ptr, row_stride, col0, units, BLOCK_U: tl.constexpr):
    """The (U, U) block of a (U, row_stride) weight starting at column col0, zero-padded."""
    r = tl.arange(0, BLOCK_U)
    inside = (r[:, None] < units) & (r[None, :] < units)
    return tl.load(ptr + r[:, None] * row_stride + col0 + r[None, :], mask=inside, other=0.0)


@triton.jit
def _gru_tiles(w, U, BLOCK_U: tl.constexpr):
    """The Keras GRU's recurrent kernel (U, 3U) as its z, r and h tiles."""
    return (
        _tile(w, 3 * U, 0, U, BLOCK_U),
        _tile(w, 3 * U, U, U, BLOCK_U),
        _tile(w, 3 * U, 2 * U, U, BLOCK_U),
    )


@triton.jit
def _agru_tiles(w_g, w_c, U, BLOCK_U: tl.constexpr):
    """The attention GRU's state rows: reset and update tiles of w_g (U, 2U), and w_c (U, U)."""
    return (
        _tile(w_g, 2 * U, 0, U, BLOCK_U),
        _tile(w_g, 2 * U, U, U, BLOCK_U),
        _tile(w_c, U, 0, U, BLOCK_U),
    )


@triton.jit
def _step(ptr, rows, t, steps, width, col0, cols, inside):
    """Columns col0 .. col0 + U of step t of a (B, T, width) tensor, for a block of rows."""
    offsets = (rows[:, None] * steps + t) * width + col0 + cols[None, :]
    return tl.load(ptr + offsets, mask=inside, other=0.0)


@triton.jit
def _put(ptr, value, rows, t, steps, width, col0, cols, inside):
    offsets = (rows[:, None] * steps + t) * width + col0 + cols[None, :]
    tl.store(ptr + offsets, value, mask=inside)


@triton.jit
def _alive(mask, rows, t, steps, length, in_rows, HAS_MASK: tl.constexpr):
    """Which rows of the block have a real step t: before their last real step,
    and (with a mask) not a hole."""
    alive = in_rows & (t < length)
    if HAS_MASK:
        alive = alive & (tl.load(mask + rows * steps + t, mask=in_rows, other=0) != 0)
    return alive


@triton.jit
def _backward_start(
    d_final, lengths, rows, cols, in_rows, inside, U,
    HAS_D_FINAL: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
):  # fmt: skip
    """dL/d(final state) of the block's rows (zeros without one: d_final then only
    gives the dtype), each row's length, and the block's longest."""
    if HAS_D_FINAL:
        dh = tl.load(d_final + rows[:, None] * U + cols[None, :], mask=inside, other=0.0)
    else:
        dh = tl.zeros([BLOCK_B, BLOCK_U], dtype=d_final.dtype.element_ty)
    length = tl.load(lengths + rows, mask=in_rows, other=0)
    return dh, length, tl.max(length, axis=0)


@triton.jit
def _backward_step(
    d_out, h_prev, dh, mask, rows, cols, t, T, U, length, in_rows, inside,
    HAS_D_OUT: tl.constexpr, HAS_MASK: tl.constexpr,
):  # fmt: skip
    """Step t of a backward loop: which rows are alive, where they are, dL/dh with
    the step's output gradient added, and the state the step started from."""
    alive = _alive(mask, rows, t, T, length, in_rows, HAS_MASK)
    here = inside & alive[:, None]
    if HAS_D_OUT:
        dh += _step(d_out, rows, t, T, U, 0, cols, here)
    return alive, here, dh, _step(h_prev, rows, t, T, U, 0, cols, inside)


@triton.jit
def _block(B, U, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_U)
    in_rows = rows < B
    inside = in_rows[:, None] & (cols[None, :] < U)
    return rows.to(tl.int64), cols, in_rows, inside


# -- Keras GRU (reset_after=True); gates in the order z, r, h --


@triton.jit
def gru_forward_kernel(
    gi, mask, lengths, h0, w, b, out, final,
    B, T, U,
    HAS_MASK: tl.constexpr, ACT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
):  # fmt: skip
    """gi (B, T, 3U) = x @ kernel + bias[0]; w (U, 3U) the recurrent kernel, b (3U) bias[1]."""
    rows, cols, in_rows, inside = _block(B, U, BLOCK_B, BLOCK_U)
    w_z, w_r, w_h = _gru_tiles(w, U, BLOCK_U)
    real_cols = cols < U
    b_z = tl.load(b + cols, mask=real_cols, other=0.0)[None, :]
    b_r = tl.load(b + U + cols, mask=real_cols, other=0.0)[None, :]
    b_h = tl.load(b + 2 * U + cols, mask=real_cols, other=0.0)[None, :]
    h = tl.load(h0 + rows[:, None] * U + cols[None, :], mask=inside, other=0.0)
    length = tl.load(lengths + rows, mask=in_rows, other=0)
    for t in range(0, tl.max(length, axis=0)):
        alive = _alive(mask, rows, t, T, length, in_rows, HAS_MASK)
        z = tl.sigmoid(_step(gi, rows, t, T, 3 * U, 0, cols, inside) + _mm(h, w_z) + b_z)
        r = tl.sigmoid(_step(gi, rows, t, T, 3 * U, U, cols, inside) + _mm(h, w_r) + b_r)
        hh = _activate(
            _step(gi, rows, t, T, 3 * U, 2 * U, cols, inside) + r * (_mm(h, w_h) + b_h), ACT
        )
        h = tl.where(alive[:, None], z * h + (1.0 - z) * hh, h)
        _put(out, h, rows, t, T, U, 0, cols, inside & alive[:, None])
    tl.store(final + rows[:, None] * U + cols[None, :], h, mask=inside)


@triton.jit
def gru_backward_kernel(
    d_out, d_final, gi, h_prev, mask, lengths, w, b, d_gi, d_gh_h, d_h0,
    B, T, U,
    HAS_D_OUT: tl.constexpr, HAS_D_FINAL: tl.constexpr, HAS_MASK: tl.constexpr,
    ACT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
):  # fmt: skip
    """Writes d_gi (B, T, 3U) (the z, r, h pre-activation gradients; also d gh
    for z and r), d_gh_h (B, T, U) (d of h_prev @ W_h + b_h) and d_h0 (B, U).
    h_prev (B, T, U) is each step's incoming state."""
    rows, cols, in_rows, inside = _block(B, U, BLOCK_B, BLOCK_U)
    w_z, w_r, w_h = _gru_tiles(w, U, BLOCK_U)
    w_z_t, w_r_t, w_h_t = tl.trans(w_z), tl.trans(w_r), tl.trans(w_h)
    real_cols = cols < U
    b_z = tl.load(b + cols, mask=real_cols, other=0.0)[None, :]
    b_r = tl.load(b + U + cols, mask=real_cols, other=0.0)[None, :]
    b_h = tl.load(b + 2 * U + cols, mask=real_cols, other=0.0)[None, :]
    dh, length, last = _backward_start(
        d_final, lengths, rows, cols, in_rows, inside, U, HAS_D_FINAL, BLOCK_B, BLOCK_U
    )
    for i in range(0, last):
        t = last - 1 - i
        alive, here, dh, hp = _backward_step(d_out, h_prev, dh, mask, rows, cols, t, T, U,
                                             length, in_rows, inside, HAS_D_OUT, HAS_MASK)  # fmt: skip
        z = tl.sigmoid(_step(gi, rows, t, T, 3 * U, 0, cols, inside) + _mm(hp, w_z) + b_z)
        r = tl.sigmoid(_step(gi, rows, t, T, 3 * U, U, cols, inside) + _mm(hp, w_r) + b_r)
        gh_h = _mm(hp, w_h) + b_h
        hh = _activate(_step(gi, rows, t, T, 3 * U, 2 * U, cols, inside) + r * gh_h, ACT)
        d_h_pre = dh * (1.0 - z) * _derivative(hh, ACT)
        d_z_pre = dh * (hp - hh) * z * (1.0 - z)
        d_r_pre = d_h_pre * gh_h * r * (1.0 - r)
        d_gh = d_h_pre * r
        d_prev = dh * z + _mm(d_z_pre, w_z_t) + _mm(d_r_pre, w_r_t) + _mm(d_gh, w_h_t)
        _put(d_gi, d_z_pre, rows, t, T, 3 * U, 0, cols, here)
        _put(d_gi, d_r_pre, rows, t, T, 3 * U, U, cols, here)
        _put(d_gi, d_h_pre, rows, t, T, 3 * U, 2 * U, cols, here)
        _put(d_gh_h, d_gh, rows, t, T, U, 0, cols, here)
        dh = tl.where(alive[:, None], d_prev, dh)
    tl.store(d_h0 + rows[:, None] * U + cols[None, :], dh, mask=inside)


# -- the attention GRU (AGRU / AUGRU / plain update) --


@triton.jit
def _update_weight(u, a, MODE: tl.constexpr):
    """z of h' = h + z (c - h); a is (BLOCK_B, 1)."""
    if MODE == 0:
        z = u
    elif MODE == 1:
        z = a + u * 0.0
    else:
        z = 1.0 - (1.0 - a) * u
    return z


@triton.jit
def _scores(att, rows, t, T, in_rows, MODE: tl.constexpr, BLOCK_B: tl.constexpr):
    if MODE == 0:
        a = tl.zeros([BLOCK_B, 1], dtype=tl.float32)
    else:
        a = tl.load(att + rows * T + t, mask=in_rows, other=0.0)[:, None]
    return a


@triton.jit
def agru_forward_kernel(
    xg, xc, att, mask, lengths, h0, w_g, w_c, out, final,
    B, T, U,
    MODE: tl.constexpr, HAS_MASK: tl.constexpr, ACT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
):  # fmt: skip
    """xg (B, T, 2U) = x @ W_gx + b_g, xc (B, T, U) = x @ W_cx + b_c, att (B, T);
    w_g (U, 2U) the gates' state rows (reset, update), w_c (U, U) the candidate's."""
    rows, cols, in_rows, inside = _block(B, U, BLOCK_B, BLOCK_U)
    w_r, w_u, w_ch = _agru_tiles(w_g, w_c, U, BLOCK_U)
    h = tl.load(h0 + rows[:, None] * U + cols[None, :], mask=inside, other=0.0)
    length = tl.load(lengths + rows, mask=in_rows, other=0)
    for t in range(0, tl.max(length, axis=0)):
        alive = _alive(mask, rows, t, T, length, in_rows, HAS_MASK)
        r = tl.sigmoid(_step(xg, rows, t, T, 2 * U, 0, cols, inside) + _mm(h, w_r))
        u = tl.sigmoid(_step(xg, rows, t, T, 2 * U, U, cols, inside) + _mm(h, w_u))
        c = _activate(_step(xc, rows, t, T, U, 0, cols, inside) + _mm(r * h, w_ch), ACT)
        z = _update_weight(u, _scores(att, rows, t, T, in_rows, MODE, BLOCK_B).to(u.dtype), MODE)
        h = tl.where(alive[:, None], h + z * (c - h), h)
        _put(out, h, rows, t, T, U, 0, cols, inside & alive[:, None])
    tl.store(final + rows[:, None] * U + cols[None, :], h, mask=inside)


@triton.jit
def agru_backward_kernel(
    d_out, d_final, xg, xc, att, h_prev, mask, lengths, w_g, w_c,
    d_gates, d_cand, q_out, d_att, d_h0,
    B, T, U,
    HAS_D_OUT: tl.constexpr, HAS_D_FINAL: tl.constexpr, MODE: tl.constexpr,
    HAS_MASK: tl.constexpr, ACT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_U: tl.constexpr,
):  # fmt: skip
    """Writes d_gates (B, T, 2U) (reset and update pre-activations), d_cand (B, T, U)
    (candidate pre-activation), q_out (B, T, U) (r * h_prev, the candidate's state
    input), d_att (B, T) and d_h0 (B, U)."""
    rows, cols, in_rows, inside = _block(B, U, BLOCK_B, BLOCK_U)
    w_r, w_u, w_ch = _agru_tiles(w_g, w_c, U, BLOCK_U)
    w_r_t, w_u_t, w_ch_t = tl.trans(w_r), tl.trans(w_u), tl.trans(w_ch)
    dh, length, last = _backward_start(
        d_final, lengths, rows, cols, in_rows, inside, U, HAS_D_FINAL, BLOCK_B, BLOCK_U
    )
    for i in range(0, last):
        t = last - 1 - i
        alive, here, dh, hp = _backward_step(d_out, h_prev, dh, mask, rows, cols, t, T, U,
                                             length, in_rows, inside, HAS_D_OUT, HAS_MASK)  # fmt: skip
        r = tl.sigmoid(_step(xg, rows, t, T, 2 * U, 0, cols, inside) + _mm(hp, w_r))
        u = tl.sigmoid(_step(xg, rows, t, T, 2 * U, U, cols, inside) + _mm(hp, w_u))
        q = r * hp
        c = _activate(_step(xc, rows, t, T, U, 0, cols, inside) + _mm(q, w_ch), ACT)
        a = _scores(att, rows, t, T, in_rows, MODE, BLOCK_B).to(u.dtype)
        z = _update_weight(u, a, MODE)
        d_c = dh * z * _derivative(c, ACT)
        d_q = _mm(d_c, w_ch_t)
        d_r = d_q * hp * r * (1.0 - r)
        if MODE == 0:
            d_u = dh * (c - hp) * u * (1.0 - u)
        elif MODE == 1:
            d_u = d_r * 0.0
        else:
            d_u = dh * (c - hp) * (a - 1.0) * u * (1.0 - u)
        if MODE == 1:
            tl.store(d_att + rows * T + t, tl.sum(dh * (c - hp), axis=1), mask=alive)
        elif MODE == 2:
            tl.store(d_att + rows * T + t, tl.sum(dh * (c - hp) * u, axis=1), mask=alive)
        d_prev = dh * (1.0 - z) + d_q * r + _mm(d_r, w_r_t) + _mm(d_u, w_u_t)
        _put(d_gates, d_r, rows, t, T, 2 * U, 0, cols, here)
        _put(d_gates, d_u, rows, t, T, 2 * U, U, cols, here)
        _put(d_cand, d_c, rows, t, T, U, 0, cols, here)
        _put(q_out, q, rows, t, T, U, 0, cols, here)
        dh = tl.where(alive[:, None], d_prev, dh)
    tl.store(d_h0 + rows[:, None] * U + cols[None, :], dh, mask=inside)


# -- DIN's pooling: one program per batch row, the row's real keys only --


@triton.jit
def _keys_tile(
    keys, mask, b, t0, T, H, HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr
):
    """Steps t0 .. t0 + BLOCK_T of row b: positions, which are real, the keys
    there (zero where not real: a padded key is never read) and their offsets."""
    t = t0 + tl.arange(0, BLOCK_T)
    h = tl.arange(0, BLOCK_H)
    real = t < T
    if HAS_MASK:
        real = real & (tl.load(mask + b * T + t, mask=t < T, other=0) != 0)
    offsets = (b * T + t)[:, None] * H + h[None, :]
    k = tl.load(keys + offsets, mask=real[:, None] & (h[None, :] < H), other=0.0)
    return t, real, k, offsets


@triton.jit
def din_pool_forward_kernel(
    keys, weights, mask, out,
    T, H,
    SUM: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """out (B, H) = sum_t w_t k_t ('sum'), else (B, T, H) = k_t w_t (zero at padding)."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_H], dtype=keys.dtype.element_ty)
    for t0 in range(0, T, BLOCK_T):
        t, real, k, offsets = _keys_tile(keys, mask, b, t0, T, H, HAS_MASK, BLOCK_T, BLOCK_H)
        w = tl.load(weights + b * T + t, mask=real, other=0.0)
        if SUM:
            acc += tl.sum(k * w[:, None], axis=0)
        else:
            tl.store(out + offsets, k * w[:, None], mask=(t < T)[:, None] & (h[None, :] < H))
    if SUM:
        tl.store(out + b * H + h, acc, mask=h < H)


@triton.jit
def din_pool_backward_kernel(
    d_out, keys, weights, mask, d_keys, d_weights,
    T, H,
    SUM: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """d_keys (B, T, H) = w_t g_t and d_weights (B, T) = <g_t, k_t> at real
    positions, zero at padding (g_t = d_out[b] for 'sum', d_out[b, t] else)."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    if SUM:
        g_row = tl.load(d_out + b * H + h, mask=h < H, other=0.0)[None, :]
    for t0 in range(0, T, BLOCK_T):
        t, real, k, offsets = _keys_tile(keys, mask, b, t0, T, H, HAS_MASK, BLOCK_T, BLOCK_H)
        w = tl.load(weights + b * T + t, mask=real, other=0.0)
        inside = real[:, None] & (h[None, :] < H)
        if SUM:
            g = tl.where(inside, g_row, 0.0)
        else:
            g = tl.load(d_out + offsets, mask=inside, other=0.0)
        tl.store(d_keys + offsets, g * w[:, None], mask=(t < T)[:, None] & (h[None, :] < H))
        tl.store(d_weights + b * T + t, tl.sum(g * k, axis=1), mask=t < T)
