"""End to end on MovieLens-100K: our DIN / DIEN models against DeepCTR-Torch's and
torch-rechub's, the same task trained in one process.

The task, identical for every library: ML-100K from the ``recbole``
distribution, our leave-last-out split (rating >= 4 is a click), user / item /
category fields with embeddings of ``--embed-dim`` each, histories of the
last ``--max-len`` clicks (item and category ids, left-aligned, zero padded),
``--epochs`` epochs of Adam (lr 1e-3) at batch 256, and, for DIEN, one
sampled negative per history position for the auxiliary loss (the same
negatives for every library). Each library runs as its users run it: its
own model class with its defaults (hidden sizes, attention activations,
DeepCTR's Dice in DIN), its own input packing and training loop
(DeepCTR-Torch ``model.fit``; torch-rechub ``CTRTrainer``); ours is
``monolith_layers.train.Trainer``. Reported per library and model: test AUC
(mean and spread over ``--seeds`` seeds) and training seconds per epoch
(evaluation excluded), and the ratio of the fastest peer's time to ours.

    pip install -e ".[bench,demo]" requests && pip install --no-deps recbole
    python benchmarks/bench_e2e.py --seeds 3 --epochs 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from monolith_layers.data import DataConfig, build_datasets, load_dataset
from monolith_layers.models import CTRModel, ModelConfig
from monolith_layers.train import TrainConfig, Trainer, seed_everything

BATCH, LR = 256, 1e-3


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

    def loader(self, batch_size, shuffle, seed=0, sampler=None):
        from torch.utils.data import DataLoader

        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            self,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=lambda b: b,
            generator=generator,
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
    train_config = TrainConfig(
        epochs=args.epochs, batch_size=BATCH, lr=LR, patience=args.epochs, seed=seed, progress=False
    )
    trainer = Trainer(model, train_config)
    train = _FixedNegatives(splits[0], data["train"])
    result = trainer.fit(train, splits[1])
    # The last epoch's weights for every library (no early stopping): AUC of the final model.
    seconds = [r.seconds for r in result.history]
    return trainer.evaluate(splits[2])["auc"], statistics.median(seconds)


# ------------------------------------------------------------ DeepCTR-Torch
def run_deepctr(model_name, log, splits, data, args, seed):
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
    train = {k: data["train"][k] for k in names}
    seconds = []
    for _ in range(args.epochs):
        began = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(train, data["train"]["label"], batch_size=BATCH, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - began)
    scores = model.predict({k: data["test"][k] for k in names}, batch_size=2048)
    return roc_auc_score(data["test"]["label"], scores), statistics.median(seconds)


# ------------------------------------------------------------- torch-rechub
def run_rechub(model_name, log, splits, data, args, seed):
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
    x = {part: {k: data[part][k] for k in names} for part in ("train", "test")}
    generator = DataGenerator(x["train"], data["train"]["label"])
    train_dl, _, test_dl = generator.generate_dataloader(
        x_val=x["test"],
        y_val=data["test"]["label"],
        x_test=x["test"],
        y_test=data["test"]["label"],
        batch_size=BATCH,
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = CTRTrainer(
            model,
            optimizer_params={"lr": LR, "weight_decay": 0.0},
            n_epoch=args.epochs,
            device="cpu",
            loss_mode=model_name != "dien",
            model_path=folder,
        )
        seconds = []
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            for _ in range(args.epochs):
                began = time.perf_counter()
                trainer.train_one_epoch(train_dl)
                seconds.append(time.perf_counter() - began)
            auc = trainer.evaluate(model, test_dl)
    return auc, statistics.median(seconds)


RUNNERS = {"monolith-layers": run_ours, "DeepCTR-Torch": run_deepctr, "torch-rechub": run_rechub}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--embed-dim", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="din,dien")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    log = load_dataset("ml-100k")
    splits = build_datasets(log, DataConfig(max_len=args.max_len))
    print(log.summary())
    print(
        f"samples: train {len(splits[0]):,}, test {len(splits[2]):,}; T={args.max_len}, E={args.embed_dim}"
    )
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for seed in range(args.seeds):
        data = {
            part: arrays(ds, seed)
            for part, ds in zip(("train", "valid", "test"), splits, strict=True)
        }
        for model_name in args.models.split(","):
            for library, run in RUNNERS.items():
                try:
                    auc, seconds = run(model_name, log, splits, data, args, seed)
                except ImportError as err:
                    print(f"  {library}: not installed ({err})")
                    continue
                results.setdefault((model_name, library), []).append((auc, seconds))
                print(
                    f"  seed {seed} {model_name:<5} {library:<16} test AUC {auc:.4f}  {seconds:6.1f} s/epoch",
                    flush=True,
                )

    print(
        f"\n| model | library | test AUC (mean +- sd over {args.seeds} seeds) | s/epoch | fastest peer's time / ours |"
    )
    print("| --- | --- | --- | ---: | ---: |")
    for model_name in args.models.split(","):
        ours = results.get((model_name, "monolith-layers"))
        peers = [
            statistics.median(s for _, s in results[(model_name, lib)])
            for lib in RUNNERS
            if lib != "monolith-layers" and (model_name, lib) in results
        ]
        for library in RUNNERS:
            runs = results.get((model_name, library))
            if not runs:
                continue
            aucs = [a for a, _ in runs]
            spread = f" +- {statistics.stdev(aucs):.4f}" if len(aucs) > 1 else ""
            seconds = statistics.median(s for _, s in runs)
            ratio = ""
            if library == "monolith-layers" and peers and ours:
                ratio = f"{min(peers) / seconds:.2f}x"
            print(
                f"| {model_name} | {library} | {statistics.mean(aucs):.4f}{spread} | {seconds:.1f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
