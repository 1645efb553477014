"""The operators' Triton implementations (CUDA tensors; CPU tensors under
``MONOLITH_LAYERS_BACKEND=triton`` with ``TRITON_INTERPRET=1``).

Each function here has the signature and the results of the operator's
C++ implementation in :mod:`.recurrences` / :mod:`.din`, so the autograd
formulas registered there serve both. What runs where:

- **Recurrences.** The input projections are one GEMM over all steps; the
  time loop, forward and backward, is one Triton kernel over blocks of rows
  (:mod:`.triton_kernels`); the weight gradients are GEMMs over the per-step
  gate gradients the backward kernel writes. Each step's incoming state is
  the latest real output before it (or the initial state), gathered from the
  outputs, so the backward keeps nothing beyond the operator's own inputs
  and outputs, as on the CPU.
- **DIN.** The tower runs as GEMMs over the real positions only (packed
  with one ``nonzero``). The pooling, forward and backward, is a
  Triton kernel that never reads a padded key.

Shapes follow the operators: B batch, T steps, D inputs, U units, H width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import triton_kernels as kernels

BLOCK_B = 16  # rows per program; tl.dot wants at least 16 on a GPU


def _block_units(units: int) -> int:
    return max(16, 1 << (units - 1).bit_length())


def _grid(batch: int) -> tuple[int]:
    return ((batch + BLOCK_B - 1) // BLOCK_B,)


def _lengths(mask: Tensor | None, batch: int, steps: int, device) -> Tensor:
    """(B,) int32: one past each row's last real step (T without a mask)."""
    if mask is None:
        return torch.full((batch,), steps, dtype=torch.int32, device=device)
    positions = torch.arange(1, steps + 1, device=device, dtype=torch.int32)
    return (mask * positions).amax(dim=1).to(torch.int32)


def _mask_codes(mask: Tensor | None, lengths: Tensor) -> tuple[Tensor, bool]:
    """The mask as the kernels read it (int8), or a placeholder pointer."""
    if mask is None:
        return lengths, False
    return mask.to(torch.int8).contiguous(), True


def _zero_padded(x: Tensor, mask: Tensor | None) -> Tensor:
    """x with padded steps zeroed, for the weight-gradient GEMMs (a padded step's
    input may be anything, NaN included, and must not reach a weight)."""
    return x if mask is None else torch.where(mask.unsqueeze(-1), x, 0)


def previous_states(outputs: Tensor, init_state: Tensor, mask: Tensor | None) -> Tensor:
    """(B, T, U): the state each step starts from, i.e. the output of the row's
    latest real step before it, or ``init_state`` when there is none."""
    if mask is None:
        return torch.cat([init_state.unsqueeze(1), outputs[:, :-1]], dim=1)
    steps = mask.shape[1]
    positions = torch.arange(steps, device=mask.device)
    latest = torch.where(mask, positions, -1).cummax(dim=1).values
    before = torch.cat([latest.new_full((mask.shape[0], 1), -1), latest[:, :-1]], dim=1)
    index = before.clamp_min(0).unsqueeze(-1).expand(-1, -1, outputs.shape[-1])
    return torch.where((before >= 0).unsqueeze(-1), outputs.gather(1, index), init_state[:, None])


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


# -- Keras GRU --


def gru_forward(inputs, init_state, kernel, recurrent_kernel, bias, mask, act: int):
    batch, steps, _ = inputs.shape
    units = init_state.shape[1]
    gi = (inputs @ kernel + bias[0]).contiguous()
    lengths = _lengths(mask, batch, steps, inputs.device)
    mask_codes, has_mask = _mask_codes(mask, lengths)
    outputs = inputs.new_zeros(batch, steps, units)
    final = torch.empty_like(init_state)
    kernels.gru_forward_kernel[_grid(batch)](
        gi, mask_codes, lengths, init_state.contiguous(), recurrent_kernel.contiguous(),
        bias[1].contiguous(), outputs, final, batch, steps, units,
        HAS_MASK=has_mask, ACT=act, BLOCK_B=BLOCK_B, BLOCK_U=_block_units(units),
    )  # fmt: skip
    return outputs, final


