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

With ``--sample-log FILE --schema JSON`` it measures a Parquet sample log
instead (``benchmarks/make_samples.py`` writes one): the passes before
training (row counts, vocabularies; rows/s), the streaming pipeline alone
(samples/s of batches built from the file, shuffled, in the training
process and with one loader worker) and DIN / DIEN training steps on those
batches (samples/s), so the ratio says whether the pipeline can keep up::

    python benchmarks/make_samples.py --rows 5000000 --out /tmp/samples5m
    python benchmarks/bench_data.py --sample-log /tmp/samples5m/samples.parquet \
        --schema /tmp/samples5m/schema.json
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


def _pipeline_rate(stream, batch_size: int, batches: int) -> float:
    """Samples per second of the stream's first ``batches`` batches (after the first)."""
    loader = iter(stream.loader(batch_size, shuffle=True, epoch=1))
    next(loader)
    began, rows = time.perf_counter(), 0
    for _ in range(batches):
        rows += len(next(loader)["label"])
    return rows / (time.perf_counter() - began)


def _training_rate(model, batches: list) -> float:
    """Samples per second of training steps (median step) on prepared batches."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(batch), batch["label"])
        (loss + total_layer_loss(model)).backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 3:
            steps.append(time.perf_counter() - start)
    return len(batches[0]["label"]) / statistics.median(steps)


def sample_log(args) -> None:
    from monolith_layers.data.schema import Schema
    from monolith_layers.data.stream import schema_datasets
    from monolith_layers.models.features import FeatureCTRModel, feature_spec

    schema = Schema.load(args.schema)
    began = time.perf_counter()
    train, valid, test, encoder = schema_datasets(schema, args.sample_log)
    prepared = time.perf_counter() - began
    rows = len(train) + len(valid) + len(test)
    print(f"{args.sample_log}: {rows:,} rows; train {len(train):,}")
    print(f"counting and vocabulary passes: {prepared:.1f} s ({rows / prepared:,.0f} rows/s)\n")
    print("| what | samples/s |\n| --- | ---: |")
    rates = {}
    for workers in (0, 1):
        train.workers = workers
        for negatives in (False, True):
            train.with_negative_history = negatives
            rate = _pipeline_rate(train, args.batch_size, args.pipeline_batches)
            rates[(workers, negatives)] = rate
            what = "with DIEN's negatives" if negatives else "DIN"
            print(f"| pipeline alone, {what}, {workers} loader workers | {rate:,.0f} |")
    train.workers = 0
    for encoder_name, negatives in (("din", False), ("dien", True)):
        train.with_negative_history = negatives
        loader = iter(train.loader(args.batch_size, shuffle=True, epoch=2))
        batches = [next(loader) for _ in range(args.steps + 3)]
        config = {"encoder": encoder_name, "features": feature_spec(encoder)}
        rate = _training_rate(FeatureCTRModel(ModelConfig.from_dict(config)), batches)
        pipeline = rates[(0, negatives)]
        print(
            f"| {encoder_name} training steps (default model) | {rate:,.0f} "
            f"(pipeline in-process / training: {pipeline / rate:.1f}x) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sample-log", help="a Parquet sample log (with --schema)")
    parser.add_argument("--schema", help="its schema JSON")
    parser.add_argument("--pipeline-batches", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sample_log:
        sample_log(args)
        return

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
        rate = _training_rate(CTRModel(config), [batch] * (args.steps + 3))
        step_ms = args.batch_size / rate * 1e3
        print(f"| {encoder} | {step_ms:.1f} | {batch_ms / (batch_ms + step_ms):.1%} |")


if __name__ == "__main__":
    main()
