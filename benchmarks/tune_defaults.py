"""Choose the CTR model's training defaults on validation data only.

Trains our DIN and DIEN models on ML-100K (the leave-last-out split of
``bench_e2e.py``: E = 8, T = 50, DIEN with one sampled negative per history
position) and on the synthetic impression log, for every learning rate and
batch size asked, with early stopping on validation AUC, and reports the
best **validation** AUC and the epoch it came at (mean over seeds). The test
split is never scored here; ``bench_e2e.py`` scores it once, with the chosen
defaults::

    python benchmarks/tune_defaults.py --lrs 1e-3,3e-3 --batch-sizes 256 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch
from harness import kernels_ready

from monolith_layers.data import DataConfig, SyntheticConfig, build_datasets, generate, load_dataset
from monolith_layers.models import ConfigError, CTRModel, ModelConfig
from monolith_layers.train import TrainConfig, Trainer, seed_everything


def datasets(name: str, max_len: int):
    log = generate(SyntheticConfig()) if name == "synthetic" else load_dataset(name)
    return log, build_datasets(log, DataConfig(max_len=max_len))


def validation_run(
    log, splits, encoder, lr, batch_size, seed, args, variant=None
) -> tuple[float, int, float]:
    """(best validation AUC, its epoch, training seconds up to it); ``variant``
    overrides ``ModelConfig`` fields."""
    seed_everything(seed)
    config = ModelConfig(
        encoder=encoder,
        embed_dim=args.embed_dim,
        max_len=args.max_len,
        num_users=log.num_users,
        num_items=log.num_items,
        num_categories=log.num_categories,
        **(variant or {}),
    )
    train_config = TrainConfig(
        epochs=args.max_epochs,
        batch_size=batch_size,
        lr=lr,
        patience=args.patience,
        seed=seed,
        progress=False,
    )
    result = Trainer(CTRModel(config), train_config).fit(splits[0], splits[1])
    seconds = sum(r.seconds for r in result.history[: result.best_epoch])
    return result.best_auc, result.best_epoch, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="ml-100k,synthetic", help="comma-separated: synthetic, ml-100k or paths"
    )
    parser.add_argument("--models", default="din,dien")
    parser.add_argument("--lrs", default="1e-3,3e-3")
    parser.add_argument("--batch-sizes", default="256")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--embed-dim", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[{}],
        type=json.loads,
        help="ModelConfig overrides to compare, each a JSON object ('{}': the defaults)",
    )
    args = parser.parse_args()
    for variant in args.variants:
        try:
            ModelConfig.from_dict(variant)
        except (ConfigError, TypeError) as err:
            parser.error(f"--variants {json.dumps(variant)}: {err}")
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    # Built once per environment, never inside the first setting's "s to best".
    print(kernels_ready())
    print(
        "| data | model | variant | lr | batch | valid AUC (mean over seeds) | per seed "
        "| best epoch | s to best |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for data in args.data.split(","):
        log, splits = datasets(data, args.max_len)
        for encoder in args.models.split(","):
            settings = [
                (variant, int(batch), float(lr))
                for variant in args.variants
                for batch in args.batch_sizes.split(",")
                for lr in args.lrs.split(",")
            ]
            for variant, batch_size, lr in settings:
                runs = [
                    validation_run(log, splits, encoder, lr, batch_size, seed, args, variant)
                    for seed in range(args.seeds)
                ]
                aucs = [r[0] for r in runs]
                print(
                    f"| {data} | {encoder} | {json.dumps(variant) if variant else 'defaults'} "
                    f"| {lr:g} | {batch_size} | "
                    f"{statistics.mean(aucs):.4f} | {' / '.join(f'{a:.4f}' for a in aucs)} | "
                    f"{statistics.mean(r[1] for r in runs):.1f} | "
                    f"{statistics.mean(r[2] for r in runs):.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
