"""``merge_tensor_list``: how Monolith's feature layers shape their output."""

from __future__ import annotations

from collections.abc import Sequence

import torch

MERGE_TYPES = ("concat", "stack", None)

_WHERE = "merge_tensor_list"


def _wrap(tensor: torch.Tensor, keep_list: bool):
    return [tensor] if keep_list else tensor


def _merge_single(
    tensor: torch.Tensor,
    merge_type: str | None,
    num_feature: int | None,
    axis: int,
    keep_list: bool,
):
    if tensor.dim() == 3:  # (B, F, E)
        if merge_type == "stack":
            return _wrap(tensor, keep_list)
        if merge_type == "concat":
            # Sizes spelled out: reshape(B, -1) is ambiguous when B = 0.
            flat = tensor.reshape(tensor.shape[0], tensor.shape[1] * tensor.shape[2])
            return _wrap(flat, keep_list)
        _check_axis(axis, 3)
        return list(torch.unbind(tensor, dim=axis))
    if tensor.dim() == 2 and num_feature is not None and num_feature > 1:  # (B, F*E)
        if tensor.shape[1] % num_feature:
            raise ValueError(
                f"{_WHERE}: a (B, F*E) tensor of width {tensor.shape[1]} cannot be split into "
                f"num_feature={num_feature} equal features"
            )
        if merge_type == "concat":
            return _wrap(tensor, keep_list)
        width = tensor.shape[1] // num_feature
        stacked = tensor.reshape(tensor.shape[0], num_feature, width)
        if merge_type == "stack":
            return _wrap(stacked, keep_list)
        _check_axis(axis, 3)
        return list(torch.unbind(stacked, dim=axis))
    if tensor.dim() == 2:
        return _wrap(tensor, keep_list)
    raise ValueError(
        f"{_WHERE}: a single tensor must be (B, F, E) or (B, E), got shape {tuple(tensor.shape)}"
    )


def merge_tensor_list(
    tensor_list: torch.Tensor | Sequence[torch.Tensor],
    merge_type: str | None = "concat",
    num_feature: int | None = None,
    axis: int = 1,
    keep_list: bool = False,
):
    """Merge one tensor or a list of tensors, exactly as Monolith does.

    A single tensor:
      * (B, F, E): ``'stack'`` keeps it, ``'concat'`` gives (B, F*E), ``None``
        gives the list of F tensors (B, E) (unbound along ``axis``).
      * (B, F*E) with ``num_feature`` F > 1: ``'stack'`` gives (B, F, E),
        ``'concat'`` keeps it, ``None`` gives F tensors (B, E).
      * (B, E) otherwise: returned as it is.
    A list of several tensors: ``'stack'`` / ``'concat'`` along ``axis``,
    ``None`` returns the list. ``keep_list`` wraps a merged tensor in a list.
    """
    if merge_type not in MERGE_TYPES:
        raise ValueError(
            f"{_WHERE}: merge_type must be one of {list(MERGE_TYPES)}, got {merge_type!r}"
        )
    if num_feature is not None and (
        isinstance(num_feature, bool) or not isinstance(num_feature, int) or num_feature <= 0
    ):
        raise ValueError(
            f"{_WHERE}: num_feature must be a positive int or None, got {num_feature!r}"
        )
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{_WHERE}: axis must be an int, got {axis!r}")
    if not isinstance(tensor_list, (torch.Tensor, list, tuple)):
        raise TypeError(
            f"{_WHERE}: tensor_list must be a tensor or a list of tensors, "
            f"got {type(tensor_list).__name__}"
        )
    tensors = [tensor_list] if isinstance(tensor_list, torch.Tensor) else list(tensor_list)
    if not tensors:
        raise ValueError(f"{_WHERE}: tensor_list is empty")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{_WHERE}: tensor_list[{i}] must be a torch.Tensor, got {type(t).__name__}"
            )
    if len(tensors) == 1:
        return _merge_single(tensors[0], merge_type, num_feature, axis, keep_list)
    if merge_type == "stack":
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(f"{_WHERE}: 'stack' needs tensors of one shape, got {sorted(shapes)}")
        _check_axis(axis, tensors[0].dim() + 1)  # stack adds a dimension
        return _wrap(torch.stack(tensors, dim=axis), keep_list)
    if merge_type == "concat":
        _check_concat(tensors, axis)
        return _wrap(torch.cat(tensors, dim=axis), keep_list)
    return tensors


def _check_axis(axis: int, rank: int) -> None:
    """``axis`` names a dimension of a rank-``rank`` tensor (negative counts from the end)."""
    if not -rank <= axis < rank:
        raise ValueError(
            f"{_WHERE}: axis must be in [{-rank}, {rank - 1}] for tensors of rank {rank}, "
            f"got {axis}"
        )


def _check_concat(tensors: list[torch.Tensor], axis: int) -> None:
    """Same rank, and the same size in every dimension but ``axis``."""
    first = tuple(tensors[0].shape)
    for i, t in enumerate(tensors[1:], 1):
        if t.dim() != len(first):
            raise ValueError(
                f"{_WHERE}: 'concat' needs tensors of one rank; tensor_list[0] has shape "
                f"{first}, tensor_list[{i}] has shape {tuple(t.shape)}"
            )
    _check_axis(axis, len(first))
    along = axis % len(first)
    for i, t in enumerate(tensors[1:], 1):
        others = [d for k, d in enumerate(t.shape) if k != along]
        if others != [d for k, d in enumerate(first) if k != along]:
            raise ValueError(
                f"{_WHERE}: 'concat' along axis {axis} needs equal sizes elsewhere; "
                f"tensor_list[0] has shape {first}, tensor_list[{i}] has shape {tuple(t.shape)}"
            )
