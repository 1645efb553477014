"""Do side features help? The same sample log trained with and without them, over seeds.

``--data DIR`` holds ``schema.json`` and ``schema_no_side.json`` (as written
by ``benchmarks/make_samples.py`` or ``monolith-layers samples``) and either
``samples.parquet`` (the schema's own split) or ``train`` / ``valid`` /
``test.parquet``. Each seed trains both schemas with ``monolith-layers
train`` (early stopping on validation AUC, ``--max-epochs``) and reads the
test AUC of the best validation epoch. Reported: mean and standard deviation
over seeds, and the paired difference (with side - without) with its
standard error over seeds::

    python benchmarks/make_samples.py --rows 300000 --out /tmp/samples
    python benchmarks/bench_side_features.py --data /tmp/samples --seeds 3
    monolith-layers samples --data ml-100k --out /tmp/ml100k
    python benchmarks/bench_side_features.py --data /tmp/ml100k --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from monolith_layers.cli import main as cli

SCHEMAS = {"with side features": "schema.json", "without": "schema_no_side.json"}


def data_args(folder: Path) -> list[str]:
    if (folder / "samples.parquet").exists():
        return ["--data", str(folder / "samples.parquet")]
    return [
        *("--data", str(folder / "train.parquet")),
        *("--valid", str(folder / "valid.parquet")),
        *("--test", str(folder / "test.parquet")),
    ]


def train(folder: Path, schema: str, seed: int, args, work: Path) -> dict:
    out = work / f"{schema}-{seed}"
    argv = ["train", "--schema", str(folder / schema), *data_args(folder), "--model", args.model]
    argv += ["--epochs", str(args.max_epochs), "--seed", str(seed), "--out", str(out)]
    argv += ["--batch-size", str(args.batch_size), "--no-progress"]
    if cli(argv) != 0:
        raise SystemExit(f"training failed: {' '.join(argv)}")
    return json.loads((out / "metrics.json").read_text())["models"][args.model]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="din")
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in SCHEMAS}
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.seeds):
            for name, schema in SCHEMAS.items():
                results[name].append(train(args.data, schema, seed, args, Path(work)))
    print(f"\n{args.data}, {args.model}, {args.seeds} seeds, early stopping on validation AUC\n")
    print("| features | test AUC, mean +- sd | per seed | valid AUC | epochs to best |")
    print("| --- | --- | --- | ---: | ---: |")
    for name, runs in results.items():
        aucs = [r["test_auc"] for r in runs]
        sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        print(
            f"| {name} | {statistics.mean(aucs):.4f} +- {sd:.4f} | "
            f"{' / '.join(f'{a:.4f}' for a in aucs)} | "
            f"{statistics.mean(r['valid_auc'] for r in runs):.4f} | "
            f"{statistics.mean(r['best_epoch'] for r in runs):.1f} |"
        )
    gains = [a["test_auc"] - b["test_auc"] for a, b in zip(*results.values(), strict=True)]
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    single = results["without"][0]
    print(
        f"\nwith - without: {statistics.mean(gains):+.4f} +- {se:.4f} (standard error over "
        f"{len(gains)} paired seeds); one test AUC's own 95 % half-width: "
        f"{single.get('test_auc_95') or float('nan'):.4f} ({single['test_samples']:,} test samples)"
    )


if __name__ == "__main__":
    main()
