"""End to end on a rating log: our DIN / DIEN models against DeepCTR-Torch's and
torch-rechub's, the same task, each library trained to its best validation epoch.

The task, identical for every library: the log of ``--data`` (ML-100K from
the ``recbole`` distribution by default; any RecBole / MovieLens / Amazon
folder the CLI reads, e.g. the ML-1M-shaped log of ``make_recbole_log.py``),
our leave-last-out split (rating >= 4 is a click; the
second-to-last click of each user is the validation set, the last the test
set), user / item / category fields with embeddings of ``--embed-dim``
each, histories of the last ``--max-len`` clicks (item and category ids,
left-aligned, zero padded), Adam at batch 256 (lr 1e-3 for the peers, their
default; ours at its own default, ``TrainConfig().lr``), and, for DIEN, one
sampled negative per history position for the auxiliary loss (the same
negatives for every library). Each library runs as its users run it: its
own model class with its defaults (hidden sizes, attention activations,
DeepCTR's Dice in DIN), its own input packing and training loop
(DeepCTR-Torch ``model.fit``; torch-rechub ``CTRTrainer``); ours is
``monolith_layers.train.Trainer``.

Early stopping, the same for every library: after each epoch the model is
scored on the validation set; training stops once ``--patience`` epochs in
a row bring no better validation AUC, or after ``--max-epochs``; the
weights of the best validation epoch are then scored once on the test set.
AUC and logloss come from the same scikit-learn calls on every library's
click probabilities. Reported per library and model, mean and standard
deviation over ``--seeds`` seeds: test AUC and logloss at the best
validation epoch, the best epoch, epochs run, training seconds per epoch
(evaluation excluded) and training seconds up to the best epoch, and the
fastest peer's time to its best epoch over ours.

    pip install -e ".[bench,demo]" requests && pip install --no-deps recbole
    python benchmarks/bench_e2e.py --seeds 5 --max-epochs 20 --patience 2
    python benchmarks/make_recbole_log.py --out /tmp/ml-1m-shaped
    python benchmarks/bench_e2e.py --data /tmp/ml-1m-shaped --seeds 2 --max-epochs 10 --patience 1
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

from monolith_layers.data import DataConfig, DataError, build_datasets, load_dataset
from monolith_layers.models import CTRModel, ModelConfig
from monolith_layers.train import TrainConfig, Trainer, seed_everything

BATCH, LR = 256, 1e-3


@dataclass
class Run:
    """One library, model and seed, trained to its best validation epoch."""

    test_auc: float
    test_logloss: float
    best_epoch: int
    epochs: int
    seconds_per_epoch: float
    seconds_to_best: float


def _scored(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    scores = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    return roc_auc_score(labels, scores), log_loss(labels, scores, labels=[0, 1])


def early_stopped(
    model: torch.nn.Module,
    train_epoch: Callable[[], None],
    predict: Callable[[str], np.ndarray],
    data: dict,
    args,
) -> Run:
    """A peer's training loop with our Trainer's stopping rule: an epoch, its
    validation AUC, stop after ``args.patience`` epochs without a better one
    (or ``args.max_epochs``); then the best epoch's weights on the test set."""
    best_auc, best_epoch, best_state, seconds = float("-inf"), 0, None, []
    for epoch in range(1, args.max_epochs + 1):
        began = time.perf_counter()
        train_epoch()
        seconds.append(time.perf_counter() - began)
        auc, _ = _scored(data["valid"]["label"], predict("valid"))
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= args.patience:
            break
    model.load_state_dict(best_state)
    test_auc, test_logloss = _scored(data["test"]["label"], predict("test"))
    return Run(
        test_auc,
        test_logloss,
        best_epoch,
        len(seconds),
        statistics.median(seconds),
        sum(seconds[:best_epoch]),
    )


def arrays(dataset, seed: int) -> dict[str, np.ndarray]:
    """Every sample of a split as numpy arrays, with fixed negatives per position."""
    dataset.with_negative_history = True
    dataset._rng = np.random.default_rng(seed)
    batch = dataset.__getitems__(np.arange(len(dataset)))
    return {
        "user": batch["user"].numpy(),
        "item": batch["item"].numpy(),
        "cate": batch["category"].numpy(),
        "hist_item": batch["history"].numpy(),
        "hist_cate": batch["history_category"].numpy(),
        "neg_hist_item": batch["negative_history"].numpy(),
        "neg_hist_cate": batch["negative_history_category"].numpy(),
        "seq_length": batch["mask"].sum(1).numpy(),
        "label": batch["label"].numpy(),
    }


