"""Write a synthetic sample log as Parquet (with its schema): raw ids, side features, histories.

One row per impression, already joined, as a production sample log:

* ``user_id``: raw 64-bit ints; ``item_id``: raw strings; ``category`` (target);
* side features that drive clicks: ``age_group`` and ``device`` (sparse,
  ``device`` hashed), ``price`` and ``user_score`` (dense, ``user_score``
  missing for 5 % of rows);
* ``hist_item_id`` / ``hist_category``: the user's earlier clicks, lengths
  log-normal (some empty), 70 % in the user's two favourite categories;
* ``click``: Bernoulli of a logit that adds the target's match with the
  favourite categories, an age x category affinity, a device effect, the
  price and the user score; ``ts``: increasing event times.

Rows are generated and written in row groups of ``--row-group`` rows, so
memory stays bounded for any ``--rows``. Writes ``DIR/samples.parquet``,
``DIR/schema.json`` (every feature) and ``DIR/schema_no_side.json`` (the
ids and history only)::

    python benchmarks/make_samples.py --rows 200000 --out /tmp/samples
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = {
    "label": "click",
    "time": "ts",
    "features": [
        {"name": "user_id", "kind": "sparse"},
        {"name": "item_id", "kind": "sparse", "role": "target"},
        {"name": "category", "kind": "sparse", "role": "target"},
        {"name": "age_group", "kind": "sparse"},
        {"name": "device", "kind": "sparse", "hash_buckets": 1000},
        {"name": "price", "kind": "dense"},
        {"name": "user_score", "kind": "dense"},
        {"name": "hist_item_id", "kind": "sequence", "shares": "item_id", "max_len": 50},
        {"name": "hist_category", "kind": "sequence", "shares": "category", "max_len": 50},
    ],
}
SIDE = ("age_group", "device", "price", "user_score")


class World:
    """The fixed population rows are drawn from (a function of the seed)."""

    def __init__(self, rng: np.random.Generator, users: int, items: int, categories: int):
        self.user_raw = rng.integers(1 << 40, 1 << 62, users, dtype=np.int64)
        self.favourites = rng.integers(0, categories, (users, 2))
        self.age = rng.integers(0, 6, users)
        self.device = rng.integers(0, 40, users)
        self.score = rng.normal(0, 1, users)
        self.item_category = np.sort(rng.integers(0, categories, items))
        self.item_raw = pa.array([f"it{v:012x}" for v in rng.integers(0, 1 << 48, items)])
        self.price = rng.lognormal(3, 0.8, items)
        self.category_start = np.searchsorted(self.item_category, np.arange(categories + 1))
        self.affinity = rng.normal(0, 1, (6, categories))
        self.device_effect = rng.normal(0, 0.8, 40)
        self.categories = categories

    def items_in(self, rng, categories: np.ndarray) -> np.ndarray:
        """A random item of each given category (any item when the category is empty)."""
        lo, hi = self.category_start[categories], self.category_start[categories + 1]
        empty = hi <= lo
        pick = lo + (rng.random(len(categories)) * np.maximum(hi - lo, 1)).astype(np.int64)
        return np.where(empty, rng.integers(0, len(self.item_category), len(categories)), pick)

    def favoured(self, rng, users: np.ndarray, share: float) -> np.ndarray:
        """Categories: one of the user's favourites with probability ``share``, else any."""
        own = self.favourites[users, rng.integers(0, 2, len(users))]
        anything = rng.integers(0, self.categories, len(users))
        return np.where(rng.random(len(users)) < share, own, anything)


def row_group(world: World, rng, rows: int, first_ts: int, mean_len: float) -> pa.Table:
    users = rng.integers(0, len(world.user_raw), rows)
    lengths = np.minimum(rng.lognormal(np.log(mean_len), 0.9, rows).astype(np.int64), 200)
    lengths[rng.random(rows) < 0.05] = 0  # users with no history yet
    history_users = np.repeat(users, lengths)
    history_items = world.items_in(rng, world.favoured(rng, history_users, 0.7))
    target = world.items_in(rng, world.favoured(rng, users, 0.5))
    category = world.item_category[target]
    match = (world.favourites[users] == category[:, None]).any(axis=1)
    price = world.price[target]
    logit = (
        -1.2
        + 1.0 * match
        + 0.9 * world.affinity[world.age[users], category]
        + world.device_effect[world.device[users]]
        - 0.7 * (np.log(price) - 3) / 0.8
        + 0.6 * world.score[users]
    )
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    score = world.score[users].copy()
    score[rng.random(rows) < 0.05] = np.nan
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.table(
        {
            "user_id": world.user_raw[users],
            "item_id": world.item_raw.take(target),
            "category": category.astype(np.int64),
            "age_group": np.array(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"])[
                world.age[users]
            ],
            "device": np.char.add("dev-", world.device[users].astype(str)),
            "price": price,
            "user_score": pa.array(score, from_pandas=True),
            "hist_item_id": pa.ListArray.from_arrays(offsets, world.item_raw.take(history_items)),
            "hist_category": pa.ListArray.from_arrays(
                offsets, world.item_category[history_items].astype(np.int64)
            ),
            "click": click,
            "ts": first_ts + np.arange(rows, dtype=np.int64),
        }
    )


def write_samples(
    out: Path,
    rows: int,
    row_group_rows: int = 100_000,
    users: int = 50_000,
    items: int = 20_000,
    categories: int = 50,
    mean_len: float = 15.0,
    seed: int = 0,
) -> Path:
    """Write ``out/samples.parquet`` and the two schemas; returns the Parquet path."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = World(rng, users, items, categories)
    path = out / "samples.parquet"
    writer = None
    for start in range(0, rows, row_group_rows):
        table = row_group(world, rng, min(row_group_rows, rows - start), start, mean_len)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=row_group_rows)
    writer.close()
    (out / "schema.json").write_text(json.dumps(SCHEMA, indent=2))
    bare = {**SCHEMA, "features": [f for f in SCHEMA["features"] if f["name"] not in SIDE]}
    (out / "schema_no_side.json").write_text(json.dumps(bare, indent=2))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--row-group", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    path = write_samples(
        args.out, args.rows, args.row_group, args.users, args.items, seed=args.seed
    )
    print(
        f"{path}: {args.rows:,} rows; schemas: {args.out / 'schema.json'}, {args.out / 'schema_no_side.json'}"
    )


if __name__ == "__main__":
    main()
