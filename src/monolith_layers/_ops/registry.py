"""How an operator is defined, and when a layer may call one.

:func:`define` registers ``monolith_layers::<name>`` with
``torch.library.custom_op`` (torch >= 2.4): the schema comes from the
implementation's type hints, the fake implementation gives the shapes to
``torch.compile`` / ``torch.export``, and the backward, when given, is
registered with ``register_autograd`` (it calls another operator, so a
compiled backward sees one opaque call too). An operator with a Triton
implementation (:mod:`.gpu`) has it registered as its CUDA kernel; its CPU
kernel runs the C++ implementation, or the Triton one under
``cpu_backend("triton")`` (Triton's interpreter).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from . import build
from .eager import Operator
from .switch import (
    autocasting,
    compiling,
    cpu_backend_in_use,
    is_jit_tracing,
    record,
    switch_on,
)

NAMESPACE = "monolith_layers"
HAS_CUSTOM_OPS = hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_fake")
KERNEL_DTYPES = (torch.float32, torch.float64)
_CPU_KERNELS = torch.library.Library(NAMESPACE, "IMPL") if HAS_CUSTOM_OPS else None


TRITON_OPS: set[str] = set()  # the operators with a Triton implementation
TRITON_MISSING = "pip install 'monolith-layers[gpu]'"


def define(
    name: str,
    impl: Callable[..., Any],
    fake: Callable[..., Any],
    setup_context: Callable[..., None] | None = None,
    backward: Callable[..., Any] | None = None,
    triton_impl: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """``torch.ops.monolith_layers.<name>`` behind an :class:`~.eager.Operator`
    (the operator for tracers, its implementation directly in eager mode), or
    ``impl`` itself on a torch without custom ops (the layers then never call
    it: :func:`blocked` says so). ``triton_impl``, with ``impl``'s signature,
    becomes the CUDA kernel, and the CPU kernel under the Triton backend."""
    if not HAS_CUSTOM_OPS:  # pragma: no cover - torch < 2.4
        return impl
    op = torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=())(impl)
    run = _without_autocast(impl)
    if triton_impl is not None:
        TRITON_OPS.add(name)
        op.register_kernel("cuda", _without_autocast(triton_impl))
        run = _without_autocast(_cpu_backend_choice(impl, triton_impl))
    # The CPU kernel straight to the implementation: custom_op's own wrapper
    # around it cost 0.19 ms a call on SeNet's (1024, 39, 16) (against 0.26 ms
    # for the kernel), which an exported program would pay on every call.
    _CPU_KERNELS.impl(name, run, "CPU")
    op.register_fake(fake)
    if backward is not None:
        op.register_autograd(backward, setup_context=setup_context)
    return Operator(op, run, setup_context, backward)


def _without_autocast(implementation: Callable[..., Any]) -> Callable[..., Any]:
    """``implementation`` with autocast off inside: an operator computes in the
    dtype of its inputs (as torch's ops outside autocast's lists do), and the
    tensor ops inside a kernel must not be cast to bf16 / fp16 one by one."""

    def run(*args: Any) -> Any:
        if not autocasting():
            return implementation(*args)
        device = next(a.device.type for a in args if isinstance(a, torch.Tensor))
        with torch.autocast(device, enabled=False):
            return implementation(*args)

    return run


def _cpu_backend_choice(cpp_impl: Callable[..., Any], triton_impl: Callable[..., Any]):
    """One implementation for eager calls and the CPU kernel: Triton for CUDA
    tensors and under the Triton CPU backend, else the C++ one."""

    def run(*args: Any) -> Any:
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        if device.type == "cpu" and cpu_backend_in_use() != "triton":
            return cpp_impl(*args)
        return triton_impl(*args)

    return run


def triton_implementations() -> ModuleType:
    """The operators' Triton implementations (:mod:`.gpu`), imported on first use:
    ``@triton.jit`` reads ``TRITON_INTERPRET`` when the kernels are defined."""
    return importlib.import_module(f"{__package__}.gpu")


def input_needs(inputs: tuple) -> list[bool]:
    """Per input of an operator, whether it takes a gradient (a list: any of its
    tensors). Set by the setup_context functions as ``ctx.needs``: the same
    under the registered operator and the eager call, whose autograd
    Function sees other arguments first."""
    return [
        any(getattr(t, "requires_grad", False) for t in x)
        if isinstance(x, list)
        else bool(getattr(x, "requires_grad", False))
        for x in inputs
    ]


@torch.compiler.assume_constant_result
def blocked() -> str | None:
    """Why no operator may run here, or None. Read once per trace under a compiler."""
    if not HAS_CUSTOM_OPS:
        return "torch < 2.4 has no torch.library.custom_op"
    if not switch_on():
        return "switched off (set_fused / fused / MONOLITH_LAYERS_FUSED)"
    if is_jit_tracing():
        return "TorchScript or ONNX export (the reference is what they record)"
    return None


@torch.compiler.assume_constant_result
def cpp_unavailable() -> str | None:
    """Why the C++ kernels cannot run (building them on first use), or None."""
    if not build.loaded() and build.kernels() is None:
        return "the C++ kernels could not be built"
    return None


@torch.compiler.assume_constant_result
def triton_unavailable(on_cpu: bool) -> str | None:
    """Why the Triton kernels cannot run, or None. On CPU tensors they need
    Triton's interpreter; asking for them there without it is an error, not a
    quiet fallback."""
    if importlib.util.find_spec("triton") is None:
        if on_cpu:
            raise RuntimeError(
                "monolith_layers: the Triton CPU backend (MONOLITH_LAYERS_BACKEND=triton / "
                f"cpu_backend('triton')) needs Triton: {TRITON_MISSING}"
            )
        return f"Triton is not installed ({TRITON_MISSING})"
    if on_cpu and not interpreting():
        raise RuntimeError(
            "monolith_layers: the Triton CPU backend (MONOLITH_LAYERS_BACKEND=triton / "
            "cpu_backend('triton')) runs in Triton's interpreter: set TRITON_INTERPRET=1 "
            "before the first call, or use the C++ kernels (MONOLITH_LAYERS_BACKEND=cpp)"
        )
    return None


def interpreting() -> bool:
    """Whether Triton runs in its interpreter (``TRITON_INTERPRET=1``). Triton reads
    the variable when kernels are defined and again when they run: set it for
    the whole process, before the first call."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false")


