"""Serving artefacts of a trained CTR model: ONNX, torch.export programs, TorchScript.

Every artefact takes six tensors with a dynamic batch dimension B and the
history length T fixed at export time::

    user (B,) int64, item (B,) int64, category (B,) int64,
    history (B, T) int64, history_category (B, T) int64, mask (B, T) bool
    -> click probability (B,) float32

A model trained from a feature schema takes one tensor per feature instead,
named and ordered as the schema's features: ids (B,) int64 (from the
vocabularies in ``features.json``), raw numbers (B,) float32 (NaN where
missing) and id sequences (B, T) int64, left-aligned, 0-padded.

After writing, the artefact is loaded back and run on a batch of another
size (with padding) against the eager model; an artefact that disagrees
raises :class:`ExportError` instead of being left behind, so a silently wrong
graph never reaches serving.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._ops import fused
from .dense import Dense
from .models import CTRModel
from .models.features import FeatureCTRModel

FORMATS = ("onnx", "exported-program", "torchscript")
SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2", "torchscript": ".pt"}
INPUT_NAMES = ("user", "item", "category", "history", "history_category", "mask")
TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The format is unknown, a tool is missing, or the artefact does not match eager."""


def input_names(model: nn.Module) -> tuple[str, ...]:
    """The artefact's inputs, in order: the six above, or a schema model's features."""
    if isinstance(model, FeatureCTRModel):
        return tuple(f.name for f in model.schema.features)
    return INPUT_NAMES


class ServingModule(nn.Module):
    """A CTR model behind positional tensors named by :func:`input_names`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = input_names(model)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dict(zip(self.names, inputs, strict=True))))


def _lengths(batch: int, max_len: int, g: torch.Generator) -> torch.Tensor:
    """Every length from 0 to max_len can occur; the first row is full."""
    lengths = torch.randint(0, max_len + 1, (batch,), generator=g)
    lengths[0] = max_len
    return lengths


def _feature_inputs(
    model: FeatureCTRModel, batch: int, max_len: int, g
) -> tuple[torch.Tensor, ...]:
    """Ids in range, dense values with a NaN (missing), sequences of every length."""
    schema, sizes = model.schema, model.config.features["tables"]
    history = {f.name for f in schema.history}
    history_mask = torch.arange(max_len) < _lengths(batch, max_len, g).unsqueeze(1)
    inputs = []
    for f in schema.features:
        if f.kind == "sparse":
            inputs.append(torch.randint(1, sizes[f.name], (batch,), generator=g))
        elif f.kind == "dense":
            values = torch.randn(batch, generator=g) * 2 + 1
            values[batch // 2] = float("nan")
            inputs.append(values)
        else:
            steps = max_len if f.name in history else schema.sequence_len(f)
            mask = (
                history_mask
                if f.name in history
                else (torch.arange(steps) < _lengths(batch, steps, g).unsqueeze(1))
            )
            inputs.append(torch.randint(1, sizes[f.shares], (batch, steps), generator=g) * mask)
    return tuple(inputs)


def example_inputs(
    model: nn.Module, batch: int, max_len: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random valid inputs: ids in range, left-aligned masks of every length (0 included)."""
    config = model.config
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, FeatureCTRModel):
        return _feature_inputs(model, batch, max_len, g)
    lengths = _lengths(batch, max_len, g)
    mask = torch.arange(max_len) < lengths.unsqueeze(1)
    history = torch.randint(1, config.num_items + 1, (batch, max_len), generator=g) * mask
    history_category = (
        torch.randint(1, config.num_categories + 1, (batch, max_len), generator=g) * mask
    )
    return (
        torch.randint(0, config.num_users + 1, (batch,), generator=g),
        torch.randint(1, config.num_items + 1, (batch,), generator=g),
        torch.randint(1, config.num_categories + 1, (batch,), generator=g),
        history,
        history_category,
        mask,
    )


def _dynamic_batch(names) -> tuple[tuple[dict[int, object], ...]]:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    return (tuple({0: batch} for _ in names),)


def _require_onnx_tools() -> None:
    """The ONNX exporter needs onnx + onnxscript, its check onnxruntime: say so before writing."""
    import importlib.util

    tools = ("onnx", "onnxscript", "onnxruntime")
    missing = [m for m in tools if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"export_model: the onnx format needs {', '.join(missing)}: "
            "pip install 'monolith-layers[export]'"
        )


