"""The fast path: every kernel a registered operator, in this one subpackage.

The layers call one function per operator (``torch.ops.monolith_layers.*``):

=====================  ===============================================  ==========================
operator               computes                                         called by
=====================  ===============================================  ==========================
``gru``                Keras GRU over real steps                        ``gru_sequence``, DIEN
``agru``               AGRU / AUGRU / plain update over real steps      ``dynamic_rnn_with_attention``, DIEN
``din_attention``      DIN's tower and pooling over real keys           ``DIN``
``autoint``            AutoInt's attention rounds                       ``AutoInt``
``senet``              SeNet's squeeze, excitation and scaling          ``SeNet``
=====================  ===============================================  ==========================

each with a ``*_backward`` operator registered as its autograd formula and
a fake implementation for shapes, so ``torch.compile(fullgraph=True)`` and
``torch.export`` see one opaque call per layer. A layer asks
:func:`use_kernel` first; when it says no (switched off, TorchScript / ONNX
export, not float32 / float64 (autocast's bf16 included), no kernels for the device, kernels
unbuildable) the layer runs its reference tensor ops. The kernels: C++ on
the CPU (``csrc/``), Triton on CUDA (``triton_kernels.py`` via ``gpu.py``,
for ``gru``, ``agru`` and ``din_attention``; also on CPU tensors in
Triton's interpreter under ``cpu_backend("triton")``). Nothing here imports
a layer.
"""

from __future__ import annotations

from .build import build_native
from .din import ACTIVATIONS as DIN_ACTIVATIONS
from .din import din_attention
from .interactions import autoint, senet
from .recurrences import agru, gru
from .registry import use_kernel
from .switch import (
    cpu_backend,
    cpu_backend_in_use,
    fused,
    fused_enabled,
    is_tracing,
    native,
    set_cpu_backend,
    set_fused,
    set_native,
    which_paths,
)

__all__ = [
    "agru",
    "autoint",
    "build_native",
    "cpu_backend",
    "cpu_backend_in_use",
    "din_attention",
    "DIN_ACTIVATIONS",
    "fused",
    "fused_enabled",
    "gru",
    "is_tracing",
    "native",
    "senet",
    "set_cpu_backend",
    "set_fused",
    "set_native",
    "use_kernel",
    "which_paths",
]
