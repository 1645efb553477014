"""Input checks shared by every layer: one wording for every shape error."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._ops.switch import autocasting, is_tracing


def _describe(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"


def check_tensor(where: str, arg: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: {arg} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_shape(
    where: str, arg: str, value: object, expected: Sequence[int | None]
) -> torch.Tensor:
    """Check rank and every known dimension; ``None`` in ``expected`` matches any size."""
    tensor = check_tensor(where, arg, value)
    actual = tuple(tensor.shape)
    if len(actual) != len(expected) or any(
        e is not None and e != a for e, a in zip(expected, actual, strict=False)
    ):
        raise ValueError(
            f"{where}: {arg} must have shape {_describe(expected)}, got {_describe(actual)}"
        )
    return tensor


def check_positive_int(where: str, arg: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: {arg} must be a positive int, got {value!r}")
    return value


def check_dims_list(where: str, arg: str, value: object) -> list[int]:
    """A non-empty list of positive ints, e.g. ``hidden_units`` / ``output_dims``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise ValueError(f"{where}: {arg} must be a non-empty list of positive ints, got {value!r}")
    for dim in value:
        check_positive_int(where, f"{arg} entry", dim)
    return [int(d) for d in value]


def check_choice(where: str, arg: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{where}: {arg} must be one of {list(choices)}, got {value!r}")


def check_mask(where: str, mask: object, batch: int, steps: int) -> torch.Tensor:
    """A (B, T) padding mask; returns a bool tensor, True where a step is real.

    Float masks follow Monolith: a position is kept where ``mask >= 1``. A NaN
    in a float mask is an error: ``NaN >= 1`` is false, so it would silently
    mean padding (the check costs a sync, so tracers skip it).
    """
    mask = check_shape(where, "mask", mask, (batch, steps))
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() and not is_tracing() and bool(torch.isnan(mask).any()):
        raise ValueError(
            f"{where}: mask holds NaN at {int(torch.isnan(mask).sum())} positions; a float mask "
            "must hold 1 (real step) or 0 (padding)"
        )
    return mask >= 1


def check_integer(where: str, arg: str, tensor: torch.Tensor) -> torch.Tensor:
    """An integer (not bool) tensor, returned as int64: lengths, offsets."""
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{where}: {arg} must be an integer tensor, got {tensor.dtype}")
    return tensor.long()


def check_float(
    where: str, arg: str, value: object, expected: torch.dtype | None = None
) -> torch.Tensor:
    """A floating-point tensor, of dtype ``expected`` when one is given.

    Inside ``torch.autocast`` any floating dtype passes: mixing them is what
    autocast was asked to do.

    Layers never cast their inputs silently: a float64 input to a float32
    layer (or an integer input anywhere) is an error that says how to fix it.
    """
    tensor = check_tensor(where, arg, value)
    if not tensor.is_floating_point():
        raise TypeError(f"{where}: {arg} must be a floating-point tensor, got {tensor.dtype}")
    if expected is not None and tensor.dtype != expected and not autocasting():
        raise TypeError(
            f"{where}: {arg} has dtype {tensor.dtype} but the layer's weights are {expected}; "
            f"convert the input (.to({expected})) or the layer (.to({tensor.dtype}))"
        )
    return tensor


def check_finite_number(
    where: str, arg: str, value: object, *, low: float | None = None, positive: bool = False
) -> float:
    """A finite real number; ``positive``: > 0; ``low``: >= low."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {arg} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where}: {arg} must be > 0, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{where}: {arg} must be >= {low}, got {value!r}")
    return float(value)


def resolve(where: str, arg: str, getter: Callable[..., Any], value: Any, **kwargs: Any) -> Any:
    """``getter(value)`` (an activation / initializer / regularizer look-up) with
    errors that name the layer and the argument."""
    try:
        return getter(value, **kwargs)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{where}: {arg}: {err}") from None
