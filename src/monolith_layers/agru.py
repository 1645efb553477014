"""The attention GRU cell of DIEN (AGRU / AUGRU) and the RNN helpers around it.

One step, with ``x`` (B, D), ``h`` (B, U), attention ``a`` (B, 1)::

    r, u = split(sigmoid([x, h] @ W_g + b_g))      # reset, update
    c    = act([x, r * h] @ W_c + b_c)             # candidate
    no score: h' = (1 - u) * h + u * c
    AGRU:     h' = (1 - a) * h + a * c
    AUGRU:    u' = (1 - a) * u;  h' = u' * h + (1 - u') * c

Every variant is ``h' = h + z * (c - h)`` for an update weight ``z``
(``u``, ``a`` or ``1 - (1 - a) * u``); a padded step is ``z = 0``. The fast
path, the operator ``torch.ops.monolith_layers.agru``, is built on that form
and runs over the real steps only, keeping just the states for its backward
(see :mod:`monolith_layers._ops.recurrences`).
"""

from __future__ import annotations

from typing import Any

import torch

from . import _ops
from . import activations as _activations
from ._checks import check_float, check_positive_int, check_shape, check_tensor
from ._ops.switch import autocasting
from ._sequence import check_sequence, padding_mask, step_loop, zero_padded
from .layer import Layer, attach_activation

ATT_TYPES = ("AGRU", "AUGRU")


def check_att_type(where: str, att_type: object) -> str:
    """'AGRU' or 'AUGRU' in any case -> upper case; anything else raises."""
    if not isinstance(att_type, str) or att_type.upper() not in ATT_TYPES:
        raise ValueError(f"{where}: att_type must be 'AGRU' or 'AUGRU', got {att_type!r}")
    return att_type.upper()


