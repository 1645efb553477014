"""A seeded synthetic impression log whose clicks reward sequence modelling.

Each user holds ``interests`` current categories; at every impression each
user's interests drift (with probability ``drift``, one is replaced by a
random category), and the user sees a candidate item drawn from a current
interest (``p_current``), from a *former* interest (``p_former``), or from
any category. The click probability is

    sigmoid(base + current * [category is a current interest]
                 + former * [category is a former, not current, interest]
                 + item_bias)

so a model must tell which categories the user clicked *recently* (DIEN's
strength) and whether the candidate's category is in the history at all
(DIN's, a target-aware question that mean pooling answers poorly). Users
have between ``min_events`` and ``max_events`` impressions, so histories
have many lengths and padding. Timestamps interleave users on one clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import JsonConfig
from .interactions import Interactions, from_columns


@dataclass
class SyntheticConfig(JsonConfig):
    """Knobs of the generator (JSON-serialisable); the defaults are the demo's."""

    num_users: int = 8000
    num_categories: int = 40
    items_per_category: int = 40
    interests: int = 2
    drift: float = 0.05
    min_events: int = 10
    max_events: int = 60
    p_current: float = 0.45
    p_former: float = 0.25
    base: float = -2.5
    current: float = 4.0
    former: float = 1.0
    item_bias_std: float = 0.5
    seed: int = 0


def generate(config: SyntheticConfig | None = None) -> Interactions:
    """The impression log (see the module docstring); the same seed gives the same log."""
    c = config or SyntheticConfig()
    rng = np.random.default_rng(c.seed)
    users, cats = c.num_users, c.num_categories
    item_bias = rng.normal(0.0, c.item_bias_std, size=cats * c.items_per_category)
    current = np.stack([rng.choice(cats, c.interests, replace=False) for _ in range(users)])
    former = np.zeros((users, cats), dtype=bool)
    events = rng.integers(c.min_events, c.max_events + 1, size=users)
    offset = rng.uniform(0.0, 1.0, size=users)
    rows = []
    for step in range(int(events.max())):
        active = np.flatnonzero(events > step)
        # Drift: one current interest becomes former, a random category replaces it.
        drifting = active[rng.random(len(active)) < c.drift]
        slot = rng.integers(0, c.interests, size=len(drifting))
        former[drifting, current[drifting, slot]] = True
        current[drifting, slot] = rng.integers(0, cats, size=len(drifting))
        is_current = np.zeros((len(active), cats), dtype=bool)
        np.put_along_axis(is_current, current[active], True, axis=1)
        former_only = former[active] & ~is_current
        # The candidate's category.
        draw = rng.random(len(active))
        category = rng.integers(0, cats, size=len(active))
        pick_current = draw < c.p_current
        category[pick_current] = current[
            active[pick_current], rng.integers(0, c.interests, pick_current.sum())
        ]
        pick_former = (
            (draw >= c.p_current) & (draw < c.p_current + c.p_former) & former_only.any(axis=1)
        )
        for row in np.flatnonzero(pick_former):
            category[row] = rng.choice(np.flatnonzero(former_only[row]))
        item = category * c.items_per_category + rng.integers(0, c.items_per_category, len(active))
        rows_idx = np.arange(len(active))
        logit = (
            c.base
            + c.current * is_current[rows_idx, category]
            + c.former * former_only[rows_idx, category]
            + item_bias[item]
        )
        click = rng.random(len(active)) < 1.0 / (1.0 + np.exp(-logit))
        rows.append((active, item, step + offset[active], click))
    user = np.concatenate([r[0] for r in rows])
    item = np.concatenate([r[1] for r in rows])
    timestamp = np.concatenate([r[2] for r in rows])
    label = np.concatenate([r[3] for r in rows]).astype(np.int64)
    categories = {
        i: f"c{i // c.items_per_category:02d}" for i in range(cats * c.items_per_category)
    }
    return from_columns("synthetic", user, item, timestamp, label, categories)
