"""The report of a run: ``metrics.json``, ``report.md`` and PNG plots.

Plots (matplotlib's Figure API: no pyplot, no change of the process-wide
backend): ``training_curves.png`` (train loss and validation AUC per epoch,
one line per model), ``auc_by_model.png`` (test AUC and logloss per model),
``din_attention.png`` (a DIN model's attention weights over a few test
users' histories, with the steps whose category matches the candidate's
marked) and ``irazor_dims.png`` (iRazor's choice probabilities and the
embedding size kept per field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import CTRModel
from ..plotting import plot_dimension_selection
from .trainer import FitResult

FIELD_NAMES = ["user", "item", "category", "interest (item)", "interest (category)"]
PLOT_FILES = ("training_curves.png", "auc_by_model.png", "din_attention.png", "irazor_dims.png")
REPORT_FILES = ("metrics.json", "report.md", *PLOT_FILES)


@dataclass
class ModelRun:
    """One trained model's figures for the report."""

    name: str
    model: CTRModel
    fit: FitResult
    test: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def auc_interval(self) -> float | None:
        """Half-width of the test AUC's 95 % interval (Hanley-McNeil); None
        when the test counts are unknown."""
        if "positives" not in self.test:
            return None
        positives = self.test["positives"]
        return auc_interval(self.test["auc"], positives, self.test["samples"] - positives)

    def metrics(self) -> dict[str, Any]:
        return {
            "test_auc": self.test["auc"],
            "test_auc_95": self.auc_interval(),
            "test_samples": self.test.get("samples"),
            "test_logloss": self.test["logloss"],
            "train_seconds": round(self.fit.train_seconds, 2),
            "seconds_per_epoch": round(self.fit.train_seconds / max(1, len(self.fit.history)), 2),
            "params": self.model.num_parameters(),
            "epochs": len(self.fit.history),
            "best_epoch": self.fit.best_epoch,
            "valid_auc": self.fit.best_auc,
            "history": [vars(r) for r in self.fit.history],
            **self.extra,
        }


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the report needs matplotlib: pip install 'monolith-layers[demo]'"
        ) from err
    return Figure(figsize=(width, height), dpi=110)