def gru_backward(
    d_outputs, d_final, inputs, init_state, kernel, recurrent_kernel, bias, mask, outputs,
    act: int, need_inputs: bool,
):  # fmt: skip
    batch, steps, _ = inputs.shape
    units = init_state.shape[1]
    gi = (inputs @ kernel + bias[0]).contiguous()
    h_prev = previous_states(outputs, init_state, mask).contiguous()
    lengths = _lengths(mask, batch, steps, inputs.device)
    mask_codes, has_mask = _mask_codes(mask, lengths)
    d_gi = torch.zeros_like(gi)
    d_gh_h = torch.zeros_like(outputs)
    d_init = torch.empty_like(init_state)
    kernels.gru_backward_kernel[_grid(batch)](
        _or(d_outputs, gi), _or(d_final, gi), gi, h_prev, mask_codes, lengths,
        recurrent_kernel.contiguous(), bias[1].contiguous(), d_gi, d_gh_h, d_init,
        batch, steps, units,
        HAS_D_OUT=d_outputs is not None, HAS_D_FINAL=d_final is not None, HAS_MASK=has_mask,
        ACT=act, BLOCK_B=BLOCK_B, BLOCK_U=_block_units(units),
    )  # fmt: skip
    d_gh = torch.cat([d_gi[..., : 2 * units], d_gh_h], dim=-1)
    d_inputs = d_gi @ kernel.T if need_inputs else inputs.new_empty(0)
    d_kernel = _flat(_zero_padded(inputs, mask)).T @ _flat(d_gi)
    d_recurrent = _flat(h_prev).T @ _flat(d_gh)
    d_bias = torch.stack([_flat(d_gi).sum(0), _flat(d_gh).sum(0)])
    return d_inputs, d_init, d_kernel, d_recurrent, d_bias


def _or(tensor: Tensor | None, placeholder: Tensor) -> Tensor:
    """A gradient that may be undefined, as a kernel argument (its HAS_ flag says which)."""
    return placeholder if tensor is None else tensor.contiguous()


# -- attention GRU --


def _agru_projections(inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias):
    dim = inputs.shape[-1]
    xg = (inputs @ gates_kernel[:dim] + gates_bias).contiguous()
    xc = (inputs @ candidate_kernel[:dim] + candidate_bias).contiguous()
    return xg, xc, gates_kernel[dim:].contiguous(), candidate_kernel[dim:].contiguous()


def agru_forward(
    inputs, att_scores, init_state, gates_kernel, gates_bias, candidate_kernel, candidate_bias,
    mask, mode: int, act: int,
):  # fmt: skip
    batch, steps, _ = inputs.shape
    units = init_state.shape[1]
    xg, xc, w_g, w_c = _agru_projections(
        inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias
    )
    lengths = _lengths(mask, batch, steps, inputs.device)
    mask_codes, has_mask = _mask_codes(mask, lengths)
    outputs = inputs.new_zeros(batch, steps, units)
    final = torch.empty_like(init_state)
    kernels.agru_forward_kernel[_grid(batch)](
        xg, xc, _or(att_scores, xg), mask_codes, lengths, init_state.contiguous(), w_g, w_c,
        outputs, final, batch, steps, units,
        MODE=mode, HAS_MASK=has_mask, ACT=act, BLOCK_B=BLOCK_B, BLOCK_U=_block_units(units),
    )  # fmt: skip
    return outputs, final


