"""Interop with Monolith (TensorFlow): configs, variable names, weights and checkpoints."""

from .monolith import from_monolith, load_monolith_weights, monolith_variables
from .tf_checkpoint import (
    CheckpointError,
    TFCheckpoint,
    load_monolith_checkpoint,
    read_tf_checkpoint,
    write_tf_checkpoint,
)

__all__ = [
    "CheckpointError",
    "TFCheckpoint",
    "write_tf_checkpoint",
    "from_monolith",
    "load_monolith_checkpoint",
    "load_monolith_weights",
    "monolith_variables",
    "read_tf_checkpoint",
]
