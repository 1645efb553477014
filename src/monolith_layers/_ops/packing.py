"""The packed layout the recurrences run on: real steps only.

Rows are sorted by length, longest first, and the real steps are laid out
step after step (time-major): step t's block holds the ``n_t`` rows whose
length exceeds t, and it is a prefix of step t-1's block. This is the layout
of ``torch.nn.utils.rnn.PackedSequence``; a recurrence over it computes no
padded step at all, and a row's real steps need not be left-aligned in the
padded tensor (a mask with holes is packed in the order of its real steps).

The recurrences keep their states in one buffer of ``B + N`` rows (N = number
of real steps): first every sorted row's initial state, then the packed
states, step t's block at rows ``B + offsets[t]`` (csrc/recurrences.cpp
walks it; this module moves values in and out).

Without a mask and lengths (every row full) the packed layout is the plain
time-major transpose, and packing is a copy, never a gather.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Packing:
    """Where every real step of a (B, T) padded batch lives in the packed layout.

    ``sizes[t]`` = n_t (rows alive at step t, only the steps some row has);
    ``offsets[t]`` = first packed row of step t (``offsets[-1]`` = N);
    ``perm[i]`` = original row of sorted row i (None: identity);
    ``src_index[p]`` = flat ``b * T + t`` index of packed row p in the padded
    tensor (None: every row is full, packing is a transpose);
    ``final_index[b]`` = row of the states buffer holding original row b's
    final state.
    """

    batch: int
    steps: int
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    perm: torch.Tensor | None
    src_index: torch.Tensor | None
    final_index: torch.Tensor

    @property
    def total(self) -> int:
        """N, the number of real steps."""
        return self.offsets[-1]

    @property
    def dense(self) -> bool:
        return self.src_index is None

    # -- moving between the padded (B, T, ...) layout and the packed one --

    def pack(self, values: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (N, F), real steps only (differentiable)."""
        if self.dense:
            return values.transpose(0, 1).reshape(self.total, values.shape[-1])
        flat = values.reshape(self.batch * self.steps, values.shape[-1])
        return flat.index_select(0, self.src_index)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (B, T, F), contiguous, with zeros at padded steps."""
        width = packed.shape[-1]
        if self.dense:
            return packed.view(self.steps, self.batch, width).transpose(0, 1).contiguous()
        flat = packed.new_zeros(self.batch * self.steps, width)
        return flat.index_copy(0, self.src_index, packed).view(self.batch, self.steps, width)

    def sort_rows(self, values: torch.Tensor) -> torch.Tensor:
        """(B, ...) in original row order -> sorted row order."""
        return values if self.perm is None else values.index_select(0, self.perm)

    def unsort_rows(self, values: torch.Tensor) -> torch.Tensor:
        """(B, ...) in sorted row order -> original row order."""
        if self.perm is None:
            return values
        return torch.empty_like(values).index_copy_(0, self.perm, values)

    def final_states(self, states: torch.Tensor) -> torch.Tensor:
        """(B, U): each original row's state after its last real step."""
        return states.index_select(0, self.final_index)


def dense_packing(batch: int, steps: int, device: torch.device) -> Packing:
    """Every row real for all ``steps``: the packed layout is the time-major one."""
    offsets = tuple(t * batch for t in range(steps + 1))
    last = batch + (steps - 1) * batch if steps else 0
    final = torch.arange(last, last + batch, device=device)
    return Packing(batch, steps, (batch,) * steps, offsets, None, None, final)


def plan_packing(mask: torch.Tensor) -> Packing:
    """The packing of a (B, T) batch whose real steps are ``mask``'s True slots,
    in order (holes allowed)."""
    (batch, steps), device = mask.shape, mask.device
    lengths = mask.sum(dim=1)
    counts = torch.bincount(lengths, minlength=steps + 1)
    # n_t = rows longer than t; one transfer of T + 1 small integers.
    alive = (batch - counts.cumsum(0)).tolist()
    longest = next((t for t, n in enumerate(alive) if n == 0), steps)
    sizes = tuple(alive[:longest])
    if longest == steps and (not sizes or sizes[-1] == batch):
        return dense_packing(batch, steps, device)  # every row full: no gather needed
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    sorted_lengths, perm = torch.sort(lengths, descending=True, stable=True)
    step_ids = torch.arange(longest, device=device)
    # The t-th real slot of each row: real slots sort first, in order.
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    cols = order.index_select(0, perm)[:, :longest].t()
    real = step_ids.unsqueeze(1) < sorted_lengths.unsqueeze(0)  # (T', B), a prefix per step
    src_index = (perm.unsqueeze(0) * steps + cols)[real]
    # Sorted row i ends at packed row offsets[L_i - 1] + i, or in its initial state.
    rows = torch.arange(batch, device=device)
    final_sorted = rows
    if longest:
        starts = torch.tensor(offsets[:-1], device=device)
        last = batch + starts[(sorted_lengths - 1).clamp_min(0)] + rows
        final_sorted = torch.where(sorted_lengths > 0, last, rows)
    final_index = torch.empty_like(final_sorted).index_copy_(0, perm, final_sorted)
    return Packing(batch, steps, sizes, tuple(offsets), perm, src_index, final_index)


_recent: list[tuple[weakref.ref, tuple[int, int, int], Packing]] = []
_RECENT = 4


def plan(
    mask: torch.Tensor | None, batch: int, steps: int, device: torch.device | None = None
) -> Packing:
    """The packing of a (B, T) batch with a bool ``mask`` (None: every step real).

    Planned once per mask: DIEN's GRU and AGRU and both their backwards read
    the same mask tensor, so the last few plans are kept, keyed by the mask
    object itself (a weak reference, so a freed mask's plan is never reused
    for a new tensor at the same address) and its version counter (an
    in-place change to the mask plans anew).
    """
    if mask is None:
        return dense_packing(batch, steps, device)
    key = (batch, steps, mask._version)
    for ref, seen, packing in _recent:
        if ref() is mask and seen == key:
            return packing
    packing = plan_packing(mask)
    _recent.insert(0, (weakref.ref(mask), key, packing))
    del _recent[_RECENT:]
    return packing
