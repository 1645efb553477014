"""Small sample logs (Parquet / CSV) and their schema, for the sample-log tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SCHEMA = {
    "label": "click",
    "time": "ts",
    "max_len": 6,
    "features": [
        {"name": "user_id", "kind": "sparse"},
        {"name": "item_id", "kind": "sparse", "role": "target"},
        {"name": "category", "kind": "sparse", "role": "target"},
        {"name": "device", "kind": "sparse", "hash_buckets": 7},
        {"name": "price", "kind": "dense"},
        {"name": "tags", "kind": "sequence", "shares": "device", "max_len": 3},
        {"name": "hist_item_id", "kind": "sequence", "shares": "item_id"},
        {"name": "hist_category", "kind": "sequence", "shares": "category"},
    ],
}


def columns(rows: int, seed: int = 0) -> dict:
    """Raw columns: 64-bit user ids, string items, int categories, lists, NaN prices."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1 << 40, (1 << 40) + 25, rows)
    items = rng.integers(0, 30, rows)
    category = items % 5
    lengths = rng.integers(0, 9, rows)
    history = [rng.integers(0, 30, n) for n in lengths]
    price = rng.lognormal(2, 1, rows)
    price[rng.random(rows) < 0.1] = np.nan
    logit = 0.8 * (category == 2) - 0.5 + 0.3 * (lengths > 4)
    return {
        "user_id": users,
        "item_id": [f"item-{i}" for i in items],
        "category": category,
        "device": [f"d{v}" for v in rng.integers(0, 4, rows)],
        "price": price,
        "tags": [[f"d{v}" for v in rng.integers(0, 4, rng.integers(0, 4))] for _ in range(rows)],
        "hist_item_id": [[f"item-{i}" for i in h] for h in history],
        "hist_category": [list(h % 5) for h in history],
        "click": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        "ts": np.arange(rows, dtype=np.int64) * 10,
    }


def write_parquet(
    path: Path, rows: int = 400, row_group: int = 64, seed: int = 0, **override
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {**columns(rows, seed), **override}
    pq.write_table(pa.table(data), path, row_group_size=row_group)
    return path


def write_csv(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """The same log as CSV: lists as space-separated tokens (RecBole's token_seq)."""
    import pandas as pd

    data = columns(rows, seed)
    for name in ("tags", "hist_item_id", "hist_category"):
        data[name] = [" ".join(str(v) for v in cell) for cell in data[name]]
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def write_schema(path: Path, **changes) -> Path:
    path.write_text(json.dumps({**SCHEMA, **changes}))
    return path