# ------------------------------------------------------------------- ours
class _FixedNegatives:
    """Our dataset, serving the benchmark's fixed negatives for DIEN."""

    def __init__(self, dataset, data):
        self.dataset, self.data = dataset, data

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def __len__(self):
        return len(self.dataset)

    def __getitems__(self, indices):
        rows = np.asarray(indices)
        batch = self.dataset.__getitems__(rows)
        batch["negative_history"] = torch.from_numpy(self.data["neg_hist_item"][rows])
        batch["negative_history_category"] = torch.from_numpy(self.data["neg_hist_cate"][rows])
        return batch

    def loader(self, batch_size, shuffle, seed=0, sampler=None, pin_memory=False):
        from torch.utils.data import DataLoader

        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            self,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=lambda b: b,
            generator=generator,
            pin_memory=pin_memory,
        )


def run_ours(model_name, log, splits, data, args, seed):
    seed_everything(seed)
    config = ModelConfig(
        encoder=model_name,
        embed_dim=args.embed_dim,
        max_len=args.max_len,
        num_users=log.num_users,
        num_items=log.num_items,
        num_categories=log.num_categories,
    )
    model = CTRModel(config)
    # Ours trains with its own defaults (lr and batch size from TrainConfig), as
    # the peers do with theirs.
    train_config = TrainConfig(
        epochs=args.max_epochs,
        patience=args.patience,
        seed=seed,
        progress=False,
    )
    trainer = Trainer(model, train_config)
    train = _FixedNegatives(splits[0], data["train"])
    result = trainer.fit(train, splits[1])  # the best validation epoch's weights afterwards
    seconds = [r.seconds for r in result.history]
    test_auc, test_logloss = _scored(*trainer.predict(splits[2]))
    return Run(
        test_auc,
        test_logloss,
        result.best_epoch,
        len(seconds),
        statistics.median(seconds),
        sum(seconds[: result.best_epoch]),
    )


# ------------------------------------------------------------ DeepCTR-Torch
PEER_MODELS = ("din", "dien")


def _peer_has(library: str, model_name: str) -> None:
    """The peers are run for DIN and DIEN; ours also as the other encoders (e.g.
    ``mean``: mean pooling of the history, the baseline the attention must beat)."""
    if model_name not in PEER_MODELS:
        raise NotImplementedError(f"no {model_name} model run for {library} here")


def run_deepctr(model_name, log, splits, data, args, seed):
    _peer_has("DeepCTR-Torch", model_name)
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIEN, DIN

    e, t = args.embed_dim, args.max_len
    columns = [
        SparseFeat("user", log.num_users + 1, e),
        SparseFeat("item", log.num_items + 1, e),
        SparseFeat("cate", log.num_categories + 1, e),
        VarLenSparseFeat(
            SparseFeat("hist_item", log.num_items + 1, e, embedding_name="item"),
            t,
            length_name="seq_length",
        ),
        VarLenSparseFeat(
            SparseFeat("hist_cate", log.num_categories + 1, e, embedding_name="cate"),
            t,
            length_name="seq_length",
        ),
    ]
    names = ["user", "item", "cate", "hist_item", "hist_cate", "seq_length"]
    if model_name == "dien":
        columns += [
            VarLenSparseFeat(
                SparseFeat("neg_hist_item", log.num_items + 1, e, embedding_name="item"),
                t,
                length_name="seq_length",
            ),
            VarLenSparseFeat(
                SparseFeat("neg_hist_cate", log.num_categories + 1, e, embedding_name="cate"),
                t,
                length_name="seq_length",
            ),
        ]
        names += ["neg_hist_item", "neg_hist_cate"]
        model = DIEN(columns, ["item", "cate"], gru_type="AUGRU", use_negsampling=True, seed=seed)
    else:
        model = DIN(columns, ["item", "cate"], seed=seed)
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy")
    inputs = {part: {k: data[part][k] for k in names} for part in ("train", "valid", "test")}

    def train_epoch():
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(
                inputs["train"], data["train"]["label"], batch_size=BATCH, epochs=1, verbose=0
            )

    def predict(part):
        return model.predict(inputs[part], batch_size=2048)

    return early_stopped(model, train_epoch, predict, data, args)


