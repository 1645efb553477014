"""Pictures of what a layer learnt (matplotlib, from the ``demo`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .feature_trans import DimensionSelection, iRazor


def plot_dimension_selection(
    layer: iRazor,
    threshold: float = 0.9,
    feature_names: Sequence[str] | None = None,
    path: str | None = None,
) -> Any:
    """Heat map of iRazor's choice probabilities with the CPT selection marked.

    Rows are features, columns the choices (``drop`` and each region of
    ``nas_space``); a box marks every region the threshold rule took, and the
    right-hand labels give the embedding size each feature keeps. Returns the
    matplotlib Figure; with ``path`` it is also saved there.
    """
    try:
        # The Figure API, not pyplot: drawing here neither needs nor switches
        # the process-wide backend, and leaves no figure open in pyplot.
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'monolith-layers[demo]'") from err

    probs = layer.choice_probs().detach().cpu().numpy()
    selection: DimensionSelection = layer.select_dims(threshold)
    names = (
        list(feature_names) if feature_names is not None else [f"f{i}" for i in range(len(probs))]
    )
    space = layer.nas_space
    columns = ["drop"] + [f"[{space[k - 1]},{space[k]})" for k in range(1, len(space))]

    fig = Figure(figsize=(3.0 + 0.9 * len(columns), 1.6 + 0.35 * len(names)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(probs, vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
    for feature in selection.features:
        for region in feature.regions:
            ax.add_patch(
                Rectangle(
                    (region - 0.5, feature.feature - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5
                )
            )
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(
        range(len(names)), [f"{f.dims} dims" if f.kept else "dropped" for f in selection.features]
    )
    ax.set_title(
        f"iRazor choice probabilities (threshold {threshold})\n"
        f"{selection.total_dims}/{len(names) * selection.embedding_size} embedding dims kept",
        fontsize=10,
    )
    fig.colorbar(
        image, ax=[ax, right], location="right", pad=0.04, fraction=0.05, label="probability"
    )
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
