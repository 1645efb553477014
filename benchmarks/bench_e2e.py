"""End to end on a rating log or a sample log: our DIN / DIEN models against
DeepCTR-Torch's and torch-rechub's, the same task, each library trained to
its best validation epoch.

The task, identical for every library, comes from one of two kinds of data:

* ``--data`` an interaction log (ML-100K from the ``recbole`` distribution by
  default; any RecBole / MovieLens / Amazon folder the CLI reads, e.g. the
  ML-1M-shaped log of ``make_recbole_log.py``): our leave-last-out split
  (rating >= 4 is a click; the second-to-last click of each user is the
  validation set, the last the test set), user / item / category fields,
  histories of the last ``--max-len`` clicks (item and category ids).
* ``--schema FILE --data PATH`` a sample log (Parquet or CSV, as ``monolith-layers
  train --schema`` reads it, with ``--valid`` / ``--test`` files or the
  schema's split): every feature of the schema. Ids come from our encoder,
  fitted on the training rows, so every library sees the same ids. Each
  peer gets every feature its model class can read: sparse features as its
  sparse features, the target features and their histories as its
  target / history pair, side sequences as mean-pooled sequence features,
  dense features standardised with the training mean and sd (missing values
  at the mean). What a peer's class cannot read is printed and named in the
  table's notes: torch-rechub's DIN / DIEN take no dense features, and
  DeepCTR-Torch's DIEN feeds its DNN no side sequences. Ours trains on the
  files streamed, as ``train --schema`` does, drawing its DIEN negatives
  from the batch each epoch; the peers get the splits in memory, with one
  negative per history position drawn the same way once per seed.

Every library: embeddings of ``--embed-dim``, histories left-aligned and
zero padded, Adam at batch 256 (lr 1e-3 for the peers, their default; ours
at its own default, ``TrainConfig().lr``), and, for DIEN on an interaction
log, one sampled negative per history position for the auxiliary loss (the
same negatives for every library). Each library runs as its users run it:
its own model class with its defaults (hidden sizes, attention
activations, DeepCTR's Dice in DIN), its own input packing and training
loop (DeepCTR-Torch ``model.fit``; torch-rechub ``CTRTrainer``); ours is
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
fastest peer's time to its best epoch over ours. Our native kernels are
built (or loaded from the cache) before the first timed run, as
``monolith-layers build-kernels`` builds them once per environment.

    pip install -e ".[bench,demo]" requests && pip install --no-deps recbole
    python benchmarks/bench_e2e.py --seeds 5 --max-epochs 20 --patience 2
    python benchmarks/make_recbole_log.py --out /tmp/ml-1m-shaped
    python benchmarks/bench_e2e.py --data /tmp/ml-1m-shaped --seeds 5 --max-epochs 10 --patience 1
    monolith-layers samples --data ml-100k --out /tmp/ml100k-samples   # + side features
    python benchmarks/bench_e2e.py --schema /tmp/ml100k-samples/schema.json \
        --data /tmp/ml100k-samples/train.parquet --valid /tmp/ml100k-samples/valid.parquet \
        --test /tmp/ml100k-samples/test.parquet --seeds 5 --max-epochs 20 --patience 2
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
from harness import kernels_ready
from sklearn.metrics import log_loss, roc_auc_score

from monolith_layers.config import ConfigError
from monolith_layers.data import DataConfig, DataError, build_datasets, load_dataset
from monolith_layers.data.encoding import describe
from monolith_layers.data.schema import Schema
from monolith_layers.data.stream import PARTS, schema_datasets
from monolith_layers.models import CTRModel, ModelConfig
from monolith_layers.models.features import FeatureCTRModel, feature_spec
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


@dataclass
class Task:
    """The features every library reads, by name, and the tables behind them.

    Each split's arrays (``data[part]``) hold, by name: every sparse feature
    (B,) and target (B,) int64, every side sequence (B, L) int64, every dense
    feature (B,) float32 standardised, and for each target ``t``
    ``hist_t`` / ``neg_hist_t`` (B, T) (the history and its DIEN negatives,
    0-padded), ``seq_length`` (B,) and ``label`` (B,). The ``hist_`` names
    are DeepCTR-Torch's convention for a target's history.
    """

    sparse: list[str]  # the other sparse features (each owns a table of its name)
    targets: list[str]  # the features attention queries with, in history order
    side_sequences: dict[str, str]  # feature -> its table (mean-pooled)
    dense: list[str]
    tables: dict[str, int]  # table -> rows, padding (0) included
    max_len: int


def interaction_task(log, max_len: int) -> Task:
    """User / item / category ids and the item and category history (ids from 1)."""
    return Task(
        sparse=["user"],
        targets=["item", "cate"],
        side_sequences={},
        dense=[],
        tables={
            "user": log.num_users + 1,
            "item": log.num_items + 1,
            "cate": log.num_categories + 1,
        },
        max_len=max_len,
    )


def interaction_arrays(dataset, seed: int) -> dict[str, np.ndarray]:
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


def sample_log_task(encoder) -> Task:
    """A schema's features as the peers take them. A target without a history
    is a plain sparse feature for them (their attention pairs each target with
    one history)."""
    schema = encoder.schema
    targets = [f.shares for f in schema.history]
    task = Task(
        sparse=[f.name for f in schema.sparse if f.name not in targets],
        targets=targets,
        side_sequences={f.name: f.table for f in schema.side_sequences},
        dense=[f.name for f in schema.dense],
        tables=encoder.table_sizes(),
        max_len=schema.history_len,
    )
    taken = {*task.sparse, *task.side_sequences, *task.dense, *targets}
    made = {f"{prefix}hist_{t}" for t in targets for prefix in ("", "neg_")} | {"seq_length"}
    history = {f.name for f in schema.history}
    clash = sorted((taken & made) - history)
    if clash:
        raise ValueError(f"schema features {clash} clash with the names the peers give histories")
    return task


def sample_log_arrays(stream, task: Task, seed: int) -> dict[str, np.ndarray]:
    """A split of a sample log in memory, in the task's names: dense features
    standardised (missing at the mean), one negative per history position
    drawn from the batch of 8,192 rows it was read in (seeded)."""
    schema = stream.encoder.schema
    stream.with_negative_history = bool(schema.history)
    chunks = list(stream.loader(8192, shuffle=False, epoch=seed))
    stream.with_negative_history = False
    whole = {k: torch.cat([c[k] for c in chunks]).numpy() for k in chunks[0]}
    out = {name: whole[name] for name in (*task.sparse, *task.side_sequences, *task.targets)}
    for name in task.dense:
        mean, sd = stream.encoder.dense_stats[name]
        values = (whole[name] - mean) / (sd if sd > 0 else 1.0)
        out[name] = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    for i, feature in enumerate(schema.history):
        out[f"hist_{feature.shares}"] = whole[feature.name]
        out[f"neg_hist_{feature.shares}"] = whole["negative_history"][:, i]
    if schema.history:
        out["seq_length"] = whole["mask"].sum(1)
    out["label"] = whole["label"]
    return out


def peer_notes(task: Task) -> dict[str, str]:
    """What each peer's model class leaves out of the task, by (library, model)."""
    notes = {}
    if task.dense:
        notes["torch-rechub"] = f"its DIN / DIEN read no dense features: {task.dense} left out"
    if task.side_sequences:
        notes["DeepCTR-Torch dien"] = (
            f"its DIEN's DNN reads no side sequences: {list(task.side_sequences)} unused"
        )
    return notes


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


