"""Training, evaluation, checkpoints and reports for the CTR models."""

from .trainer import (
    CheckpointLoadError,
    EpochRecord,
    FitResult,
    TrainConfig,
    Trainer,
    load_model,
    read_checkpoint_config,
    save_model,
    seed_everything,
)

__all__ = [
    "CheckpointLoadError",
    "EpochRecord",
    "FitResult",
    "TrainConfig",
    "Trainer",
    "load_model",
    "read_checkpoint_config",
    "save_model",
    "seed_everything",
]