# ------------------------------------------------------------- torch-rechub
def run_rechub(model_name, log, splits, data, args, seed):
    _peer_has("torch-rechub", model_name)
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.ranking import DIEN, DIN
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.manual_seed(seed)
    e = args.embed_dim
    features = [SparseFeature("user", log.num_users + 1, e)]
    targets = [
        SparseFeature("item", log.num_items + 1, e, padding_idx=0),
        SparseFeature("cate", log.num_categories + 1, e, padding_idx=0),
    ]
    history = [
        SequenceFeature(
            "hist_item", log.num_items + 1, e, pooling="concat", shared_with="item", padding_idx=0
        ),
        SequenceFeature(
            "hist_cate",
            log.num_categories + 1,
            e,
            pooling="concat",
            shared_with="cate",
            padding_idx=0,
        ),
    ]
    names = ["user", "item", "cate", "hist_item", "hist_cate"]
    if model_name == "dien":
        negatives = [
            SequenceFeature(
                "neg_hist_item",
                log.num_items + 1,
                e,
                pooling="concat",
                shared_with="item",
                padding_idx=0,
            ),
            SequenceFeature(
                "neg_hist_cate",
                log.num_categories + 1,
                e,
                pooling="concat",
                shared_with="cate",
                padding_idx=0,
            ),
        ]
        names += ["neg_hist_item", "neg_hist_cate"]
        model = DIEN(features, history, negatives, targets, mlp_params={"dims": [256, 128]})
    else:
        model = DIN(
            features, history, targets, mlp_params={"dims": [256, 128]}, attention_mlp_params={}
        )
    x = {part: {k: data[part][k] for k in names} for part in ("train", "valid", "test")}
    generator = DataGenerator(x["train"], data["train"]["label"])
    train_dl, valid_dl, test_dl = generator.generate_dataloader(
        x_val=x["valid"],
        y_val=data["valid"]["label"],
        x_test=x["test"],
        y_test=data["test"]["label"],
        batch_size=BATCH,
    )
    loaders = {"valid": valid_dl, "test": test_dl}
    quiet = (contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()))
    with tempfile.TemporaryDirectory() as folder, quiet[0], quiet[1]:
        trainer = CTRTrainer(
            model,
            optimizer_params={"lr": LR, "weight_decay": 0.0},
            n_epoch=args.max_epochs,
            device="cpu",
            loss_mode=model_name != "dien",
            model_path=folder,
        )
        return early_stopped(
            model,
            lambda: trainer.train_one_epoch(train_dl),
            lambda part: np.asarray(trainer.predict(model, loaders[part])),
            data,
            args,
        )


RUNNERS = {"monolith-layers": run_ours, "DeepCTR-Torch": run_deepctr, "torch-rechub": run_rechub}


def _mean_sd(values: list[float], digits: int) -> str:
    spread = f" +- {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


def table(results: dict[tuple[str, str], list[Run]], models: list[str], seeds: int) -> str:
    lines = [
        f"| model | library | test AUC (mean +- sd, {seeds} seeds) | test logloss | best epoch "
        "| epochs run | s/epoch | s to best epoch | fastest peer's s to best / ours |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model_name in models:
        to_best = {
            library: statistics.mean(r.seconds_to_best for r in runs)
            for (name, library), runs in results.items()
            if name == model_name
        }
        peers = [t for library, t in to_best.items() if library != "monolith-layers"]
        for library in RUNNERS:
            runs = results.get((model_name, library))
            if not runs:
                continue
            ratio = ""
            if library == "monolith-layers" and peers:
                ratio = f"{min(peers) / to_best[library]:.2f}x"
            lines.append(
                f"| {model_name} | {library} | {_mean_sd([r.test_auc for r in runs], 4)} "
                f"| {_mean_sd([r.test_logloss for r in runs], 4)} "
                f"| {statistics.mean(r.best_epoch for r in runs):.1f} "
                f"| {statistics.mean(r.epochs for r in runs):.1f} "
                f"| {statistics.median(r.seconds_per_epoch for r in runs):.1f} "
                f"| {to_best[library]:.1f} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default="ml-100k",
        help="ml-100k, or a RecBole / MovieLens / Amazon file or folder (as the CLI's --data)",
    )
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument(
        "--patience", type=int, default=2, help="epochs without a better validation AUC"
    )
    parser.add_argument("--embed-dim", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--models", default="din,dien", help="din, dien, and for ours alone mean, sum, dmr, ..."
    )
    parser.add_argument(
        "--libraries", default=",".join(RUNNERS), help="a comma-separated subset of the libraries"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    try:
        log = load_dataset(args.data)
    except DataError as err:
        parser.error(str(err))
    splits = build_datasets(log, DataConfig(max_len=args.max_len))
    print(log.summary())
    print(
        f"samples: train {len(splits[0]):,}, valid {len(splits[1]):,}, test {len(splits[2]):,}; "
        f"T={args.max_len}, E={args.embed_dim}; up to {args.max_epochs} epochs, "
        f"patience {args.patience}"
    )
    models, libraries = args.models.split(","), args.libraries.split(",")
    results: dict[tuple[str, str], list[Run]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        data = {
            part: arrays(ds, seed)
            for part, ds in zip(("train", "valid", "test"), splits, strict=True)
        }
        for model_name in models:
            for library in libraries:
                try:
                    run = RUNNERS[library](model_name, log, splits, data, args, seed)
                except ImportError as err:
                    print(f"  {library}: not installed ({err})")
                    continue
                except NotImplementedError as err:
                    print(f"  {library}: {err}")
                    continue
                results.setdefault((model_name, library), []).append(run)
                print(
                    f"  seed {seed} {model_name:<5} {library:<16} test AUC {run.test_auc:.4f} "
                    f"logloss {run.test_logloss:.4f} best epoch {run.best_epoch}/{run.epochs} "
                    f"{run.seconds_per_epoch:6.1f} s/epoch, {run.seconds_to_best:7.1f} s to best",
                    flush=True,
                )
    print()
    print(table(results, models, args.seeds))


if __name__ == "__main__":
    main()
