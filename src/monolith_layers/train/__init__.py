"""Training, evaluation, checkpoints and reports for the CTR models."""

from .trainer import (
    CheckpointLoadError,
    DistributedError,
    EpochRecord,
    FitResult,
    TrainConfig,
    Trainer,
    init_distributed,
    load_model,
    read_checkpoint_config,
    resolve_device,
    save_model,
    seed_everything,
)

__all__ = [
    "CheckpointLoadError",
    "DistributedError",
    "EpochRecord",
    "FitResult",
    "TrainConfig",
    "Trainer",
    "init_distributed",
    "load_model",
    "read_checkpoint_config",
    "resolve_device",
    "save_model",
    "seed_everything",
]
