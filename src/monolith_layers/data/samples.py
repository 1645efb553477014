"""From an interaction log to CTR training samples with behaviour histories.

Each event becomes one sample: its user, the target item and category, its
label, and the user's clicked items *before* it (most recent ``max_len``,
oldest first) as the behaviour history, left-aligned and padded with item 0
under a (B, T) mask. Events are ordered per user by time, ties broken by
item id and then by file order (a fixed rule, whatever order the file has).

Splits are by time, per user: ``'leave_last_out'`` keeps each user's last
event for test and the one before for validation (users with fewer than
three events train only); ``'time'`` cuts the global time line at the
``1 - valid_fraction - test_fraction`` and ``1 - test_fraction`` quantiles.
Histories always come from the full log, so a test sample sees every click
before it.

Implicit data (every event a click: reviews, purchases) gets ``negatives``
sampled items per event, each with the same history and label 0 (the DIN /
DIEN papers' set-up). For DIEN's auxiliary loss each batch also carries a
sampled negative item for every history position (``with_negative_history``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import JsonConfig
from .interactions import DataError, Interactions

SPLITS = ("leave_last_out", "time")


@dataclass
class DataConfig(JsonConfig):
    """How samples are built from an interaction log (JSON-serialisable).

    Args:
        max_len: T, the history cap (the most recent clicks are kept).
        split: ``'leave_last_out'`` or ``'time'``.
        valid_fraction, test_fraction: of the time line, for ``split='time'``.
        negatives: sampled negatives per event for implicit data.
        click_threshold: ratings at or above it are clicks (explicit data).
        seed: negatives and per-batch history negatives.
        shuffle_buffer: sample logs (``--schema``): rows shuffled together in memory.
        workers: sample logs: DataLoader worker processes building batches (0: in
            the training process).
    """

    max_len: int = 50
    split: str = "leave_last_out"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    negatives: int = 1
    click_threshold: float = 4.0
    seed: int = 0
    shuffle_buffer: int = 32_768
    workers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_len, bool) or not isinstance(self.max_len, int) or self.max_len < 1:
            raise DataError(f"DataConfig: max_len must be a positive int, got {self.max_len!r}")
        if self.split not in SPLITS:
            raise DataError(f"DataConfig: split must be one of {list(SPLITS)}, got {self.split!r}")
        fractions = (self.valid_fraction, self.test_fraction)
        if not all(0 < f < 1 for f in fractions) or sum(fractions) >= 1:
            raise DataError(
                f"DataConfig: valid_fraction and test_fraction must be in (0, 1) with a sum < 1, "
                f"got {fractions}"
            )
        for name, least in (("shuffle_buffer", 1), ("workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise DataError(f"DataConfig: {name} must be an int >= {least}, got {value!r}")
        if (
            isinstance(self.negatives, bool)
            or not isinstance(self.negatives, int)
            or self.negatives < 0
        ):
            raise DataError(f"DataConfig: negatives must be an int >= 0, got {self.negatives!r}")


@dataclass
class _Log:
    """The log sorted per user by time, with each event's history span."""

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    timestamp: np.ndarray
    clicked_items: np.ndarray  # every click, in log order: histories are slices of it
    history_end: np.ndarray  # (N,) clicks of the user strictly before the event ...
    history_len: np.ndarray  # (N,) ... of which the last history_len form its history


def _sorted_log(log: Interactions, max_len: int) -> _Log:
    order = np.lexsort((np.arange(len(log)), log.item, log.timestamp, log.user))
    user, item, label = log.user[order], log.item[order], log.label[order]
    clicks = label > 0
    clicks_before = np.cumsum(clicks) - clicks  # global index of the next click
    first_of_user = np.r_[True, user[1:] != user[:-1]]
    user_start = np.maximum.accumulate(np.where(first_of_user, clicks_before, 0))
    history_len = np.minimum(clicks_before - user_start, max_len)
    return _Log(
        user=user,
        item=item,
        label=label,
        timestamp=log.timestamp[order],
        clicked_items=item[clicks],
        history_end=clicks_before,
        history_len=history_len,
    )


def _split_ids(sorted_log: _Log, config: DataConfig) -> np.ndarray:
    """0 train, 1 valid, 2 test for every event."""
    if config.split == "time":
        cut_valid, cut_test = np.quantile(
            sorted_log.timestamp,
            [1 - config.valid_fraction - config.test_fraction, 1 - config.test_fraction],
        )
        return np.where(
            sorted_log.timestamp > cut_test, 2, np.where(sorted_log.timestamp > cut_valid, 1, 0)
        )
    user = sorted_log.user
    last_of_user = np.r_[user[1:] != user[:-1], True]
    # Rank from the end within each user: count down from each user's last event.
    ends = np.flatnonzero(last_of_user)
    starts = np.r_[0, ends[:-1] + 1]
    sizes = ends - starts + 1
    position_from_end = np.repeat(ends, sizes) - np.arange(len(user))
    enough = np.repeat(sizes >= 3, sizes)
    split = np.zeros(len(user), dtype=np.int64)
    split[enough & (position_from_end == 0)] = 2
    split[enough & (position_from_end == 1)] = 1
    return split


