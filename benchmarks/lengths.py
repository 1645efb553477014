"""Realistic history lengths for the benchmarks.

Behaviour histories are capped (padded) at T, and most are far shorter:
``lognormal`` draws lengths whose median is about ``median_share`` of the
cap with a long tail that reaches it; ``ml100k`` samples the lengths of the
MovieLens-100K training histories (our data pipeline, capped at T), when the
``recbole`` distribution that ships the data is installed.
"""

from __future__ import annotations

import numpy as np
import torch


def lognormal(batch: int, cap: int, median_share: float = 0.2, sigma: float = 1.0, seed: int = 0):
    """(B,) int64 lengths in [1, cap], log-normal with median ``median_share * cap``."""
    rng = np.random.default_rng(seed)
    draws = rng.lognormal(np.log(median_share * cap), sigma, size=batch)
    return torch.from_numpy(np.clip(np.rint(draws), 1, cap).astype(np.int64))


def ml100k(batch: int, cap: int, seed: int = 0):
    """(B,) lengths sampled from the ML-100K training histories capped at ``cap``;
    None when ``recbole`` (the data) is not installed. Empty histories (a
    user's first click) are left out: the peers' packing refuses length 0."""
    from monolith_layers.data import DataConfig, DataError, build_datasets, load_dataset

    try:
        log = load_dataset("ml-100k")
    except DataError:
        return None
    train = build_datasets(log, DataConfig(max_len=cap))[0]
    rng = np.random.default_rng(seed)
    nonempty = train.history_len[train.history_len > 0]
    return torch.from_numpy(rng.choice(nonempty, size=batch).astype(np.int64))


def describe(lengths: torch.Tensor, cap: int) -> str:
    values = lengths.float()
    return (
        f"median {values.median().item():.0f}, mean {values.mean().item():.1f}, "
        f"max {int(values.max())} of T={cap} ({100 * values.mean().item() / cap:.0f} % real)"
    )
