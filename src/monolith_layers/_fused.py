"""Pieces shared by the fused recurrences (``_agru_scan``, ``_gru_scan``).

The recurrent cells' candidate activation is applied in place on a
preallocated buffer, and its derivative is recovered in the backward from the
activation's output alone, so nothing but the output needs saving.
"""

from __future__ import annotations

import torch

from . import activations as _activations

FUSED_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")


def _is_tracing() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    if is_compiling is None:  # pragma: no cover - older torch
        from torch._dynamo import is_compiling
    return bool(is_compiling())


def use_fused_path(activation) -> bool:
    """Whether a recurrence can take its fused path.

    Not while ``torch.compile`` / ``torch.export`` trace the model: the fused
    kernels write into preallocated buffers (``out=``), which tracing cannot
    differentiate, so tracers get the plain loop, which they unroll.
    """
    if _is_tracing():
        return False
    return fused_activation_name(activation) is not None


def fused_activation_name(activation) -> str | None:
    """The activation's name if the fused paths know its derivative, else None."""
    if isinstance(activation, _activations.ReLU) and activation.get_config() != {
        "max_value": None,
        "negative_slope": 0.0,
        "threshold": 0.0,
    }:
        return None
    name = _activations.name_of(activation)
    return name if name in FUSED_ACTIVATIONS else None


def pre_scale(name: str) -> float:
    """Factor the caller multiplies the pre-activation by before :func:`activate_`.

    tanh is computed as ``2 sigmoid(2x) - 1``: the same value to within float
    rounding (about 1e-7 absolute), and several times cheaper than ATen's tanh
    on CPU, where it dominates a recurrent step. The factor 2 folds into the
    matmul or multiply-add that produces the pre-activation.
    """
    return 2.0 if name == "tanh" else 1.0


_MINUS_ONE: dict[tuple, torch.Tensor] = {}


def _minus_one(like: torch.Tensor) -> torch.Tensor:
    # A cached tensor, so the hot loop adds tensors rather than Python scalars.
    key = (like.dtype, like.device)
    if key not in _MINUS_ONE:
        _MINUS_ONE[key] = torch.full((1,), -1.0, dtype=like.dtype, device=like.device)
    return _MINUS_ONE[key]


def activate_(scaled_pre: torch.Tensor, name: str) -> torch.Tensor:
    """In place: ``pre_scale(name) * pre`` -> ``act(pre)``."""
    if name == "tanh":
        return torch.add(_minus_one(scaled_pre), scaled_pre.sigmoid_(), alpha=2.0, out=scaled_pre)
    if name == "sigmoid":
        return scaled_pre.sigmoid_()
    if name == "relu":
        return scaled_pre.relu_()
    return scaled_pre


def derivative_from_output(out: torch.Tensor, name: str) -> torch.Tensor | None:
    """``act'(pre)`` written in terms of ``out = act(pre)``; None means 1."""
    # Built in place on one new tensor: these run over all T steps at once.
    if name == "tanh":
        return torch.mul(out, out).neg_().add_(1.0)
    if name == "sigmoid":
        return torch.sub(1.0, out).mul_(out)
    if name == "relu":
        return (out > 0).to(out.dtype)
    return None
