"""The packed layout the recurrences run on: real steps only.

Rows are sorted by length, longest first, and the real steps are laid out
step after step (time-major): step t's block holds the ``n_t`` rows whose
length exceeds t, and it is a prefix of step t-1's block. This is the layout
of ``torch.nn.utils.rnn.PackedSequence``; a recurrence over it computes no
padded step at all, and a row's real steps need not be left-aligned in the
padded tensor (a mask with holes is packed in the order of its real steps).

The scans keep their states in one buffer of ``B + N`` rows (N = number of
real steps): first every sorted row's initial state, then the packed states,
step t's block at rows ``B + offsets[t]``. The state a block row i reads at
step t is therefore row ``prev_base(t) + i``, with ``prev_base(0) = 0`` and
``prev_base(t) = B + offsets[t - 1]``.

Without a mask and lengths (every row full) the packed layout is the plain
time-major transpose, and packing is a copy, never a gather.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

# Rows of a time chunk (about this many elements per chunk buffer): the C++
# loops do not revisit a chunk's buffers step after step, and gain from fewer
# chunks (fewer bulk ops): 1 << 18 ran DIEN fwd+bwd (U 32, T 50, 30 % real)
# 1.25-1.35x faster than 1 << 16 at B = 256 and 1024; 1 << 20 was no better.
CHUNK_ELEMENTS = 1 << 18


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

    def prev_base(self, t: int) -> int:
        return 0 if t == 0 else self.batch + self.offsets[t - 1]

    def chunks(self, width: int) -> list[tuple[int, int]]:
        """Consecutive step ranges ``(t0, t1)`` of about ``CHUNK_ELEMENTS / width`` rows."""
        limit = max(1, CHUNK_ELEMENTS // max(1, width))
        ranges, start = [], 0
        for t in range(1, len(self.sizes) + 1):
            if t == len(self.sizes) or self.offsets[t + 1] - self.offsets[start] > limit:
                ranges.append((start, t))
                start = t
        return ranges

    def forward_plan(self, t0: int, t1: int) -> torch.Tensor:
        """(t1 - t0, 4) int64 rows ``(n_t, prev_base, B + offsets[t], offsets[t] - offsets[t0])``
        for the native forward loop: rows alive, where they read and write the
        states buffer, and where their inputs start in the chunk."""
        r0 = self.offsets[t0]
        rows = [
            (self.sizes[t], self.prev_base(t), self.batch + self.offsets[t], self.offsets[t] - r0)
            for t in range(t0, t1)
        ]
        return torch.tensor(rows, dtype=torch.int64).view(-1, 4)

    def backward_plan(self, t0: int, t1: int) -> torch.Tensor:
        """(t1 - t0, 2) int64 rows ``(n_t, offsets[t] - offsets[t0])`` for the native backward loop."""
        r0 = self.offsets[t0]
        rows = [(self.sizes[t], self.offsets[t] - r0) for t in range(t0, t1)]
        return torch.tensor(rows, dtype=torch.int64).view(-1, 2)

    def prev_states(self, states: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """The states steps ``t0 .. t1-1`` read, row-aligned with their packed rows."""
        sizes = self.sizes
        before = self.batch if t0 == 0 else sizes[t0 - 1]
        if all(sizes[t] == before for t in range(t0, t1)):  # one contiguous run
            base = self.prev_base(t0)
            return states[base : base + self.offsets[t1] - self.offsets[t0]]
        parts = [states[self.prev_base(t) : self.prev_base(t) + sizes[t]] for t in range(t0, t1)]
        return torch.cat(parts)

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


def plan_packing(
    batch: int,
    steps: int,
    mask: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> Packing:
    """The packing of a (B, T) batch given a bool ``mask`` or int ``lengths`` (validated).

    With ``lengths`` the real steps are the first ``lengths[b]`` of each row;
    with ``mask`` they are the True slots, in order (holes allowed).
    """
    if mask is None and lengths is None:
        return dense_packing(batch, steps, device)
    if mask is not None:
        device = mask.device
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
    if mask is None:
        cols = step_ids.unsqueeze(1).expand(longest, batch)
    else:  # the t-th real slot of each row: real slots sort first, in order
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
    packing = plan_packing(batch, steps, mask)
    _recent.insert(0, (weakref.ref(mask), key, packing))
    del _recent[_RECENT:]
    return packing