def agru_backward(
    d_outputs, d_final, inputs, att_scores, init_state, gates_kernel, gates_bias,
    candidate_kernel, candidate_bias, mask, outputs, mode: int, act: int, need_inputs: bool,
):  # fmt: skip
    batch, steps, dim = inputs.shape
    units = init_state.shape[1]
    xg, xc, w_g, w_c = _agru_projections(
        inputs, gates_kernel, gates_bias, candidate_kernel, candidate_bias
    )
    h_prev = previous_states(outputs, init_state, mask).contiguous()
    lengths = _lengths(mask, batch, steps, inputs.device)
    mask_codes, has_mask = _mask_codes(mask, lengths)
    d_gates, d_cand = torch.zeros_like(xg), torch.zeros_like(xc)
    q = torch.zeros_like(xc)
    d_att = inputs.new_zeros(batch, steps) if att_scores is not None else inputs.new_empty(0)
    d_init = torch.empty_like(init_state)
    kernels.agru_backward_kernel[_grid(batch)](
        _or(d_outputs, xc), _or(d_final, xc), xg, xc, _or(att_scores, xg), h_prev, mask_codes,
        lengths, w_g, w_c, d_gates, d_cand, q, _or(d_att if att_scores is not None else None, xg),
        d_init, batch, steps, units,
        HAS_D_OUT=d_outputs is not None, HAS_D_FINAL=d_final is not None, MODE=mode,
        HAS_MASK=has_mask, ACT=act, BLOCK_B=BLOCK_B, BLOCK_U=_block_units(units),
    )  # fmt: skip
    x = _flat(_zero_padded(inputs, mask))
    d_gates_flat, d_cand_flat = _flat(d_gates), _flat(d_cand)
    d_gates_kernel = torch.cat([x.T @ d_gates_flat, _flat(h_prev).T @ d_gates_flat])
    d_candidate_kernel = torch.cat([x.T @ d_cand_flat, _flat(q).T @ d_cand_flat])
    d_inputs = inputs.new_empty(0)
    if need_inputs:
        d_inputs = d_gates @ gates_kernel[:dim].T + d_cand @ candidate_kernel[:dim].T
    return (
        d_inputs,
        d_att,
        d_init,
        d_gates_kernel,
        d_gates_flat.sum(0),
        d_candidate_kernel,
        d_cand_flat.sum(0),
    )


# -- DIN --

PRELU = 4


def _real_positions(mask: Tensor | None, batch: int, steps: int, device) -> Tensor:
    """Flat indices b * T + t of the real positions (P,), in row order."""
    if mask is None:
        return torch.arange(batch * steps, device=device)
    return mask.reshape(-1).nonzero().squeeze(1)


def _weight_norm(v: Tensor, g: Tensor, eps: float) -> Tensor:
    """Dense.effective_kernel: each column of v scaled to norm g."""
    return v * (torch.rsqrt(v.square().sum(0).clamp_min(eps)) * g)


def _activation(z: Tensor, code: int, slopes: Tensor) -> Tensor:
    if code == kernels.TANH:
        return torch.tanh(z)
    if code == kernels.SIGMOID:
        return torch.sigmoid(z)
    if code == kernels.RELU:
        return torch.relu(z)
    if code == PRELU:
        return torch.where(z > 0, z, slopes * z)
    return z


def _activation_grad(
    d_a: Tensor, kept: Tensor, code: int, slopes: Tensor
) -> tuple[Tensor, Tensor | None]:
    """dL/dz from dL/da and what the forward kept (z for PReLU, else a); and for
    PReLU the slopes' gradient."""
    if code == PRELU:
        return torch.where(kept > 0, d_a, d_a * slopes), (d_a * kept.clamp_max(0)).sum(0)
    if code == kernels.TANH:
        return d_a * (1 - kept.square()), None
    if code == kernels.SIGMOID:
        return d_a * kept * (1 - kept), None
    if code == kernels.RELU:
        return d_a * (kept > 0), None
    return d_a, None


def _tower_kernels(tower: list[Tensor], eps: float) -> list[Tensor]:
    return [_weight_norm(tower[i], tower[i + 1], eps) for i in range(0, len(tower), 3)]


def _first_inputs(q: Tensor, k: Tensor) -> Tensor:
    """(P, 4H): the first layer's input [q, k, q - k, q * k] at each real position.
    One GEMM over it rounds as the reference does; the factored form's three
    sums flip relu at pre-activations within float32 rounding of zero."""
    return torch.cat([q, k, q - k, q * k], 1)


def _pool(keys, weights, mask, sum_mode: bool) -> Tensor:
    batch, steps, width = keys.shape
    out = keys.new_empty(batch, width) if sum_mode else torch.empty_like(keys)
    if batch:
        codes, has_mask = _mask_codes(mask, weights)
        kernels.din_pool_forward_kernel[(batch,)](
            keys, weights, codes, out, steps, width,
            SUM=sum_mode, HAS_MASK=has_mask, BLOCK_T=16, BLOCK_H=_block_width(width),
        )  # fmt: skip
    return out


def _block_width(width: int) -> int:
    return 1 << max(0, (width - 1).bit_length())


