"""One training and evaluation loop for every CTR model.

* Adam or AdamW on ``binary_cross_entropy_with_logits`` plus every layer
  loss (:func:`monolith_layers.total_layer_loss`: regularisers, DIEN's
  auxiliary loss, iRazor's feature-weight loss);
* evaluation after every epoch: AUC and logloss from scikit-learn;
* early stopping on validation AUC (``patience`` epochs without a gain);
* checkpoints in ``out_dir`` (each written to a temporary file and renamed,
  so an interrupted run always leaves the last complete one):
  ``model.safetensors`` (best weights) + ``config.json`` (the model, data and
  training configs) load with one call, :func:`load_model`;
  ``trainer_state.pt`` (the last epoch's weights, optimiser, history, random
  state: one file, so a process killed at any instant leaves a consistent
  resume point) lets ``fit(resume=True)`` continue where a run stopped;
* results depend on the seed and the data only: the progress bar is drawn
  beside the data loader and never iterates it, and evaluation returns the
  scores in the dataset's order whatever the world size.

Data parallel: when ``torch.distributed`` is initialised (``torchrun``, see
:func:`init_distributed`), the model is wrapped in
``DistributedDataParallel``, each rank trains on its share of every epoch
(``DistributedSampler``), evaluation gives every sample to exactly one rank
and gathers the scores, so metrics are those of the whole split on every
rank, and only rank 0 writes checkpoints.

Streamed sample logs (:class:`~monolith_layers.data.SampleStream`) shard
themselves: each rank reads its own rows, every rank takes the same number
of steps, and evaluation gathers the scores back into the split's row
order. A TorchRec-sharded model (``sharded=``) trains and evaluates through
``DistributedModelParallel`` and saves its tables gathered on rank 0.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError, JsonConfig
from ..layer import total_layer_loss
from ..models import CTRModel, ModelConfig
from ..models.features import build_model

OPTIMIZERS = ("adam", "adamw")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
STATE_FILE = "trainer_state.pt"
# The epoch a model.safetensors holds, in its metadata: resume checks it against the state.
EPOCH_KEY = "epoch"


class CheckpointLoadError(ValueError):
    """A saved model is missing, incomplete, or belongs to another configuration."""


@dataclass
class TrainConfig(JsonConfig):
    """How a model is trained (JSON-serialisable).

    Args:
        epochs: at most this many passes over the training set.
        batch_size: training batch size; ``eval_batch_size`` for evaluation.
        lr, weight_decay: the optimiser's; ``optimizer`` is ``'adam'`` or ``'adamw'``.
        patience: stop after this many epochs without a better validation AUC.
        seed: weights, shuffling and negatives.
        threads: torch CPU threads (default: torch's choice).
        progress: tqdm progress bars (display only: results are the same without).
        device: ``'auto'`` (CUDA when torch sees a GPU, else the CPU), ``'cpu'``,
            ``'cuda'`` or ``'cuda:N'``; under torchrun ``'auto'`` and ``'cuda'``
            give each process the GPU of its ``LOCAL_RANK``.
        precision: ``'fp32'``, or ``'bf16'`` / ``'fp16'``: forward passes under
            ``torch.autocast`` in that dtype (weights and optimiser stay float32;
            fp16 adds a gradient scaler). The layers' operators compute in
            float32 under autocast (on float32 inputs, as embeddings are).
        max_steps: stop training after this many optimiser steps in all (the
            epoch under way is then evaluated as usual); None: no bound.
    """

    epochs: int = 5
    batch_size: int = 256
    eval_batch_size: int = 2048
    # Chosen on validation AUC (benchmarks/tune_defaults.py, ML-100K): 2e-3 reaches
    # 1e-3's best validation AUC in two thirds of the epochs, for DIN and DIEN.
    lr: float = 2e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    patience: int = 2
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    device: str = "auto"
    precision: str = "fp32"
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"TrainConfig: precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(
                f"TrainConfig: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        for name in ("epochs", "batch_size", "eval_batch_size", "patience", "max_steps"):
            value = getattr(self, name)
            if name == "max_steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainConfig: {name} must be a positive int, got {value!r}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"TrainConfig: lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"TrainConfig: optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}"
            )


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_auc: float
    valid_logloss: float
    seconds: float


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did: per-epoch records and the best epoch."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_auc: float = float("-inf")
    train_seconds: float = 0.0
    stopped_early: bool = False


class DistributedError(RuntimeError):
    """torchrun's environment is incomplete or the process group cannot start."""


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device a ``TrainConfig.device`` names, checked to exist.

    ``'auto'``: CUDA when torch sees a GPU, else the CPU. ``'auto'`` and
    ``'cuda'`` under torchrun: the GPU of the process's ``LOCAL_RANK`` (one
    process per GPU). A CUDA device this machine does not have is a
    :class:`ConfigError` that says what torch sees.
    """
    spec = str(spec)
    if not DEVICE_PATTERN.fullmatch(spec):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            f"device {spec!r}: torch {torch.__version__} sees no CUDA device here "
            "(torch.cuda.is_available() is False); use --device cpu (or auto)"
        )
    index = int(spec.split(":")[1]) if ":" in spec else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= count:
        raise ConfigError(f"device {spec!r}: cuda:{index} asked for, but there are {count} GPUs")
    return torch.device("cuda", index)


def _grad_scaler(device: torch.device, enabled: bool):
    """fp16's loss scaling (a pass-through when disabled)."""
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3: every device
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # pragma: no cover - older torch


