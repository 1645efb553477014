"""The one switch for the fast path, and the record of which path ran.

``set_fused(enabled)`` sets the process-wide default (``MONOLITH_LAYERS_FUSED``
gives its starting value; ``MONOLITH_LAYERS_NATIVE``, the older name, is still
read). ``with fused(enabled): ...`` overrides it for the block in the current
thread or asyncio task only (a :class:`contextvars.ContextVar`), so one
thread's reference run does not change what another thread computes.

Which kernels CPU tensors run is a second, separate choice:
``MONOLITH_LAYERS_BACKEND=cpp`` (the default: the C++ kernels) or
``triton`` (the Triton kernels, in Triton's interpreter, which needs
``TRITON_INTERPRET=1``: how the GPU kernels are tested without a GPU);
``set_cpu_backend`` / ``with cpu_backend(...)`` set it from Python the same
way. CUDA tensors always run the Triton kernels.

Under ``torch.compile`` / ``torch.export`` the switch is read once, when the
model is traced (:func:`switch_on` is a constant to the compiler): flip it
before compiling, not after.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Iterator

import torch

ENV_VAR = "MONOLITH_LAYERS_FUSED"
OLD_ENV_VAR = "MONOLITH_LAYERS_NATIVE"
BACKEND_ENV_VAR = "MONOLITH_LAYERS_BACKEND"
CPU_BACKENDS = ("cpp", "triton")
_OFF = ("0", "false", "no", "off")


def _default_from_environment() -> bool:
    return all(
        os.environ.get(name, "1").strip().lower() not in _OFF for name in (ENV_VAR, OLD_ENV_VAR)
    )


def _check_backend(where: str, name: object) -> str:
    if name not in CPU_BACKENDS:
        raise ValueError(f"{where}: the CPU backend must be one of {CPU_BACKENDS}, got {name!r}")
    return name


_default = _default_from_environment()
# None: MONOLITH_LAYERS_BACKEND decides, read when first needed (a bad value is
# then an error where it is used, not an import that fails).
_default_backend: str | None = None
_scoped_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "monolith_layers_cpu_backend", default=None
)
_scoped: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "monolith_layers_fused", default=None
)
_recorder: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "monolith_layers_paths", default=None
)


def _check_bool(where: str, enabled: object) -> bool:
    if not isinstance(enabled, bool):
        raise TypeError(f"{where}: enabled must be a bool, got {enabled!r}")
    return enabled


def set_fused(enabled: bool) -> bool:
    """Switch the fast path on or off for the whole process; returns the old default.

    On (the default, or ``MONOLITH_LAYERS_FUSED=1``): the attention RNNs,
    :func:`~monolith_layers.gru_sequence`, DIN, AutoInt and SeNet call their
    registered operators (``torch.ops.monolith_layers.*``, C++ kernels on
    CPU). Off (``set_fused(False)`` or ``MONOLITH_LAYERS_FUSED=0``): they run
    the plain tensor-op reference computations the operators are tested
    against. Results are the same to float rounding either way. A ``with
    fused(...)`` block in progress keeps its own setting.
    """
    global _default
    previous, _default = _default, _check_bool("set_fused", enabled)
    return previous


@torch.compiler.assume_constant_result
def switch_on() -> bool:
    """The switch as the current thread / task sees it (its ``fused`` block, else the default)."""
    scoped = _scoped.get()
    return _default if scoped is None else scoped


def fused_enabled() -> bool:
    """Whether the fast path is switched on here (see :func:`set_fused`)."""
    return switch_on()


@contextlib.contextmanager
def fused(enabled: bool) -> Iterator[None]:
    """``with fused(False): ...`` runs a block on the reference computations.

    Local to the thread or asyncio task that enters it.
    """
    token = _scoped.set(_check_bool("fused", enabled))
    try:
        yield
    finally:
        _scoped.reset(token)


def _deprecated_alias(name: str, replacement):
    """``name``, an older spelling of ``replacement`` that warns when called."""

    def alias(enabled: bool):
        new = replacement.__name__
        message = f"{name} is deprecated: use monolith_layers.{new} (one switch)"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return replacement(enabled)

    alias.__name__, alias.__doc__ = (
        name,
        f"Deprecated: the same switch as :func:`{replacement.__name__}`.",
    )
    return alias


def set_cpu_backend(name: str) -> str:
    """Which kernels CPU tensors run, ``"cpp"`` or ``"triton"``, for the whole
    process; returns the old default (``MONOLITH_LAYERS_BACKEND`` gives the first).

    ``"triton"`` runs the GPU kernels in Triton's interpreter: slow, for
    testing them without a GPU; it needs ``TRITON_INTERPRET=1`` in the
    environment before the kernels are first used, and the ``gpu`` extra.
    """
    global _default_backend
    previous = _default_backend or _environment_backend()
    _default_backend = _check_backend("set_cpu_backend", name)
    return previous


def _environment_backend() -> str:
    value = os.environ.get(BACKEND_ENV_VAR, "").strip().lower() or "cpp"
    return _check_backend(BACKEND_ENV_VAR, value)


@contextlib.contextmanager
def cpu_backend(name: str) -> Iterator[None]:
    """``with cpu_backend("triton"): ...``: :func:`set_cpu_backend` for one block,
    local to the thread or asyncio task."""
    token = _scoped_backend.set(_check_backend("cpu_backend", name))
    try:
        yield
    finally:
        _scoped_backend.reset(token)


@torch.compiler.assume_constant_result
def cpu_backend_in_use() -> str:
    """``"cpp"`` or ``"triton"``: which kernels CPU tensors run here."""
    scoped = _scoped_backend.get()
    if scoped is not None:
        return scoped
    return _default_backend or _environment_backend()


set_native = _deprecated_alias("set_native", set_fused)
native = _deprecated_alias("native", fused)


@contextlib.contextmanager
def which_paths() -> Iterator[list[tuple[str, str]]]:
    """Record which path each layer call took inside the block.

    ``with which_paths() as ran: model(batch)`` leaves ``ran`` holding
    ``(operation, path)`` pairs in call order, e.g. ``('gru', 'kernel')``,
    ``('din_attention', 'reference: tower activation Dice has no kernel')``.
    Eager calls only: under ``torch.compile`` nothing is recorded.
    """
    ran: list[tuple[str, str]] = []
    token = _recorder.set(ran)
    try:
        yield ran
    finally:
        _recorder.reset(token)


@torch.compiler.disable
def _append(op: str, path: str) -> None:
    ran = _recorder.get()
    if ran is not None:
        ran.append((op, path))


def compiling() -> bool:
    """True while ``torch.compile`` / ``torch.export`` trace the model."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    if is_compiling is None:  # pragma: no cover - older torch
        from torch._dynamo import is_compiling
    return bool(is_compiling())


def record(op: str, path: str) -> None:
    """Note that ``op`` ran on ``path`` (only inside :func:`which_paths`, and never traced)."""
    if not compiling():
        _append(op, path)


def is_jit_tracing() -> bool:
    """True under ``torch.jit.trace`` / ``torch.jit.script`` or ONNX export.

    Those need the reference computations: TorchScript and the ONNX
    exporters cannot carry the registered operators. ``torch.compile`` and
    ``torch.export`` keep them (they are opaque operators with shapes).
    """
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


def is_tracing() -> bool:
    """True under any tracer: ``torch.compile`` / ``torch.export`` too."""
    return compiling() or is_jit_tracing()


def autocasting() -> bool:
    """True inside ``torch.autocast`` (CPU or CUDA): ops pick their own precision."""
    try:
        return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")
    except TypeError:  # pragma: no cover - torch < 2.4 names them separately
        return torch.is_autocast_cpu_enabled() or torch.is_autocast_enabled()