def _run_artefact(fmt: str, path: Path, inputs) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: x.cpu().numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
        return session.run(None, feeds)[0]
    if fmt == "exported-program":
        return torch.export.load(str(path)).module()(*inputs).detach().cpu().numpy()
    return torch.jit.load(str(path))(*inputs).detach().cpu().numpy()


@contextlib.contextmanager
def _frozen_kernels(model: nn.Module):
    """Each weight-normalised :class:`Dense` multiplies by its kernel computed
    once, a constant of the artefact, while it is traced: a served model's
    weights do not change, and the norm's five ops per layer (15 of the DIN
    CTR model's 45 graph nodes) would otherwise run on every request."""
    denses = [m for m in model.modules() if isinstance(m, Dense) and m.allow_kernel_norm]
    for dense in denses:
        kernel = Dense.effective_kernel(dense).detach().clone()
        dense.effective_kernel = lambda kernel=kernel: kernel
    try:
        yield
    finally:
        for dense in denses:
            del dense.effective_kernel


def _write_and_check(model: CTRModel, fmt: str, path: Path, max_len: int) -> None:
    serving = ServingModule(model).eval()
    device = next(model.parameters()).device  # traced and checked where the model is
    inputs = tuple(t.to(device) for t in example_inputs(model, 4, max_len))
    # ONNX and TorchScript record the reference tensor ops (they cannot carry
    # the registered operators); an exported program keeps the operators.
    recorded_ops = fused(False) if fmt in ("onnx", "torchscript") else contextlib.nullcontext()
    with torch.no_grad(), warnings.catch_warnings(), recorded_ops, _frozen_kernels(model):
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            program = torch.onnx.export(
                serving,
                inputs,
                dynamo=True,
                input_names=list(serving.names),
                output_names=["probability"],
                dynamic_shapes=_dynamic_batch(serving.names),
            )
            program.save(str(path))
        elif fmt == "exported-program":
            torch.export.save(
                torch.export.export(serving, inputs, dynamic_shapes=_dynamic_batch(serving.names)),
                str(path),
            )
        else:
            torch.jit.trace(serving, inputs, check_trace=False).save(str(path))
        check = tuple(t.to(device) for t in example_inputs(model, 7, max_len, seed=1))
        want = serving(*check).cpu().numpy()
        got = _run_artefact(fmt, path, check)
    if got.shape != want.shape or not np.allclose(got, want, atol=TOLERANCE, rtol=TOLERANCE):
        raise ExportError(
            f"export_model: the {fmt} artefact disagrees with the eager model on a batch of 7 "
            f"(max abs difference {np.abs(got - want).max() if got.shape == want.shape else 'shape'}); "
            "nothing was written"
        )


def export_model(
    model: CTRModel, fmt: str, path: str | os.PathLike, max_len: int | None = None
) -> Path:
    """Write a serving artefact of ``model`` in format ``fmt`` to ``path`` and check it.

    Args:
        model: a trained model, on the device the artefact is for (an exported
            program or TorchScript file records it; ONNX is checked with
            onnxruntime on the CPU).
        fmt: ``'onnx'``, ``'exported-program'`` (``torch.export``, a ``.pt2``)
            or ``'torchscript'`` (``torch.jit.trace``).
        path: the file to write.
        max_len: T of the served histories (default: the model's ``max_len``;
            DMR needs exactly that).
    """
    if fmt not in FORMATS:
        raise ExportError(f"export_model: format must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        _require_onnx_tools()
    max_len = max_len or (
        model.schema.history_len or 1
        if isinstance(model, FeatureCTRModel)
        else model.config.max_len
    )
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ExportError(f"export_model: max_len must be a positive int, got {max_len!r}")
    if model.config.encoder == "dmr" and max_len != model.config.max_len:
        raise ExportError(
            f"export_model: DMR's position embeddings fix T = {model.config.max_len}; got max_len={max_len}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed once checked: a failed export never
    # replaces (or deletes) a file that was there before.
    draft = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        _write_and_check(model, fmt, draft, max_len)
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return path
