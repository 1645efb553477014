"""Pieces shared by the fused recurrences (``_agru_scan``, ``_gru_scan``).

The recurrent cells' candidate activation is applied in place on a
preallocated buffer, and its derivative is recovered in the backward from the
activation's output alone, so nothing but the output needs saving.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import activations as _activations
from ._switch import ProcessSwitch

FUSED_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")

# torch's own spellings of the activations the fused paths know.
_TORCH_MODULES = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.Identity: "linear"}
_TORCH_FUNCTIONS = {
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    torch.relu: "relu",
    F.relu: "relu",
    F.tanh: "tanh",
    F.sigmoid: "sigmoid",
}

ENV_VAR = "MONOLITH_LAYERS_FUSED"
_SWITCH = ProcessSwitch("set_fused", ENV_VAR)
_warned: set[tuple[str, str]] = set()


def set_fused(enabled: bool) -> bool:
    """Switch the fast paths on or off for the whole process; returns the old setting.

    On (the default, or ``MONOLITH_LAYERS_FUSED=1``): the attention RNNs,
    :func:`~monolith_layers.gru_sequence`, DIN, AutoInt and SeNet take their
    fused or native paths. Off (``set_fused(False)`` or
    ``MONOLITH_LAYERS_FUSED=0``): they run the plain reference computations
    those paths are tested against. Results are the same to float rounding
    either way.
    """
    return _SWITCH.set(enabled)


def fused_enabled() -> bool:
    """Whether :func:`set_fused` (or the environment variable) leaves the fast paths on."""
    return _SWITCH.enabled


def fused(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """``with fused(False): ...`` runs a block on the reference paths."""
    return _SWITCH.scoped(enabled)


def is_tracing() -> bool:
    """True under ``torch.compile`` / ``torch.export`` / ``torch.jit.trace`` / ONNX export.

    Tracers need the plain computations: the fused kernels write into
    preallocated buffers (``out=``) inside a custom autograd Function, which
    a tracer cannot see through, and DIN's batch slicing would bake the
    traced batch size into the graph.
    """
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    if is_compiling is None:  # pragma: no cover - older torch
        from torch._dynamo import is_compiling
    return bool(is_compiling()) or torch.jit.is_tracing() or torch.jit.is_scripting()


def autocasting() -> bool:
    """True inside ``torch.autocast`` (CPU or CUDA): ops pick their own precision."""
    try:
        return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")
    except TypeError:  # pragma: no cover - torch < 2.4 names them separately
        return torch.is_autocast_cpu_enabled() or torch.is_autocast_enabled()


def fast_paths_on() -> bool:
    """The fast paths are switched on and nothing is tracing the model.

    Not under autocast either: the fused recurrences and the native kernels
    keep one dtype from end to end, and autocast hands them a mix (bf16 / fp16
    matmul outputs next to float32 weights); the reference computations are
    made of ops that autocast knows.
    """
    return _SWITCH.enabled and not is_tracing() and not autocasting()


def use_fused_path(activation: Any, where: str) -> bool:
    """Whether a recurrence with this candidate activation takes its fused path.

    Not while tracing (see :func:`is_tracing`), not when switched off, and
    not for an activation whose derivative the fused backward does not know;
    that last fallback warns once per caller and activation type.
    """
    if not fast_paths_on():
        return False
    if fused_activation_name(activation) is not None:
        return True
    key = (where, type(activation).__name__)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"{where}: activation {activation!r} has no fused form "
            f"(fused: {', '.join(FUSED_ACTIVATIONS)}); running the plain step loop",
            stacklevel=3,
        )
    return False


def fused_activation_name(activation: Any) -> str | None:
    """The activation's name if the fused paths know its derivative, else None."""
    if isinstance(activation, _activations.ReLU) and activation.get_config() != {
        "max_value": None,
        "negative_slope": 0.0,
        "threshold": 0.0,
    }:
        return None
    if isinstance(activation, _activations.Lambda):
        activation = activation.fn
    if type(activation) in _TORCH_MODULES:
        return _TORCH_MODULES[type(activation)]
    if not isinstance(activation, nn.Module):
        try:
            return _TORCH_FUNCTIONS.get(activation)
        except TypeError:  # unhashable callable
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


def refuse_double_backward(where: str) -> None:
    """Called first in a hand-written backward: a graph of the backward itself
    (``create_graph=True``, for a double backward) is not supported."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{where}: the fast path's hand-written backward is not twice "
            "differentiable (create_graph=True / double backward); switch the fast "
            "paths off with monolith_layers.set_fused(False) for higher-order gradients"
        )