def our_model(model_name: str, task: Task, splits, args) -> tuple[torch.nn.Module, object]:
    """Our model at its defaults and the training split it reads: ``CTRModel`` on
    an interaction log (with the benchmark's fixed negatives), ``FeatureCTRModel``
    on a sample log (streamed, as ``train --schema`` trains)."""
    settings = {"encoder": model_name, "embed_dim": args.embed_dim, "max_len": task.max_len}
    if args.schema:
        encoder = splits[3]
        config = ModelConfig(**settings, features=feature_spec(encoder))
        return FeatureCTRModel(config), splits[0]
    config = ModelConfig(
        **settings,
        num_users=task.tables["user"] - 1,
        num_items=task.tables["item"] - 1,
        num_categories=task.tables["cate"] - 1,
    )
    return CTRModel(config), None


def run_ours(model_name, task, splits, data, args, seed):
    seed_everything(seed)
    model, train = our_model(model_name, task, splits, args)
    if train is None:
        train = _FixedNegatives(splits[0], data["train"])
    else:
        train.seed = seed  # the stream's shuffle and negatives
    # Ours trains with its own defaults (lr and batch size from TrainConfig), as
    # the peers do with theirs.
    train_config = TrainConfig(
        epochs=args.max_epochs,
        patience=args.patience,
        seed=seed,
        progress=False,
    )
    trainer = Trainer(model, train_config)
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


