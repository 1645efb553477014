"""Optional histogram summaries, written to TensorBoard.

Monolith records ``{name}_attention_outputs`` in DIN and ``nas_weight`` in
iRazor. Here summaries are off by default and cost one ``is None`` check per
forward. Switch them on for a model (any module holding our layers)::

    recorder = enable_summaries(model, log_dir="runs/exp1")
    for step, batch in enumerate(loader):
        recorder.step = step
        loss = model(batch) ...
    disable_summaries(model)

Tags are ``<layer name>/<tag>``, e.g. ``din/din_attention_outputs``.
``torch.utils.tensorboard`` (package ``tensorboard``) is imported only here,
only when summaries are switched on.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from .layer import iter_layers


class SummaryRecorder:
    """Writes histograms through a ``SummaryWriter`` at the current ``step``."""

    def __init__(self, writer: Any = None, log_dir: str | None = None) -> None:
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "summaries need the 'tensorboard' package: pip install tensorboard"
                ) from err
            writer = SummaryWriter(log_dir=log_dir)
        self.writer = writer
        self.step = 0
        self.tags_written: set[str] = set()

    def histogram(self, tag: str, values: torch.Tensor) -> None:
        self.writer.add_histogram(tag, values.detach().float().cpu(), global_step=self.step)
        self.tags_written.add(tag)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# layer id -> recorder. Kept outside the modules so that a layer with
# summaries on can still be deep-copied, pickled or saved (a SummaryWriter
# cannot); a copy starts with summaries off.
_RECORDERS: dict[int, SummaryRecorder] = {}


def recorder_of(layer: nn.Module) -> SummaryRecorder | None:
    """The recorder switched on for ``layer``, if any."""
    return _RECORDERS.get(id(layer))


def _forget(layer_id: int) -> None:
    _RECORDERS.pop(layer_id, None)


def enable_summaries(
    model: nn.Module, log_dir: str | None = None, writer: Any = None
) -> SummaryRecorder:
    """Turn histogram summaries on for every layer in ``model``."""
    recorder = SummaryRecorder(writer=writer, log_dir=log_dir)
    for layer in iter_layers(model):
        if id(layer) not in _RECORDERS:
            weakref.finalize(layer, _forget, id(layer))
        _RECORDERS[id(layer)] = recorder
        layer._summaries_on = True
    return recorder


def disable_summaries(model: nn.Module) -> None:
    """Turn them off again (the recorder's writer is left open for the caller)."""
    for layer in iter_layers(model):
        _RECORDERS.pop(id(layer), None)
        layer._summaries_on = False
