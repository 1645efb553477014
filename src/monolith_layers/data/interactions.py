"""The one in-memory form every loader produces: an interaction log.

:class:`Interactions` holds one row per event (a user saw or acted on an
item at a time) with a 0/1 label (click or not), plus each item's category.
Ids are dense: users ``0..num_users-1``, items ``1..num_items`` and
categories ``1..num_categories``, so that 0 is free for padding in the
item and category embedding tables (``padding_idx=0``); category 0 also
means "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """A data file is missing, malformed, or leaves nothing to train on."""


@dataclass
class Interactions:
    """An interaction log with dense ids (see the module docstring).

    Attributes:
        name: where it came from (``'synthetic'``, ``'ml-100k'``, a path).
        user, item, label: (N,) int arrays; label is 1 for a click.
        timestamp: (N,) float64 event times (any unit, only the order matters).
        item_category: (num_items + 1,) category of every item id (index 0 unused).
        implicit: every event is a click (reviews, purchases): training
            samples then pair each next item with sampled negatives.
        item_names: optional original item ids, ``item_names[i - 1]`` for item ``i``.
        category_names: the same for categories; ``user_names[u]`` for user ``u``.
    """

    name: str
    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    label: np.ndarray
    item_category: np.ndarray
    implicit: bool = False
    item_names: list[str] = field(default_factory=list)
    category_names: list[str] = field(default_factory=list)
    user_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.user)
        for arr in ("item", "timestamp", "label"):
            if len(getattr(self, arr)) != n:
                raise DataError(
                    f"{self.name}: column {arr!r} has {len(getattr(self, arr))} rows, user has {n}"
                )
        if n == 0:
            raise DataError(f"{self.name}: no interactions left (after filtering)")

    @property
    def num_users(self) -> int:
        return int(self.user.max()) + 1

    @property
    def num_items(self) -> int:
        return len(self.item_category) - 1

    @property
    def num_categories(self) -> int:
        return int(self.item_category.max()) if len(self.item_category) else 0

    def __len__(self) -> int:
        return len(self.user)

    def summary(self) -> str:
        return (
            f"{self.name}: {len(self):,} interactions, {self.num_users:,} users, "
            f"{self.num_items:,} items, {self.num_categories:,} categories, "
            f"click rate {self.label.mean():.3f}"
        )


def dense_ids(values: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary ids to ``start, start+1, ...`` in sorted order of the originals.

    Returns ``(codes, originals)`` with ``originals[code - start]`` the original id.
    """
    originals, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64) + start, originals


def from_columns(
    name: str,
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray,
    label: np.ndarray,
    item_category: dict | None = None,
    implicit: bool = False,
) -> Interactions:
    """Build :class:`Interactions` from raw columns with any id type.

    ``item_category`` maps an original item id to a category name (items
    missing from it get category 0, "unknown").
    """
    if len(user) == 0:
        raise DataError(f"{name}: no interactions left (after filtering)")
    users, user_originals = dense_ids(np.asarray(user), 0)
    items, item_originals = dense_ids(np.asarray(item), 1)
    category_of_item = np.zeros(len(item_originals) + 1, dtype=np.int64)
    category_names: list[str] = []
    if item_category:
        names = [item_category.get(original) for original in item_originals.tolist()]
        known = sorted({n for n in names if n is not None})
        code = {n: i + 1 for i, n in enumerate(known)}
        category_of_item[1:] = [code.get(n, 0) for n in names]
        category_names = known
    return Interactions(
        name=name,
        user=users,
        item=items,
        timestamp=np.asarray(timestamp, dtype=np.float64),
        label=np.asarray(label, dtype=np.int64),
        item_category=category_of_item,
        implicit=implicit,
        item_names=[str(x) for x in item_originals.tolist()],
        category_names=category_names,
        user_names=[str(x) for x in user_originals.tolist()],
    )