def backend_for(device: torch.device) -> str:
    """The process-group backend for a device: NCCL for CUDA, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: str | torch.device = "auto") -> tuple[int, int]:
    """Start the process group when launched by ``torchrun``; returns ``(rank, world size)``.

    Without torchrun's variables this is a no-op returning ``(0, 1)``. The
    backend follows the device the processes train on (:func:`resolve_device`):
    gloo on the CPU, NCCL on GPUs, each process on the GPU of its ``LOCAL_RANK``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set: launch with "
            "torchrun (e.g. torchrun --nproc_per_node=2 -m monolith_layers train ...), which "
            "provides the rendezvous"
        )
    device = resolve_device(device)
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        store, rank, world = next(dist.rendezvous("env://"))
        # After `torchrun --max-restarts` restarts a failed group, its store still
        # holds the dead attempt's process-group keys (the peers' old addresses),
        # and the new group would try to connect to them: one namespace per attempt.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"monolith_layers/attempt_{attempt}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    except (RuntimeError, ValueError) as err:
        raise DistributedError(f"cannot start the {backend} process group: {err}") from None
    return dist.get_rank(), dist.get_world_size()


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar that only displays: callers ``update()`` it beside their loop.

    It is never handed the data loader: ``tqdm.auto``'s class calls ``iter()``
    on an iterable as it is built, and every ``iter()`` of a shuffling
    DataLoader draws from its generator, so a wrapped loader's shuffle order
    would depend on whether bars are on. A disabled bar is a real tqdm object
    whose methods do nothing, so every rank runs the same code whether or not
    it draws.
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not enabled)