def din_forward(queries, keys, mask, tower, activations, slopes, sum_mode, decay, eps, save):
    batch, steps, width = keys.shape
    keys = keys.contiguous()
    positions = _real_positions(mask, batch, steps, keys.device)
    k = _flat(keys)[positions]
    q = queries[positions // steps]
    weights_by_layer = _tower_kernels(tower, eps)
    z = torch.addmm(tower[2], _first_inputs(q, k), weights_by_layer[0])
    hidden = []
    for layer, (code, alpha) in enumerate(zip(activations, slopes, strict=True), start=1):
        a = _activation(z, code, alpha)
        hidden.append(z if code == PRELU else a)
        z = torch.addmm(tower[3 * layer + 2], a, weights_by_layer[layer])
    weights = keys.new_zeros(batch * steps)
    weights[positions] = z[:, 0] / decay
    weights = weights.view(batch, steps)
    out = _pool(keys, weights, mask, sum_mode)
    return out, weights, hidden if save else []


def din_backward(
    d_out, queries, keys, mask, tower, activations, slopes, sum_mode, decay, eps, weights,
    hidden, need_queries, need_keys,
):  # fmt: skip
    batch, steps, width = keys.shape
    keys, d_out = keys.contiguous(), d_out.contiguous()
    d_keys = torch.empty_like(keys)
    d_weights = keys.new_empty(batch, steps)
    if batch:
        codes, has_mask = _mask_codes(mask, weights)
        kernels.din_pool_backward_kernel[(batch,)](
            d_out, keys, weights.contiguous(), codes, d_keys, d_weights, steps, width,
            SUM=sum_mode, HAS_MASK=has_mask, BLOCK_T=16, BLOCK_H=_block_width(width),
        )  # fmt: skip
    positions = _real_positions(mask, batch, steps, keys.device)
    k = _flat(keys)[positions]
    q = queries[positions // steps]
    weights_by_layer = _tower_kernels(tower, eps)
    dz = d_weights.reshape(-1)[positions].unsqueeze(1) / decay
    d_kernels, d_biases, d_slopes = [], [], []
    for layer in range(len(weights_by_layer) - 1, 0, -1):
        code, alpha, kept = activations[layer - 1], slopes[layer - 1], hidden[layer - 1]
        a = _activation(kept, code, alpha) if code == PRELU else kept
        d_kernels.insert(0, a.T @ dz)
        d_biases.insert(0, dz.sum(0))
        dz, d_alpha = _activation_grad(dz @ weights_by_layer[layer].T, kept, code, alpha)
        d_slopes.insert(0, torch.zeros_like(alpha) if d_alpha is None else d_alpha)
    d_kernels.insert(0, _first_inputs(q, k).T @ dz)
    d_biases.insert(0, dz.sum(0))
    d_q, d_k, d_diff, d_product = (dz @ weights_by_layer[0].T).chunk(4, dim=1)
    empty = keys.new_empty(0)
    d_queries, d_keys_out = empty, empty
    if need_queries:
        d_rows = d_q + d_diff + d_product * k
        d_queries = torch.zeros_like(queries).index_add_(0, positions // steps, d_rows)
    if need_keys:
        d_rows = d_k - d_diff + d_product * q
        d_keys_out = _flat(d_keys).index_add_(0, positions, d_rows).view_as(keys)
    d_tower = _weight_norm_grads(tower, eps, d_kernels, d_biases)
    return d_queries, d_keys_out, d_tower, d_slopes


def _weight_norm_grads(tower, eps, d_kernels, d_biases) -> list[Tensor]:
    """[dV1, dg1, db1, ...] from each layer's effective-kernel gradient dK.

    With q_j = sum_i V_ij^2, r_j = 1 / sqrt(max(q_j, eps)), K = V g r and
    c_j = sum_i dK_ij V_ij: dg = c r and dV = dK g r - V g r^3 c (the second
    term only where q_j >= eps, as clamp_min passes its gradient).
    """
    grads = []
    for layer, (d_kernel, d_bias) in enumerate(zip(d_kernels, d_biases, strict=True)):
        v, g = tower[3 * layer], tower[3 * layer + 1]
        q = v.square().sum(0)
        r = torch.rsqrt(q.clamp_min(eps))
        c = (d_kernel * v).sum(0)
        through_norm = torch.where(q >= eps, g * r.pow(3) * c, 0)
        grads += [d_kernel * (g * r) - v * through_norm, c * r, d_bias]
    return grads
