"""Keras's GRU cell (``reset_after=True``), the interest extractor of DIEN.

One step, with ``x`` (B, D), ``h`` (B, U), Keras gate order z, r, h::

    gi = x @ kernel + bias[0]                    # (B, 3U)
    gh = h @ recurrent_kernel + bias[1]          # (B, 3U)
    z  = sigmoid(gi_z + gh_z);  r = sigmoid(gi_r + gh_r)
    hh = act(gi_h + r * gh_h)
    h' = z * h + (1 - z) * hh

:func:`gru_sequence` runs it over (B, T, D) with an optional padding mask
or lengths (a padded step keeps the state and outputs zeros); its fast path
is the operator ``torch.ops.monolith_layers.gru`` (real steps only; see
:mod:`monolith_layers._ops.recurrences`).
"""

from __future__ import annotations

from typing import Any

import torch

from . import _ops
from . import activations as _activations
from ._checks import check_float, check_positive_int, check_shape, resolve
from ._sequence import check_sequence, padding_mask, step_loop, zero_padded
from .layer import Layer, attach_activation


class KerasGRUCell(Layer):
    """``tf.keras.layers.GRUCell(reset_after=True)``, weights in Keras's layout.

    Weights: ``kernel`` (D, 3U), ``recurrent_kernel`` (U, 3U), ``bias``
    (2, 3U) = [input bias; recurrent bias], gate order z, r, h.

    Args:
        units: U.
        activation: candidate activation (Keras default tanh).
        recurrent_activation: gate activation; only sigmoid is supported.
        kernel_initializer: default glorot_uniform (Keras's).
        recurrent_initializer: default orthogonal (Keras's).
        bias_initializer: default zeros.
        kernel_regularizer: penalty on ``kernel`` (the only one DIEN sets).
        input_dim: D.
        name: Monolith scope, default ``'keras_gru_cell'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
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
        gate = resolve(where, "recurrent_activation", _activations.get, recurrent_activation)
        if _activations.name_of(gate) != "sigmoid" and _activations.kernel_name(gate) != "sigmoid":
            raise ValueError(
                f"{where}: recurrent_activation must be sigmoid, got {recurrent_activation!r}"
            )
        attach_activation(self, activation or "linear", units)
        self.add_weight(
            "kernel",
            (input_dim, 3 * units),
            kernel_initializer,
            kernel_regularizer,
            init_arg="kernel_initializer",
            reg_arg="kernel_regularizer",
        )
        self.add_weight(
            "recurrent_kernel",
            (units, 3 * units),
            recurrent_initializer,
            init_arg="recurrent_initializer",
        )
        self.add_weight("bias", (2, 3 * units), bias_initializer, init_arg="bias_initializer")

    def extra_repr(self) -> str:
        return (
            f"{self.input_dim}, {self.units}, "
            f"kernel_activation={_activations.kernel_name(self.activation) is not None}, "
            f"name={self.name!r}"
        )

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x (B, D), state (B, U) -> (output, new_state), both (B, U)."""
        where, dtype = self.where, self.kernel.dtype
        x = check_float(where, "x", check_shape(where, "x", x, (None, self.input_dim)), dtype)
        check_shape(where, "state", state, (x.shape[0], self.units))
        check_float(where, "state", state, dtype)
        gi = x @ self.kernel + self.bias[0]
        gh = state @ self.recurrent_kernel + self.bias[1]
        gi_z, gi_r, gi_h = gi.chunk(3, dim=1)
        gh_z, gh_r, gh_h = gh.chunk(3, dim=1)
        z = torch.sigmoid(gi_z + gh_z)
        r = torch.sigmoid(gi_r + gh_r)
        hh = self.activation(gi_h + r * gh_h)
        new_h = z * state + (1.0 - z) * hh
        return new_h, new_h


def gru_sequence(
    cell: KerasGRUCell,
    inputs: torch.Tensor,
    init_state: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    fast: bool = True,
    *,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``cell`` over inputs (B, T, D) -> (outputs (B, T, U), final_state (B, U)).

    ``mask`` (B, T): True / >= 1 marks real steps; or ``lengths`` (B,): the
    first ``lengths[b]`` steps of row b are real. A padded step keeps the
    state and outputs zeros, whatever the padded inputs hold, and costs
    nothing on the fast path (only real steps are computed). ``fast=False``
    (or ``set_fused(False)``, or TorchScript / ONNX export) runs the plain
    step-by-step loop, the reference the fast path is tested against.
    """
    where = "gru_sequence"
    if not isinstance(cell, KerasGRUCell):
        raise TypeError(f"{where}: cell must be a KerasGRUCell, got {type(cell).__name__}")
    inputs, init_state, mask, lengths = check_sequence(
        where, inputs, cell.input_dim, cell.units, init_state, mask, cell.kernel.dtype, lengths
    )
    return run_gru(cell, inputs, init_state, padding_mask(mask, lengths, inputs.shape[1]), fast)


def run_gru(
    cell: KerasGRUCell,
    inputs: torch.Tensor,
    init_state: torch.Tensor,
    mask: torch.Tensor | None,
    fast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gru_sequence` on inputs already checked, ``mask`` (B, T) bool or None:
    for layers that validated their padding once on entry (DIEN)."""
    batch, steps = inputs.shape[:2]
    act = _activations.kernel_name(cell.activation)
    unsupported = None if act is not None else f"activation {cell.activation!r} has no kernel"
    if (
        fast
        and batch
        and steps
        and _ops.use_kernel("gru", inputs, init_state, cell.kernel, unsupported=unsupported)
    ):
        return _ops.gru(
            inputs, init_state, cell.kernel, cell.recurrent_kernel, cell.bias, mask, act
        )
    inputs = zero_padded(inputs, mask)
    return step_loop(lambda t, state: cell(inputs[:, t], state)[1], steps, init_state, mask)