class CTRDataset(Dataset):
    """Samples of one split; ``dataset[indices]`` returns a whole batch.

    A batch is a dict of tensors: ``user`` (B,), ``item`` (B,), ``category``
    (B,), ``label`` (B,) float, ``history`` (B, T) item ids, ``history_category``
    (B, T), ``mask`` (B, T) bool (True = real step, left-aligned) and, with
    ``with_negative_history``, ``negative_history`` / ``negative_history_category``
    (B, T): a sampled item per position for DIEN's auxiliary loss.
    """

    def __init__(
        self,
        name: str,
        user: np.ndarray,
        item: np.ndarray,
        label: np.ndarray,
        history_end: np.ndarray,
        history_len: np.ndarray,
        clicked_items: np.ndarray,
        item_category: np.ndarray,
        max_len: int,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.user, self.item, self.label = user, item, label
        self.history_end, self.history_len = history_end, history_len
        self.clicked_items = clicked_items
        self.item_category = item_category
        self.max_len = max_len
        self.with_negative_history = False
        self._seed = seed
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        lengths = self.history_len[rows]
        steps = np.arange(self.max_len)
        mask = steps < lengths[:, None]
        positions = (self.history_end[rows] - lengths)[:, None] + steps
        # Padded slots read item 0 (the padding id) instead of a neighbour's clicks.
        safe = np.where(mask, positions, 0)
        history = np.where(mask, self.clicked_items[safe] if len(self.clicked_items) else 0, 0)
        batch = {
            "user": torch.from_numpy(self.user[rows]),
            "item": torch.from_numpy(self.item[rows]),
            "category": torch.from_numpy(self.item_category[self.item[rows]]),
            "label": torch.from_numpy(self.label[rows].astype(np.float32)),
            "history": torch.from_numpy(history),
            "history_category": torch.from_numpy(self.item_category[history]),
            "mask": torch.from_numpy(mask),
        }
        if self.with_negative_history:
            negatives = self._rng.integers(1, len(self.item_category), size=history.shape)
            negatives = np.where(mask, negatives, 0)
            batch["negative_history"] = torch.from_numpy(negatives)
            batch["negative_history_category"] = torch.from_numpy(self.item_category[negatives])
        return batch

    def start_epoch(self, epoch: int) -> None:
        """Draw this epoch's history negatives from a stream of their own, a function
        of the dataset's seed and the epoch only: a run resumed at epoch k samples
        what an uninterrupted run samples there."""
        self._rng = np.random.default_rng((self._seed, epoch))

    def loader(
        self,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        sampler=None,
        pin_memory: bool = False,
    ) -> DataLoader:
        """A DataLoader of whole batches (built vectorised by ``__getitems__``).

        ``sampler`` (e.g. a ``DistributedSampler``) replaces ``shuffle``;
        ``pin_memory``: batches in page-locked memory, for non-blocking copies to a GPU.
        """
        common = {"batch_size": batch_size, "collate_fn": _whole_batch, "pin_memory": pin_memory}
        if sampler is not None:
            return DataLoader(self, sampler=sampler, **common)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(self, shuffle=shuffle, generator=generator, **common)

    def subset(self, rows: np.ndarray) -> CTRDataset:
        """The samples ``rows`` of this split (same histories), e.g. one rank's share."""
        part = CTRDataset(
            self.name,
            self.user[rows],
            self.item[rows],
            self.label[rows],
            self.history_end[rows],
            self.history_len[rows],
            self.clicked_items,
            self.item_category,
            self.max_len,
            seed=self._seed,
        )
        part.with_negative_history = self.with_negative_history
        return part

    def check_evaluable(self) -> None:
        """AUC needs clicks and non-clicks: raise :class:`DataError` when one is absent."""
        if len(self.label) == 0 or self.label.min() == self.label.max():
            only = "no samples" if len(self.label) == 0 else f"every label is {int(self.label[0])}"
            raise DataError(
                f"{self.name}: {only}; AUC needs both clicks and non-clicks (check click_threshold)"
            )

    def positives(self) -> float:
        return float(self.label.mean()) if len(self.label) else 0.0


def _whole_batch(batch):
    return batch


def _with_negatives(log: _Log, rows: np.ndarray, config: DataConfig, num_items: int, rng):
    """Each implicit event, plus ``config.negatives`` copies with random items, label 0."""
    k = config.negatives
    if k == 0:
        return rows, log.item[rows], log.label[rows]
    repeated = np.repeat(rows, k)
    sampled = rng.integers(1, num_items + 1, size=len(repeated))
    clash = sampled == log.item[repeated]
    sampled[clash] = sampled[clash] % num_items + 1  # never the positive itself
    all_rows = np.r_[rows, repeated]
    items = np.r_[log.item[rows], sampled]
    labels = np.r_[np.ones(len(rows), np.int64), np.zeros(len(repeated), np.int64)]
    return all_rows, items, labels


def build_datasets(
    log: Interactions, config: DataConfig | None = None
) -> tuple[CTRDataset, CTRDataset, CTRDataset]:
    """``(train, valid, test)`` datasets from an interaction log (module docstring)."""
    config = config or DataConfig()
    sorted_log = _sorted_log(log, config.max_len)
    split = _split_ids(sorted_log, config)
    rng = np.random.default_rng(config.seed)
    datasets = []
    for part, part_name in enumerate(("train", "valid", "test")):
        rows = np.flatnonzero(split == part)
        if log.implicit:
            rows, items, labels = _with_negatives(sorted_log, rows, config, log.num_items, rng)
        else:
            items, labels = sorted_log.item[rows], sorted_log.label[rows]
        if len(rows) == 0:
            hint = (
                "only users with 3 or more events give valid and test samples"
                if config.split == "leave_last_out"
                else "the time split's fractions leave it no events"
            )
            raise DataError(
                f"{log.name}: the {part_name} split is empty ({config.split} split: {hint})"
            )
        datasets.append(
            CTRDataset(
                f"{log.name} ({part_name} split)",
                sorted_log.user[rows],
                items,
                labels,
                sorted_log.history_end[rows],
                sorted_log.history_len[rows],
                sorted_log.clicked_items,
                log.item_category,
                config.max_len,
                seed=config.seed + part,
            )
        )
    return datasets[0], datasets[1], datasets[2]
