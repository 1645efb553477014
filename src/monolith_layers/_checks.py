"""Input checks shared by every layer: one wording for every shape error."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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

    Float masks follow Monolith: a position is kept where ``mask >= 1``.
    """
    mask = check_shape(where, "mask", mask, (batch, steps))
    if mask.dtype == torch.bool:
        return mask
    return mask >= 1