def run_deepctr(model_name, task, splits, data, args, seed):
    _peer_has("DeepCTR-Torch", model_name)
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIEN, DIN

    e, t = args.embed_dim, task.max_len

    def sparse(name, table):
        return SparseFeat(name, task.tables[table], e, embedding_name=table)

    def history(name, target):
        return VarLenSparseFeat(sparse(name, target), t, length_name="seq_length")

    columns = [sparse(name, name) for name in task.sparse]
    columns += [sparse(name, name) for name in task.targets]
    columns += [DenseFeat(name, 1) for name in task.dense]
    columns += [
        VarLenSparseFeat(sparse(name, table), data["train"][name].shape[1], combiner="mean")
        for name, table in task.side_sequences.items()
    ]
    columns += [history(f"hist_{target}", target) for target in task.targets]
    if model_name == "dien":
        columns += [history(f"neg_hist_{target}", target) for target in task.targets]
        model = DIEN(columns, task.targets, gru_type="AUGRU", use_negsampling=True, seed=seed)
    else:
        model = DIN(columns, task.targets, seed=seed)
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy")
    names = [c.name for c in columns] + (["seq_length"] if task.targets else [])
    inputs = {part: {k: data[part][k] for k in names} for part in PARTS}

    def train_epoch():
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(
                inputs["train"], data["train"]["label"], batch_size=BATCH, epochs=1, verbose=0
            )

    def predict(part):
        return model.predict(inputs[part], batch_size=2048)

    return early_stopped(model, train_epoch, predict, data, args)


# ------------------------------------------------------------- torch-rechub
def run_rechub(model_name, task, splits, data, args, seed):
    _peer_has("torch-rechub", model_name)
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.ranking import DIEN, DIN
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.manual_seed(seed)
    e = args.embed_dim

    def sequence(name, table, pooling):
        return SequenceFeature(
            name, task.tables[table], e, pooling=pooling, shared_with=table, padding_idx=0
        )

    features = [SparseFeature(name, task.tables[name], e) for name in task.sparse]
    # A side sequence with a table of its own owns it; one that reads another's shares it.
    features += [
        SequenceFeature(name, task.tables[name], e, pooling="mean", padding_idx=0)
        if name == table
        else sequence(name, table, "mean")
        for name, table in task.side_sequences.items()
    ]
    targets = [SparseFeature(t, task.tables[t], e, padding_idx=0) for t in task.targets]
    history = [sequence(f"hist_{t}", t, "concat") for t in task.targets]
    names = [f.name for f in features + targets + history]
    if model_name == "dien":
        negatives = [sequence(f"neg_hist_{t}", t, "concat") for t in task.targets]
        names += [f.name for f in negatives]
        model = DIEN(features, history, negatives, targets, mlp_params={"dims": [256, 128]})
    else:
        model = DIN(
            features, history, targets, mlp_params={"dims": [256, 128]}, attention_mlp_params={}
        )
    x = {part: {k: data[part][k] for k in names} for part in PARTS}
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
        f"| model | library | test AUC (mean +- sd, {seeds} seed{'s' * (seeds != 1)}) "
        "| test logloss | best epoch "
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


