"""Jagged sequences: every row's real steps back to back, as TorchRec keeps them.

A batch of B variable-length sequences is ``values`` (N, F), the rows'
steps concatenated, with ``lengths`` (B,) or ``offsets`` (B + 1,). The
sequence layers (DIN, DIEN, DMR_U2I) and the recurrent helpers accept a
:class:`Jagged` (or a ``torchrec.sparse.jagged_tensor.JaggedTensor``, whose
``values()`` / ``lengths()`` it reads) wherever they take a padded sequence;
they convert it once, on entry, to the padded layout plus ``lengths``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._checks import check_integer, check_shape, check_tensor


@dataclass(frozen=True)
class Jagged:
    """``values`` (N, F) and ``lengths`` (B,) int64 with ``lengths.sum() == N``."""

    values: torch.Tensor
    lengths: torch.Tensor

    def __post_init__(self) -> None:
        where = "Jagged"
        check_tensor(where, "values", self.values)
        if self.values.dim() != 2:
            raise ValueError(
                f"{where}: values must be (N, F), got shape {tuple(self.values.shape)}"
            )
        lengths = check_integer(
            where, "lengths", check_shape(where, "lengths", self.lengths, (None,))
        )
        if len(lengths) and int(lengths.min()) < 0:
            raise ValueError(f"{where}: lengths must be >= 0, got {int(lengths.min())}")
        if int(lengths.sum()) != self.values.shape[0]:
            raise ValueError(
                f"{where}: lengths sum to {int(lengths.sum())} but values has "
                f"{self.values.shape[0]} rows"
            )
        object.__setattr__(self, "lengths", lengths)

    @classmethod
    def from_offsets(cls, values: torch.Tensor, offsets: torch.Tensor) -> Jagged:
        """From ``offsets`` (B + 1,): row b is ``values[offsets[b]:offsets[b + 1]]``."""
        offsets = check_shape("Jagged", "offsets", offsets, (None,))
        if len(offsets) == 0 or int(offsets[0]) != 0:
            raise ValueError("Jagged: offsets must start at 0 and have B + 1 entries")
        return cls(values, offsets.diff())

    @property
    def batch(self) -> int:
        return len(self.lengths)

    def to_padded(self, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(padded (B, T, F) with zeros after each row's steps, lengths (B,))``.

        ``steps`` (T) defaults to the longest row; a row longer than T is an error.
        """
        longest = int(self.lengths.max()) if self.batch else 0
        steps = longest if steps is None else steps
        if longest > steps:
            raise ValueError(f"Jagged: a row has {longest} steps, more than T = {steps}")
        device = self.values.device
        rows = torch.repeat_interleave(torch.arange(self.batch, device=device), self.lengths)
        starts = torch.cumsum(self.lengths, 0) - self.lengths
        cols = torch.arange(len(rows), device=device) - starts.index_select(0, rows)
        padded = self.values.new_zeros(self.batch, steps, self.values.shape[1])
        return padded.index_put((rows, cols), self.values), self.lengths


def as_jagged(value: Any) -> Jagged | None:
    """A :class:`Jagged` for a Jagged or a TorchRec ``JaggedTensor``; None for anything else."""
    if isinstance(value, Jagged):
        return value
    if isinstance(value, torch.Tensor):  # a padded tensor (and quick for tracers to see)
        return None
    if callable(getattr(value, "values", None)) and callable(getattr(value, "lengths", None)):
        return Jagged(value.values(), value.lengths())
    return None


def unjag(
    where: str, value: Any, mask: Any, lengths: Any, steps: int | None = None
) -> tuple[Any, Any]:
    """``(padded value, lengths)`` when ``value`` is jagged, else ``(value, lengths)``."""
    jagged = as_jagged(value)
    if jagged is None:
        return value, lengths
    if mask is not None or lengths is not None:
        raise ValueError(f"{where}: a jagged input carries its own lengths; pass no mask / lengths")
    return jagged.to_padded(steps)