class AGRUCell(Layer):
    """Attention GRU cell (DIEN's AGRU / AUGRU); see the module docstring for the maths.

    Weights (TF names and layouts): ``gates/kernel`` (D + U, 2U) and
    ``candidate/kernel`` (D + U, U), rows ordered ``[x, h]``; ``gates/bias``
    (2U, ``[r, u]``) and ``candidate/bias`` (U), both initialised to ones.

    Args:
        units: U, the state width.
        att_type: ``'AGRU'`` or ``'AUGRU'`` (case-insensitive).
        activation: candidate activation, default tanh.
        initializer: kernel initializer, default he_normal.
        regularizer: penalty on all four weights.
        input_dim: D, the width of ``x``.
        name: Monolith scope, default ``'agru_cell'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        units: int,
        att_type: str = "AGRU",
        activation: Any = None,
        initializer: Any = None,
        regularizer: Any = None,
        *,
        input_dim: int,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.units = check_positive_int(where, "units", units)
        self.input_dim = check_positive_int(where, "input_dim", input_dim)
        self.att_type = check_att_type(where, att_type)
        attach_activation(self, activation or "tanh", units)
        init = initializer or "he_normal"
        rows = input_dim + units
        self.add_weight("gates/kernel", (rows, 2 * units), init, regularizer)
        self.add_weight("gates/bias", (2 * units,), "ones", regularizer)
        self.add_weight("candidate/kernel", (rows, units), init, regularizer)
        self.add_weight("candidate/bias", (units,), "ones", regularizer)

    def extra_repr(self) -> str:
        return (
            f"{self.input_dim}, {self.units}, att_type={self.att_type!r}, "
            f"kernel_activation={_activations.kernel_name(self.activation) is not None}, "
            f"name={self.name!r}"
        )

    @property
    def state_size(self) -> int:
        return self.units

    @property
    def output_size(self) -> int:
        return self.units

    def zero_state(
        self, batch_size: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> torch.Tensor:
        """Zeros (batch_size, U) in ``dtype`` / ``device`` (default: the weights')."""
        return self.gates_kernel.new_zeros(batch_size, self.units, dtype=dtype, device=device)

    def check_step(self, x: Any, state: Any, att_score: Any = None) -> torch.Tensor | None:
        """Validate one step's inputs; returns ``att_score`` as (B, 1) or None."""
        where, dtype = self.where, self.gates_kernel.dtype
        x = check_float(where, "x", check_shape(where, "x", x, (None, self.input_dim)), dtype)
        check_shape(where, "state", state, (x.shape[0], self.units))
        check_float(where, "state", state, dtype)
        if att_score is None:
            return None
        att_score = check_float(
            where, "att_score", check_tensor(where, "att_score", att_score), dtype
        )
        if att_score.dim() == 1:
            att_score = att_score.unsqueeze(1)
        return check_shape(where, "att_score", att_score, (x.shape[0], 1))

    def forward(
        self, x: torch.Tensor, state: torch.Tensor, att_score: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x (B, D), state (B, U), att_score (B, 1), (B,) or None.

        Returns ``(output, new_state)``, the same (B, U) tensor twice.
        """
        att_score = self.check_step(x, state, att_score)
        gates = torch.sigmoid(torch.cat([x, state], 1) @ self.gates_kernel + self.gates_bias)
        r, u = gates.chunk(2, dim=1)
        candidate = torch.cat([x, r * state], 1) @ self.candidate_kernel + self.candidate_bias
        c = self.activation(candidate)
        if att_score is None:
            new_h = (1.0 - u) * state + u * c
        elif self.att_type == "AUGRU":
            u = (1.0 - att_score) * u
            new_h = u * state + (1.0 - u) * c
        else:
            new_h = (1.0 - att_score) * state + att_score * c
        return new_h, new_h

    def split_kernels(self) -> tuple[torch.Tensor, ...]:
        """``(W_gx, W_gh, W_cx, W_ch)``: the kernels' input rows and state rows."""
        d = self.input_dim
        return (
            self.gates_kernel[:d],
            self.gates_kernel[d:],
            self.candidate_kernel[:d],
            self.candidate_kernel[d:],
        )


def _check_rnn_inputs(where, cell, inputs, att_scores, init_state, mask, lengths):
    if not isinstance(cell, AGRUCell):
        raise TypeError(f"{where}: cell must be an AGRUCell, got {type(cell).__name__}")
    inputs, init_state, mask, lengths = check_sequence(
        where,
        inputs,
        cell.input_dim,
        cell.units,
        init_state,
        mask,
        cell.gates_kernel.dtype,
        lengths,
    )
    if att_scores is not None:
        att_scores = check_shape(where, "att_scores", att_scores, tuple(inputs.shape[:2]))
        check_float(where, "att_scores", att_scores, cell.gates_kernel.dtype)
    return inputs, att_scores, init_state, mask, lengths


def _padded_steps_zeroed(inputs, att_scores, mask, lengths):
    """Inputs and scores with padded steps selected away, and the (B, T) mask."""
    mask = padding_mask(mask, lengths, inputs.shape[1])
    scores = None if att_scores is None else zero_padded(att_scores, mask)
    return zero_padded(inputs, mask), scores, mask


def static_rnn_with_attention(
    cell: AGRUCell,
    inputs: torch.Tensor,
    att_scores: torch.Tensor | None,
    init_state: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``cell`` step by step: the plain, obviously-correct loop.

    Shapes: inputs (B, T, D), att_scores (B, T) (``None``: plain GRU update),
    init_state (B, U) (default zeros in the inputs' dtype / device), mask
    (B, T) (True / >= 1 marks a real step) or lengths (B,) (the first
    ``lengths[b]`` steps are real). Returns ``(outputs (B, T, U),
    final_state (B, U))``. A padded step keeps the state and outputs zeros.
    This is the reference that :func:`dynamic_rnn_with_attention` is tested
    against.
    """
    inputs, att_scores, state, mask, lengths = _check_rnn_inputs(
        "static_rnn_with_attention", cell, inputs, att_scores, init_state, mask, lengths
    )
    return _step_loop(cell, inputs, att_scores, state, padding_mask(mask, lengths, inputs.shape[1]))


def _step_loop(cell, inputs, att_scores, state, mask):
    """The reference loop over checked inputs, ``mask`` (B, T) bool or None."""
    inputs, att_scores, mask = _padded_steps_zeroed(inputs, att_scores, mask, None)

    def step(t: int, state: torch.Tensor) -> torch.Tensor:
        score = None if att_scores is None else att_scores[:, t : t + 1]
        return cell(inputs[:, t], state, score)[1]

    return step_loop(step, inputs.shape[1], state, mask)


def dynamic_rnn_with_attention(
    cell: AGRUCell,
    inputs: torch.Tensor,
    att_scores: torch.Tensor | None,
    init_state: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract and results as :func:`static_rnn_with_attention`, fast.

    Runs the operator ``torch.ops.monolith_layers.agru``: the input
    projections are one matmul per time chunk, the time loop (C++) does two
    small matmuls and one pass of elementwise work per step, with a
    hand-written backward through time (tanh, sigmoid, relu and linear
    candidate activations, by our names or torch's; any other activation
    runs the plain loop). Only the real steps are computed: rows are sorted
    by length and step t runs the rows still alive (holes in a mask are
    skipped too); the backward keeps only the states and recomputes the
    rest. ``set_fused(False)`` and TorchScript / ONNX export take the plain
    loop; ``torch.compile`` and ``torch.export`` keep the operator.
    """
    where = "dynamic_rnn_with_attention"
    inputs, att_scores, state, mask, lengths = _check_rnn_inputs(
        where, cell, inputs, att_scores, init_state, mask, lengths
    )
    mask = padding_mask(mask, lengths, inputs.shape[1])
    return run_attention_rnn(cell, inputs, att_scores, state, mask)


def run_attention_rnn(
    cell: AGRUCell,
    inputs: torch.Tensor,
    att_scores: torch.Tensor | None,
    init_state: torch.Tensor,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dynamic_rnn_with_attention` on inputs already checked, ``mask`` (B, T)
    bool or None: for layers that validated their padding once on entry (DIEN)."""
    batch, steps = inputs.shape[:2]
    if att_scores is not None and autocasting() and att_scores.dtype != inputs.dtype:
        # Autocast hands over bf16 / fp16 scores; the update promotes them anyway.
        att_scores = att_scores.to(torch.promote_types(att_scores.dtype, inputs.dtype))
    act = _activations.kernel_name(cell.activation)
    unsupported = None if act is not None else f"activation {cell.activation!r} has no kernel"
    tensors = (inputs, att_scores, init_state, cell.gates_kernel)
    if batch and steps and _ops.use_kernel("agru", *tensors, unsupported=unsupported):
        mode = "none" if att_scores is None else cell.att_type
        return _ops.agru(
            inputs,
            att_scores,
            init_state,
            cell.gates_kernel,
            cell.gates_bias,
            cell.candidate_kernel,
            cell.candidate_bias,
            mask,
            mode,
            act,
        )
    return _step_loop(cell, inputs, att_scores, init_state, mask)
