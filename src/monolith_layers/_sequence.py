"""Input checks and the plain step loop shared by the recurrent helpers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._checks import check_float, check_integer, check_mask, check_shape


def zero_padded(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``values`` (B, T, ...) with every padded step replaced by zeros.

    A select, not a multiply: a NaN or Inf in a padded slot (whatever the
    caller left there) must not reach a result or a gradient, and
    ``0 * nan`` is ``nan``. The gradient of a padded slot is exactly zero.
    """
    if mask is None:
        return values
    keep = mask.reshape(mask.shape + (1,) * (values.dim() - mask.dim()))
    return torch.where(keep, values, values.new_zeros(()))


def check_lengths(where: str, lengths: object, batch: int, steps: int) -> torch.Tensor:
    """Per-row lengths (B,), integers in [0, T]: the first ``lengths[b]`` steps are real.

    Returns them as int64 on their own device.
    """
    lengths = check_integer(where, "lengths", check_shape(where, "lengths", lengths, (batch,)))
    if batch:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 0 or high > steps:
            raise ValueError(
                f"{where}: lengths must lie in [0, {steps}] (T = {steps}), "
                f"got values from {low} to {high}"
            )
    return lengths


def lengths_to_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True on each row's first ``lengths[b]`` steps."""
    return torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)


def check_padding(
    where: str, mask: object, lengths: object, batch: int, steps: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate the two ways of marking padding; returns ``(mask, lengths)``.

    At most one may be given. ``mask`` (B, T) comes back as bool (True =
    real step), ``lengths`` (B,) as int64; the other stays None.
    """
    if mask is not None and lengths is not None:
        raise ValueError(f"{where}: pass mask or lengths, not both")
    if mask is not None:
        return check_mask(where, mask, batch, steps), None
    if lengths is not None:
        return None, check_lengths(where, lengths, batch, steps)
    return None, None


def padding_mask(
    mask: torch.Tensor | None, lengths: torch.Tensor | None, steps: int
) -> torch.Tensor | None:
    """The (B, T) bool mask for validated ``mask`` / ``lengths`` (None: no padding)."""
    return lengths_to_mask(lengths, steps) if lengths is not None else mask


def check_sequence(
    where: str,
    inputs: object,
    input_dim: int,
    units: int,
    init_state: object,
    mask: object,
    dtype: torch.dtype | None = None,
    lengths: object = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Validate inputs (B, T, D), init_state (B, U) and mask (B, T) or lengths (B,).

    Returns ``(inputs, init_state, mask, lengths)``: the state defaulting to
    zeros in the inputs' dtype and device, the mask as bool (True = real
    step), the lengths as int64 (at most one of the two is not None).
    ``dtype`` is the cell's weight dtype, which inputs and state must share.
    """
    inputs = check_shape(where, "inputs", inputs, (None, None, input_dim))
    check_float(where, "inputs", inputs, dtype)
    batch, steps = inputs.shape[:2]
    if init_state is None:
        init_state = inputs.new_zeros(batch, units)
    else:
        init_state = check_shape(where, "init_state", init_state, (batch, units))
        check_float(where, "init_state", init_state, dtype)
    mask, lengths = check_padding(where, mask, lengths, batch, steps)
    return inputs, init_state, mask, lengths


def step_loop(
    step: Callable[[int, torch.Tensor], torch.Tensor],
    steps: int,
    state: torch.Tensor,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``state = step(t, state)`` for t < steps, honouring the padding mask.

    A padded step keeps the state and outputs zeros. Returns ``(outputs (B,
    T, U), final_state (B, U))``. This is the obviously-correct reference
    the fused paths are tested against.
    """
    outputs = []
    for t in range(steps):
        new_state = step(t, state)
        if mask is None:
            state = new_state
            outputs.append(new_state)
        else:
            keep = mask[:, t : t + 1]
            state = torch.where(keep, new_state, state)
            outputs.append(torch.where(keep, new_state, torch.zeros_like(new_state)))
    if not outputs:
        return state.new_zeros(state.shape[0], 0, state.shape[1]), state
    return torch.stack(outputs, dim=1), state


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` that gives masked-out positions exactly zero weight.

    ``mask`` (broadcastable to ``logits``) is True where a position is real. A
    slice with no real position gives all zeros, never NaN, and no finite
    "minus infinity" constant is used, so float16 / bfloat16 are safe.
    """
    if mask is None or logits.shape[dim] == 0:
        return torch.softmax(logits, dim=dim)
    logits = logits.masked_fill(~mask, float("-inf"))
    peak = logits.amax(dim=dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)).detach()
    weights = torch.exp(logits - peak)
    total = weights.sum(dim=dim, keepdim=True)
    return weights / torch.where(total > 0, total, torch.ones_like(total))