def load_task(args) -> tuple[Task, tuple, Callable[[int], dict]]:
    """``(task, splits, arrays)`` of ``--data``: our splits (three datasets, or
    three streams and the encoder) and ``arrays(seed)``: every split in memory
    for the peers. Raises DataError / ConfigError on bad data or schema."""
    if args.schema:
        schema = Schema.load(args.schema)
        if args.max_len is not None:
            schema = Schema.from_dict({**schema.to_dict(), "max_len": args.max_len})
        splits = schema_datasets(schema, args.data, args.valid, args.test)
        for part in splits[1:3]:
            part.check_evaluable()
        task = sample_log_task(splits[3])
        print(f"{args.data}: sample log, schema {args.schema}")
        for line in describe(splits[3]):
            print(line)

        def arrays(seed):
            return {
                part: sample_log_arrays(stream, task, seed)
                for part, stream in zip(PARTS, splits[:3], strict=True)
            }

    else:
        log = load_dataset(args.data)
        task = interaction_task(log, args.max_len or 50)
        splits = build_datasets(log, DataConfig(max_len=task.max_len))
        print(log.summary())

        def arrays(seed):
            return {
                part: interaction_arrays(ds, seed) for part, ds in zip(PARTS, splits, strict=True)
            }

    print(
        f"samples: train {len(splits[0]):,}, valid {len(splits[1]):,}, test {len(splits[2]):,}; "
        f"T={task.max_len}, E={args.embed_dim}; up to {args.max_epochs} epochs, "
        f"patience {args.patience}"
    )
    return task, splits, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--data",
        default="ml-100k",
        help="ml-100k, or a RecBole / MovieLens / Amazon file or folder (as the CLI's --data); "
        "with --schema, a sample log: a Parquet file, a folder of them, or a CSV file",
    )
    parser.add_argument(
        "--schema", metavar="FILE", help="a feature schema (JSON): --data is then a sample log"
    )
    parser.add_argument("--valid", metavar="PATH", help="with --schema: a validation sample log")
    parser.add_argument("--test", metavar="PATH", help="with --schema: a test sample log")
    parser.add_argument(
        "--seeds", type=int, default=1, help="how many seeds (each trains every model)"
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--max-epochs", type=int, default=20, help="the most epochs a run trains")
    parser.add_argument(
        "--patience", type=int, default=2, help="epochs without a better validation AUC"
    )
    parser.add_argument("--embed-dim", type=int, default=8, help="embedding size E, every library")
    parser.add_argument(
        "--max-len", type=int, help="history length T (default: 50, or the schema's max_len)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--models", default="din,dien", help="din, dien, and for ours alone mean, sum, dmr, ..."
    )
    parser.add_argument(
        "--libraries", default=",".join(RUNNERS), help="a comma-separated subset of the libraries"
    )
    args = parser.parse_args()
    if (args.valid or args.test) and not args.schema:
        parser.error("--valid and --test go with --schema (a sample log)")
    unknown = sorted(set(args.libraries.split(",")) - set(RUNNERS))
    if unknown:
        parser.error(f"--libraries: unknown {unknown}; choose from {list(RUNNERS)}")
    for name in args.models.split(","):
        try:  # a misspelt model fails here, not after the data is loaded
            ModelConfig.from_dict({"encoder": name})
        except ConfigError as err:
            parser.error(f"--models: {err}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    try:
        task, splits, arrays = load_task(args)
    except (DataError, ConfigError, ValueError) as err:
        parser.error(str(err))
    models, libraries = args.models.split(","), args.libraries.split(",")
    if "monolith-layers" in libraries:
        # A once-per-environment cost (`monolith-layers build-kernels`), not
        # part of any training run: paid here so no run's first epoch carries it.
        print(kernels_ready())
    notes = {k: v for k, v in peer_notes(task).items() if k.split()[0] in libraries}
    for where, note in notes.items():
        print(f"  note, {where}: {note}")
    results: dict[tuple[str, str], list[Run]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        data = arrays(seed)
        for model_name in models:
            for library in libraries:
                try:
                    run = RUNNERS[library](model_name, task, splits, data, args, seed)
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
    for where, note in notes.items():
        print(f"note, {where}: {note}")


if __name__ == "__main__":
    main()