def plot_training_curves(runs: list[ModelRun], path: Path) -> None:
    fig = _figure(10.5, 4)
    loss_ax, auc_ax = fig.subplots(1, 2)
    for run in runs:
        epochs = [r.epoch for r in run.fit.history]
        loss_ax.plot(epochs, [r.train_loss for r in run.fit.history], marker="o", label=run.name)
        auc_ax.plot(epochs, [r.valid_auc for r in run.fit.history], marker="o")
    loss_ax.set(title="training loss (BCE)", xlabel="epoch", ylabel="logloss")
    auc_ax.set(title="validation AUC", xlabel="epoch", ylabel="AUC")
    for ax in (loss_ax, auc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    # One legend for both panels, beside them, where it can hide no point.
    fig.legend(loc="center right", fontsize=8, title="model", title_fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path)


def auc_interval(auc: float, positives: int, negatives: int, z: float = 1.96) -> float:
    """Half-width of the normal-approximation confidence interval of an AUC from
    the Hanley-McNeil (1982) standard error (z = 1.96: 95 %)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / max(1, positives * negatives)
    return z * float(np.sqrt(max(variance, 0.0)))


def plot_auc_by_model(runs: list[ModelRun], path: Path, dataset: str) -> None:
    fig = _figure(max(6.0, 1.6 + 1.3 * len(runs)), 4.4)
    ax = fig.subplots()
    names = [r.name for r in runs]
    aucs = np.array([r.test["auc"] for r in runs])
    samples = runs[0].test["samples"]
    positives = runs[0].test.get("positives")
    halves = np.array([r.auc_interval() or 0.0 for r in runs])
    colors = ["#999999" if r.name == "mean" else "#3b75af" for r in runs]
    bars = ax.bar(names, aucs, color=colors, yerr=halves, capsize=6, ecolor="black")
    for bar, run, half in zip(bars, runs, halves, strict=True):
        ax.annotate(
            f"{run.test['auc']:.4f}\nlogloss {run.test['logloss']:.3f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height() + half),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    low = max(0.0, float((aucs - halves).min()) - 0.03)
    ax.set_ylim(low, min(1.0, float((aucs + halves).max()) + 0.04))
    size = f"{samples:,} test samples" + (f", {positives:,} clicks" if positives else "")
    # The interval's note on a line of its own: beside the sizes it overran a
    # one-model figure's width.
    interval = "\nbars: 95 % interval (Hanley-McNeil)" if halves.any() else ""
    ax.set_title(f"test AUC by model: {_short(dataset)}\n{size}{interval}", fontsize=10)
    ax.set_ylabel("AUC")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _short(text: str, limit: int = 48) -> str:
    """A dataset name (often a path) short enough for a title."""
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


@torch.no_grad()
def plot_din_attention(run: ModelRun, dataset, path: Path, users: int = 8) -> None:
    """Attention weights of DIN over the histories of a few test samples."""
    model = run.model.eval()
    lengths = dataset.history_len
    rows = np.flatnonzero(lengths >= min(8, dataset.max_len))[:users]
    if len(rows) == 0:
        rows = np.arange(min(users, len(dataset)))
    batch = dataset.__getitems__(rows)
    embedded = model.embed(batch)
    target, history = embedded["target"], embedded["history"]
    din = model.encoder
    weights = din.attention_logits(target, history).squeeze(-1)
    if din.decay:
        weights = weights / din.embed_dim**0.5
    mask = batch["mask"].numpy()
    weights = np.where(mask, weights.numpy(), np.nan)
    shown = max(1, int(mask.sum(1).max()))
    fig = _figure(max(6.5, 3.5 + 0.28 * shown), 1.9 + 0.45 * len(rows))
    ax = fig.subplots()
    # DIN's weights are not normalised and may be negative: a diverging scale around 0.
    shown_weights = weights[:, :shown]
    finite = np.abs(shown_weights[np.isfinite(shown_weights)])
    limit = (float(finite.max()) if finite.size else 0.0) or 1.0
    image = ax.imshow(shown_weights, aspect="auto", cmap="coolwarm", vmin=-limit, vmax=limit)
    match = (batch["history_category"].numpy() == batch["category"].numpy()[:, None]) & mask
    ys, xs = np.nonzero(match[:, :shown])
    ax.scatter(
        xs,
        ys,
        marker="o",
        s=30,
        facecolors="none",
        edgecolors="black",
        label="same category as the candidate",
    )
    ax.set_yticks(
        range(len(rows)),
        [
            f"user {int(u)} ({'click' if lab else 'no click'})"
            for u, lab in zip(batch["user"], batch["label"], strict=True)
        ],
        fontsize=8,
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(
        xlabel="history position (oldest first; blank = padding)",
        title=f"{run.name}: DIN attention weights over test histories",
    )
    colorbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    colorbar.set_label(
        "attention weight: unnormalised (DIN has no softmax), can be negative", fontsize=8
    )
    # Below the axes, outside the heatmap: the legend covers no cell.
    fig.legend(loc="lower center", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)


def plot_irazor(run: ModelRun, path: Path, threshold: float = 0.9) -> None:
    fig = plot_dimension_selection(run.model.transform, threshold, FIELD_NAMES)
    fig.savefig(path, dpi=110)


def _table(runs: list[ModelRun]) -> str:
    baseline = next((r.test["auc"] for r in runs if r.name == "mean"), None)
    lines = [
        "| model | test AUC | 95 % interval | vs mean | test logloss | train s | s/epoch | epochs | params |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        m = r.metrics()
        delta = "" if baseline is None or r.name == "mean" else f"{m['test_auc'] - baseline:+.4f}"
        interval = "" if m["test_auc_95"] is None else f"+- {m['test_auc_95']:.4f}"
        lines.append(
            f"| {r.name} | {m['test_auc']:.4f} | {interval} | {delta} | {m['test_logloss']:.4f} | "
            f"{m['train_seconds']:.1f} | {m['seconds_per_epoch']:.1f} | {m['epochs']} | {m['params']:,} |"
        )
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    dataset_name: str,
    runs: list[ModelRun],
    test_dataset=None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, report.md and the plots into ``out_dir``; returns the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "dataset": dataset_name,
        "models": {r.name: r.metrics() for r in runs},
        "settings": settings or {},
    }
    plots = {"training_curves.png": "Training curves", "auc_by_model.png": "Test AUC by model"}
    plot_training_curves(runs, out_dir / "training_curves.png")
    plot_auc_by_model(runs, out_dir / "auc_by_model.png", dataset_name)
    din = next((r for r in runs if r.model.config.encoder == "din"), None)
    if din is not None and test_dataset is not None:
        plot_din_attention(din, test_dataset, out_dir / "din_attention.png")
        plots["din_attention.png"] = f"DIN attention over test histories ({din.name})"
    razor = next((r for r in runs if r.model.config.transform == "irazor"), None)
    if razor is not None:
        plot_irazor(razor, out_dir / "irazor_dims.png")
        selection = razor.model.transform.select_dims(0.9)
        metrics["models"][razor.name]["irazor_dims"] = dict(
            zip(FIELD_NAMES, selection.dims, strict=True)
        )
        plots["irazor_dims.png"] = f"iRazor's embedding size per field ({razor.name})"
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    lines = [f"# monolith-layers report: {dataset_name}", "", _table(runs), ""]
    samples = runs[0].test.get("samples")
    if samples:
        lines += [
            f"Test split: {samples:,} samples. The 95 % interval is +- 1.96 Hanley-McNeil "
            "standard errors of each AUC: two models whose intervals overlap widely are not "
            "told apart by this test set.",
            "",
        ]
    if settings:
        lines += ["Settings:", "", "```json", json.dumps(settings, indent=2), "```", ""]
    for file, title in plots.items():
        lines += [f"## {title}", "", f"![{title}]({file})", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return metrics
