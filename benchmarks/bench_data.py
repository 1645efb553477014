"""Data pipeline speed: a million interactions from files to batches, against training.

1. Writes ``--interactions`` synthetic events as RecBole atomic files
   (``.inter`` + ``.item``) into a temporary folder.
2. Times ``load_dataset`` (parse), ``build_datasets`` (sort, split,
   histories, negatives; implicit feedback with one sampled negative per
   event, the heavier case) and their sum.
3. Times the DataLoader alone (batches per second, with DIEN's per-position
   negatives) and one training step of DIN and DIEN at the same batch size,
   so the ratio says whether the pipeline can starve training.

    python benchmarks/bench_data.py --interactions 1000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from monolith_layers import total_layer_loss
from monolith_layers.data import DataConfig, build_datasets, load_dataset
from monolith_layers.models import CTRModel, ModelConfig


def write_recbole(folder: Path, interactions: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    users = interactions // 40
    user = rng.integers(0, users, interactions)
    item = rng.zipf(1.3, interactions) % 50_000 + 1
    timestamp = rng.integers(1_000_000_000, 1_100_000_000, interactions)
    rating = rng.integers(1, 6, interactions)
    inter = folder / "big.inter"
    with inter.open("w") as handle:
        handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        np.savetxt(handle, np.c_[user, item, rating, timestamp], fmt="%d", delimiter="\t")
    with (folder / "big.item").open("w") as handle:
        handle.write("item_id:token\tclass:token_seq\n")
        ids = np.arange(1, 50_001)
        for i, c in zip(ids, ids % 300, strict=True):
            handle.write(f"{i}\tc{c} other\n")
    return inter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        inter = write_recbole(Path(folder), args.interactions)
        began = time.perf_counter()
        log = load_dataset(inter.parent)
        parsed = time.perf_counter()
        log.implicit = True  # the heavier path: every event plus a sampled negative
        train, valid, test = build_datasets(log, DataConfig(max_len=args.max_len))
        built = time.perf_counter()
    print(log.summary())
    print(f"samples: train {len(train):,}, valid {len(valid):,}, test {len(test):,}")
    print("| stage | seconds |\n| --- | ---: |")
    print(f"| parse (load_dataset) | {parsed - began:.2f} |")
    print(f"| sort, split, histories, negatives (build_datasets) | {built - parsed:.2f} |")
    print(f"| total | {built - began:.2f} |")

    train.with_negative_history = True
    loader = iter(train.loader(args.batch_size, shuffle=True))
    next(loader)
    times = []
    for _ in range(args.steps * 5):
        start = time.perf_counter()
        batch = next(loader)
        times.append(time.perf_counter() - start)
    batch_ms = statistics.median(times) * 1e3
    print(
        f"\nbatch of {args.batch_size} (T={args.max_len}, with negative history): {batch_ms:.2f} ms median"
    )
    print("| model | train step ms (median) | loader share of a step |\n| --- | ---: | ---: |")
    for encoder in ("din", "dien"):
        config = ModelConfig(
            encoder=encoder,
            num_users=log.num_users,
            num_items=log.num_items,
            num_categories=log.num_categories,
            max_len=args.max_len,
        )
        model = CTRModel(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps = []
        for i in range(args.steps + 3):
            start = time.perf_counter()
            loss = F.binary_cross_entropy_with_logits(model(batch), batch["label"])
            (loss + total_layer_loss(model)).backward()
            optimizer.step()
            optimizer.zero_grad()
            if i >= 3:
                steps.append(time.perf_counter() - start)
        step_ms = statistics.median(steps) * 1e3
        print(f"| {encoder} | {step_ms:.1f} | {batch_ms / (batch_ms + step_ms):.1%} |")


if __name__ == "__main__":
    main()
