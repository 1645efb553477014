"""monolith-layers: Monolith's recommendation layers for PyTorch.

Every public name is importable from here, e.g.
``from monolith_layers import DIN, AGRUCell, MLP, merge_tensor_list``.
"""

from . import activations, initializers, plotting, regularizers
from ._ops import (
    build_native,
    cpu_backend,
    cpu_backend_in_use,
    fused,
    fused_enabled,
    native,
    set_cpu_backend,
    set_fused,
    set_native,
    which_paths,
)
from .agru import AGRUCell, dynamic_rnn_with_attention, static_rnn_with_attention
from .batch_norm import BatchNorm
from .dense import Dense
from .feature_seq import DIEN, DIN, DMR_U2I
from .feature_trans import AutoInt, DimensionSelection, SeNet, iRazor
from .gru import KerasGRUCell, gru_sequence
from .interop import (
    CheckpointError,
    TFCheckpoint,
    from_monolith,
    load_monolith_checkpoint,
    load_monolith_weights,
    monolith_variables,
    read_tf_checkpoint,
    write_tf_checkpoint,
)
from .jagged import Jagged
from .layer import Layer, layer_losses, total_layer_loss
from .merge import merge_tensor_list
from .mlp import MLP
from .params import Params
from .summaries import SummaryRecorder, disable_summaries, enable_summaries

__version__ = "0.1.0"

__all__ = [
    "AGRUCell",
    "CheckpointError",
    "TFCheckpoint",
    "write_tf_checkpoint",
    "dynamic_rnn_with_attention",
    "static_rnn_with_attention",
    "BatchNorm",
    "fused",
    "fused_enabled",
    "set_cpu_backend",
    "set_fused",
    "build_native",
    "cpu_backend",
    "cpu_backend_in_use",
    "native",
    "set_native",
    "which_paths",
    "AutoInt",
    "DimensionSelection",
    "SeNet",
    "iRazor",
    "DIEN",
    "DIN",
    "DMR_U2I",
    "Dense",
    "KerasGRUCell",
    "gru_sequence",
    "Jagged",
    "Layer",
    "MLP",
    "Params",
    "SummaryRecorder",
    "activations",
    "disable_summaries",
    "enable_summaries",
    "from_monolith",
    "initializers",
    "layer_losses",
    "load_monolith_checkpoint",
    "load_monolith_weights",
    "read_tf_checkpoint",
    "merge_tensor_list",
    "plotting",
    "monolith_variables",
    "regularizers",
    "total_layer_loss",
]