def use_kernel(op: str, *tensors: torch.Tensor | None, unsupported: str | None = None) -> bool:
    """Whether the layer calling ``op`` on these tensors runs the operator.

    Needs: the switch on, no TorchScript / ONNX tracer, every tensor on one
    device in one dtype, float32 or float64 (under autocast too: the operator
    then computes in that dtype, autocast off inside), ``unsupported``
    (the caller's own reason, e.g. an activation the kernel lacks) None, and
    kernels for the device: the C++ ones on the CPU (built on first use),
    the Triton ones on CUDA (and on the CPU under the Triton backend). The
    path taken is recorded for :func:`~monolith_layers.which_paths`:
    ``kernel`` (C++), ``kernel (triton)`` or ``reference: <why>``.
    """
    backend, reason = None, unsupported or _tensor_reason(tensors) or blocked()
    if reason is None:
        device = next(t for t in tensors if t is not None).device
        backend = _backend(op, device)
        reason = _backend_reason(op, backend, device)
    path = {"cpp": "kernel", "triton": "kernel (triton)"}.get(backend)
    record(op, path if reason is None else f"reference: {reason}")
    # Said once: a layer built with something the kernels lack, and a GPU
    # without Triton (each step of a recurrence is then a dozen small kernels).
    missing_triton = reason is not None and reason.startswith("Triton is not installed")
    if (unsupported is not None or missing_triton) and not compiling():
        _warn_once(op, reason)
    return reason is None


def _backend(op: str, device: torch.device) -> str:
    """``cpp``, ``triton``, or the device type when nothing runs there."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_backend_in_use() == "triton"):
        return "triton"
    return "cpp" if device.type == "cpu" else device.type


def _backend_reason(op: str, backend: str, device: torch.device) -> str | None:
    if backend == "cpp":
        return cpp_unavailable()
    if backend != "triton":
        return f"on {backend} (no kernels for that device)"
    if op not in TRITON_OPS:
        return "no Triton implementation (its tensor ops are already batched GEMMs)"
    return triton_unavailable(device.type == "cpu")


_warned: set[tuple[str, str]] = set()


@torch.compiler.disable
def _warn_once(op: str, reason: str) -> None:
    """A layer built in a way the kernels do not cover, or on a GPU without
    Triton, is told so once: it runs the slower reference computation (results
    are the same)."""
    if (op, reason) not in _warned:
        _warned.add((op, reason))
        warnings.warn(
            f"monolith_layers::{op}: {reason}; running the reference tensor ops", stacklevel=4
        )


def _tensor_reason(tensors) -> str | None:
    present = [t for t in tensors if t is not None]
    if len({t.device for t in present}) > 1:
        return "tensors on more than one device"
    dtypes = {t.dtype for t in present}
    if len(dtypes) != 1 or next(iter(dtypes)) not in KERNEL_DTYPES:
        if autocasting():  # e.g. bf16 scores from an autocast matmul
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
            return f"autocast gave {names} inputs (the kernels take one of float32 / float64)"
        return "not one float32 / float64 dtype"
    return None


def require_kernels(op: str) -> ModuleType:
    """The loaded kernels, for an operator's implementation (an exported program
    run where they cannot be built gets this error, not a wrong result)."""
    kernels = build.kernels(announce=not compiling())
    if kernels is None:
        raise RuntimeError(
            f"monolith_layers::{op}: the C++ kernels are not available here (no compiler, or "
            "MONOLITH_LAYERS_FUSED=0 at build time); run `monolith-layers build-kernels`, or "
            "export the model with monolith_layers.fused(False) for a program of plain tensor ops"
        )
    return kernels


def refuse_double_backward(where: str) -> None:
    """Called first in a hand-written backward: a graph of the backward itself
    (``create_graph=True``, for a double backward) is not supported."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{where}: the fast path's hand-written backward is not twice "
            "differentiable (create_graph=True / double backward); switch the fast "
            "path off with monolith_layers.set_fused(False) for higher-order gradients"
        )