def _metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    probs = np.clip(scores, 1e-7, 1 - 1e-7)
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "logloss": float(log_loss(labels, probs, labels=[0, 1])),
    }


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file and rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(str(tmp))
    # Some writers (safetensors) create their file 0600; give it the mode any
    # new file of this process gets, as for the JSON and PNG files beside it.
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def _read_umask() -> int:
    # The only way to read the umask is to set it; done once, at import, before
    # any thread of ours could create a file in between.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def save_model(
    model: CTRModel,
    directory: str | Path,
    extra: dict[str, Any] | None = None,
    file: str = WEIGHTS_FILE,
    epoch: int | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """``directory/model.safetensors`` + ``directory/config.json``; returns the weights path.

    ``epoch`` (the epoch the weights come from) is recorded in the file's metadata;
    ``state``: the weights to write (default: ``model.state_dict()``).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state is None else state
    weights = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    config = {"model": model.config.to_dict(), **(extra or {})}
    metadata = {"format": "monolith-layers"}
    if epoch is not None:
        metadata[EPOCH_KEY] = str(epoch)
    _atomic(directory / file, lambda tmp: save_file(weights, tmp, metadata=metadata))
    _atomic(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return directory / file


def read_checkpoint_config(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(weights file, config dict)`` for a train output folder or its weights file."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    config_file = weights.with_name(CONFIG_FILE)
    if not weights.is_file():
        raise CheckpointLoadError(
            f"{weights}: no saved model (expected a train output folder or a .safetensors file)"
        )
    if not config_file.is_file():
        raise CheckpointLoadError(
            f"{config_file}: missing; it holds the model config the weights belong to"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointLoadError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointLoadError(f"{config_file}: has no 'model' section")
    return weights, config


def load_model(path: str | Path, map_location: str | torch.device | None = None) -> CTRModel:
    """Rebuild a saved model in one call: a train output folder or its ``model.safetensors``.

    The weights must match the saved config exactly (every tensor's name and
    shape); anything else raises :class:`CheckpointLoadError`. ``map_location``:
    the device to put the model on (``'cpu'``, ``'cuda:0'``, ``'auto'``...;
    default the CPU), checked by :func:`resolve_device`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config = read_checkpoint_config(path)
    try:
        model = build_model(ModelConfig.from_dict(config["model"]))
    except (ConfigError, TypeError) as err:
        raise CheckpointLoadError(f"{weights.with_name(CONFIG_FILE)}: {err}") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise CheckpointLoadError(f"{weights}: not a readable safetensors file ({err})") from None
    _load_state(model, state, weights)
    return model if map_location is None else model.to(resolve_device(map_location))


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: saved {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointLoadError(
            f"{where}: the weights belong to another model config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shapes {wrong[:5]})"
        )
    model.load_state_dict(state)


class Trainer:
    """Trains one :class:`CTRModel`; see the module docstring.

    Args:
        model: the model.
        config: a :class:`TrainConfig`.
        out_dir: where checkpoints go (None: keep nothing on disk).
        extra_config: more JSON saved in ``config.json`` (the data config...).
        sharded: ``model`` wrapped in TorchRec's ``DistributedModelParallel``
            (:func:`monolith_layers.models.sharded.shard`): training and
            evaluation run through it, with no DDP wrapper of ours, and
            checkpoints hold the whole tables (gathered on rank 0).
    """

    def __init__(
        self,
        model: CTRModel,
        config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        extra_config: dict[str, Any] | None = None,
        sharded: torch.nn.Module | None = None,
    ) -> None:
        self.model = model
        self.config = config or TrainConfig()
        self.device = resolve_device(self.config.device)
        self.sharded = sharded
        if sharded is None:
            model.to(self.device)
        self.rank, self.world_size = _world()
        self.network = self.network_for_eval = sharded if sharded is not None else model
        self.steps = 0  # optimiser steps taken, for max_steps
        if self.world_size > 1 and sharded is None:
            on_gpu = self.device.type == "cuda"
            self.network = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if on_gpu else None
            )
        # Only rank 0 writes and draws: the others train and evaluate alongside it.
        self._draws = self.config.progress and self.rank == 0
        self.out_dir = None if out_dir is None or self.rank != 0 else Path(out_dir)
        self._resume_dir = None if out_dir is None else Path(out_dir)
        self.extra_config = {"train": self.config.to_dict(), **(extra_config or {})}
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        opt = torch.optim.AdamW if self.config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(
            self._trained_parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        self.scaler = _grad_scaler(self.device, enabled=self.config.precision == "fp16")

    def _trained_parameters(self) -> list[torch.nn.Parameter]:
        """The optimiser's parameters: a sharded model's fused tables train inside
        TorchRec's backward pass instead."""
        if self.sharded is not None:
            from ..models.sharded import dense_parameters

            return dense_parameters(self.sharded)
        return list(self.model.parameters())

    def _autocast(self):
        """The forward pass's precision (a no-op context for fp32)."""
        dtype = PRECISIONS[self.config.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @property
    def _pins(self) -> bool:
        """Batches are built in page-locked memory when they go to a GPU."""
        return self.device.type == "cuda"

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return batch
        # Non-blocking from pinned memory: the copy overlaps the previous step's work.
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, click probabilities)`` over a dataset, in the dataset's order.

        Distributed, rank r scores samples r, r + world, ... (each sample on
        exactly one rank, whatever the world size) and every rank gets all
        of them back, put back in the dataset's order, so the metrics'
        sums run in the same order as in one process.
        """
        if getattr(dataset, "shards_itself", False):
            return self._predict_stream(dataset)
        if self.world_size > 1:
            import torch.distributed as dist

            share = dataset.subset(np.arange(self.rank, len(dataset), self.world_size))
            local = self._predict_local(share)
            gathered = [None] * self.world_size
            dist.all_gather_object(gathered, local)
            labels = np.empty(len(dataset), dtype=local[0].dtype)
            scores = np.empty(len(dataset), dtype=local[1].dtype)
            for rank, (rank_labels, rank_scores) in enumerate(gathered):
                labels[rank :: self.world_size] = rank_labels
                scores[rank :: self.world_size] = rank_scores
            return labels, scores
        return self._predict_local(dataset)

    def _predict_local(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        loader = dataset.loader(self.config.eval_batch_size, shuffle=False, pin_memory=self._pins)
        labels, scores, _ = self._score(loader)
        return labels, scores

    def _score(self, loader) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(labels, click probabilities, row numbers or None)`` of a loader's batches."""
        was_training = self.model.training
        self.model.eval()
        labels, scores, rows = [], [], []
        with progress_bar(len(loader), "eval", self._draws) as bar:
            for batch in loader:
                labels.append(batch["label"].numpy())
                if "row" in batch:
                    rows.append(batch["row"].numpy())
                with self._autocast():
                    logits = self.network_for_eval(self._on_device(batch)).float()
                scores.append(torch.sigmoid(logits).cpu().numpy())
                bar.update()
        self.model.train(was_training)
        return (
            np.concatenate(labels),
            np.concatenate(scores),
            np.concatenate(rows) if rows else None,
        )

    @torch.no_grad()
    def _predict_stream(self, stream) -> tuple[np.ndarray, np.ndarray]:
        """A streamed split: each rank scores its shard (the same number of batches
        on every rank, as a sharded model's collectives need); the scores are
        gathered and put in the split's row order."""
        loader = stream.loader(
            self.config.eval_batch_size,
            shuffle=False,
            rank=self.rank,
            world=self.world_size,
            pin_memory=self._pins,
        )
        labels, scores, rows = self._score(loader)
        local = [rows, labels, scores]
        if self.world_size > 1:
            import torch.distributed as dist

            gathered = [None] * self.world_size
            dist.all_gather_object(gathered, local)
            local = [np.concatenate([g[i] for g in gathered]) for i in range(3)]
        order = np.argsort(local[0], kind="stable")
        return local[1][order], local[2][order]

    def evaluate(self, dataset) -> dict[str, float]:
        """``{'auc', 'logloss', 'samples', 'positives'}`` on a dataset."""
        dataset.check_evaluable()
        labels, scores = self.predict(dataset)
        counts = {"samples": int(len(labels)), "positives": int(labels.sum())}
        return {**_metrics(labels, scores), **counts}

    # -------------------------------------------------------------- training
    def _train_epoch(self, train, epoch: int) -> float:
        self.model.train()
        train.with_negative_history = self.model.needs_negative_history
        if hasattr(train, "start_epoch"):
            train.start_epoch(epoch)  # negatives a function of (seed, epoch): resumable
        loader = self._train_loader(train, epoch)
        total, count = 0.0, 0
        with progress_bar(len(loader), f"epoch {epoch}", self._draws) as bar:
            for step, batch in enumerate(loader, 1):
                if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                    break
                batch = self._on_device(batch)
                with self._autocast():
                    logits = self.network(batch).float()
                    loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
                    objective = loss + total_layer_loss(self.model)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(objective).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.steps += 1
                total += loss.item() * len(logits)
                count += len(logits)
                bar.update()
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        return total / max(count, 1)

    def _train_loader(self, train, epoch: int):
        """This rank's batches of one epoch, reshuffled per epoch the same way on all ranks."""
        if getattr(train, "shards_itself", False):
            return train.loader(
                self.config.batch_size,
                shuffle=True,
                epoch=epoch,
                rank=self.rank,
                world=self.world_size,
                pin_memory=self._pins,
            )
        sampler = None
        if self.world_size > 1:
            from torch.utils.data import DistributedSampler

            # Each rank a disjoint share, reshuffled every epoch the same way on all ranks.
            sampler = DistributedSampler(
                train, self.world_size, self.rank, shuffle=True, seed=self.config.seed
            )
            sampler.set_epoch(epoch)
        seed = self.config.seed * 1000 + epoch
        return train.loader(
            self.config.batch_size, shuffle=True, seed=seed, sampler=sampler, pin_memory=self._pins
        )

    def fit(
        self,
        train,
        valid,
        resume: bool = False,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> FitResult:
        """Train with early stopping on ``valid``; returns the :class:`FitResult`.

        The best weights (by validation AUC) are in the model afterwards and,
        with ``out_dir``, in ``model.safetensors``.
        """
        result = FitResult()
        start_epoch = 1
        if resume:
            result, start_epoch = self._resume()
        else:
            seed_everything(self.config.seed)
        best_state = None  # the best weights of this call; earlier ones are in out_dir
        bad_epochs = 0 if not result.history else result.history[-1].epoch - result.best_epoch
        for epoch in range(start_epoch, self.config.epochs + 1):
            if bad_epochs >= self.config.patience:
                result.stopped_early = True
                break
            began = time.perf_counter()
            train_loss = self._train_epoch(train, epoch)
            seconds = time.perf_counter() - began
            metrics = self.evaluate(valid)
            record = EpochRecord(epoch, train_loss, metrics["auc"], metrics["logloss"], seconds)
            result.history.append(record)
            result.train_seconds += seconds
            improved = metrics["auc"] > result.best_auc
            if improved:
                result.best_auc, result.best_epoch, bad_epochs = metrics["auc"], epoch, 0
                best_state = self._snapshot()
            else:
                bad_epochs += 1
            # A sharded model's tables are gathered by every rank, written by rank 0.
            weights = self._whole_state() if improved and self._resume_dir is not None else None
            if self.out_dir is not None:
                # The state first: it is the commit point. A process killed before
                # the best weights are written is repaired from it on resume.
                if self.sharded is None:
                    self._save_state(result)
                if improved:
                    save_model(
                        self.model, self.out_dir, self.extra_config, epoch=epoch, state=weights
                    )
            if on_epoch is not None:
                on_epoch(record)
            if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                break
        if best_state is not None:
            self._restore(best_state)
        elif result.best_epoch:  # resumed, and the best epoch came before the resume
            from safetensors.torch import load_file

            self.model.load_state_dict(load_file(str(self._resume_dir / WEIGHTS_FILE)))
        return result

    def _snapshot(self) -> dict[str, Any]:
        """A copy of the weights now (this rank's shards, for a sharded model)."""
        if self.sharded is not None:
            from ..models.sharded import local_state

            return local_state(self.sharded)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        if self.sharded is not None:
            from ..models.sharded import load_local_state

            load_local_state(self.sharded, snapshot)
        else:
            self.model.load_state_dict(snapshot)

    def _whole_state(self) -> dict[str, torch.Tensor] | None:
        """The weights to save, under the plain model's names: a sharded model's
        tables gathered on rank 0 (collective; None on the other ranks)."""
        if self.sharded is not None:
            from ..models.sharded import gathered_state

            return gathered_state(self.sharded)
        return self.model.state_dict()

    def _save_state(self, result: FitResult) -> None:
        state = {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": [asdict(r) for r in result.history],
            "best_epoch": result.best_epoch,
            "best_auc": result.best_auc,
            "train_seconds": result.train_seconds,
            "steps": self.steps,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "model_config": self.model.config.to_dict(),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _atomic(self.out_dir / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def _resume(self) -> tuple[FitResult, int]:
        folder = self._resume_dir
        if folder is None or not (folder / STATE_FILE).exists():
            raise CheckpointLoadError(f"{folder}: nothing to resume (no {STATE_FILE})")
        try:
            state = torch.load(folder / STATE_FILE, map_location=self.device, weights_only=False)
        except Exception as err:  # pickle, zip and I/O errors alike: the file is unusable
            raise CheckpointLoadError(f"{folder / STATE_FILE}: not readable ({err})") from None
        if not isinstance(state, dict) or "model" not in state:
            raise CheckpointLoadError(
                f"{folder / STATE_FILE}: written by an older version (no weights inside); "
                "start the run again"
            )
        if state["model_config"] != self.model.config.to_dict():
            raise CheckpointLoadError(f"{folder}: the saved run has another model config")
        _load_state(self.model, state["model"], folder / STATE_FILE)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # fp16 runs: the loss scale reached so far
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        self.steps = state.get("steps", 0)
        result = FitResult(
            history=[EpochRecord(**r) for r in state["history"]],
            best_epoch=state["best_epoch"],
            best_auc=state["best_auc"],
            train_seconds=state["train_seconds"],
        )
        last_epoch = result.history[-1].epoch if result.history else 0
        if result.best_epoch and result.best_epoch == last_epoch:
            self._repair_best_weights(folder, last_epoch)
        return result, last_epoch + 1

    def _repair_best_weights(self, folder: Path, epoch: int) -> None:
        """Rewrite model.safetensors when the process died between committing the
        state of its best epoch and writing that epoch's weights (the weights in
        the model now are that epoch's)."""
        if _saved_epoch(folder / WEIGHTS_FILE) == epoch or self.out_dir is None:
            return
        save_model(self.model, self.out_dir, self.extra_config, epoch=epoch)


def _saved_epoch(weights: Path) -> int | None:
    """The epoch recorded in a model.safetensors, None when absent or unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            value = (f.metadata() or {}).get(EPOCH_KEY)
    except (SafetensorError, OSError):
        return None
    return int(value) if value is not None and value.isdigit() else None
