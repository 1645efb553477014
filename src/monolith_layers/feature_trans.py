"""Feature transforms over per-field embeddings: AutoInt, iRazor and SeNet.

Inputs are (B, F, E): batch, fields (features), embedding width. Outputs go
through :func:`monolith_layers.merge_tensor_list` with ``out_type`` /
``keep_list`` as in Monolith: ``'concat'`` -> (B, F*E), ``'stack'`` ->
(B, F, E), ``None`` -> a list of F tensors (B, E).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _ops
from . import activations as _activations
from . import initializers as _initializers
from . import regularizers as _regularizers
from ._checks import (
    check_choice,
    check_finite_number,
    check_mask,
    check_positive_int,
    check_shape,
    check_tensor,
    resolve,
)
from ._ops import is_tracing
from ._sequence import masked_softmax, zero_padded
from .dense import KERNEL_NORM_EPSILON
from .layer import Layer
from .merge import MERGE_TYPES, merge_tensor_list
from .mlp import MLP


class AutoInt(Layer):
    """Monolith's AutoInt: ``layer_num`` rounds of ``X = softmax(X X^T) X``.

    The interacting layer of AutoInt (Song et al., 2019) as Monolith computes
    it: one head, no query / key / value projections, no scaling. Beyond the original, both
    off by default:

    * ``scale=True`` divides the logits by sqrt(E);
    * ``forward(embeds, mask)`` with a (B, F) mask of present fields: absent
      fields get no attention and come out as zeros.

    Shapes: embeds (B, F, E) -> see the module docstring.

    Args:
        layer_num: number of attention rounds (>= 1).
        out_type: ``'concat'``, ``'stack'`` or ``None``.
        keep_list: wrap a merged output in a list.
        scale: divide the logits by sqrt(E).
        name: Monolith scope, default ``'auto_int'``.
        device, dtype: accepted like every layer's (AutoInt has no weights).
    """

    def __init__(
        self,
        layer_num: int = 1,
        out_type: str | None = "concat",
        keep_list: bool = False,
        scale: bool = False,
        *,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.layer_num = check_positive_int(where, "layer_num", layer_num)
        check_choice(where, "out_type", out_type, MERGE_TYPES)
        self.out_type, self.keep_list, self.scale = out_type, bool(keep_list), bool(scale)

    def extra_repr(self) -> str:
        return (
            f"layer_num={self.layer_num}, out_type={self.out_type!r}, scale={self.scale}, "
            f"name={self.name!r}"
        )

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor | None = None):
        """embeds (B, F, E), mask (B, F) of present fields -> merged (module docstring)."""
        where = self.where
        x = check_shape(where, "embeds", embeds, (None, None, None))
        self.check_input_dtype("embeds", x)
        present = None
        if mask is not None:
            present = check_mask(where, mask, x.shape[0], x.shape[1])  # (B, F)
            x = zero_padded(x, present)
        if _ops.use_kernel("autoint", x):
            save = torch.is_grad_enabled() and x.requires_grad
            out = _ops.autoint(x, present, self.layer_num, self._divisor(x), save)[0]
        else:
            out = self._rounds(x, present)
        return merge_tensor_list(out, self.out_type, keep_list=self.keep_list)

    def _divisor(self, x: torch.Tensor) -> float:
        return x.shape[-1] ** 0.5 if self.scale else 1.0

    def _rounds(self, x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """The rounds as tensor ops (the native kernel's reference); present (B, F) or None."""
        queries = None if present is None else present.unsqueeze(-1)  # (B, F, 1)
        keys = None if present is None else present.unsqueeze(1)  # (B, 1, F)
        for _ in range(self.layer_num):
            logits = torch.bmm(x, x.transpose(1, 2))  # (B, F, F)
            if self.scale:
                logits = logits / self._divisor(x)
            x = torch.bmm(masked_softmax(logits, keys, dim=-1), x)
            if queries is not None:
                x = torch.where(queries, x, x.new_zeros(()))
        if x.requires_grad and not is_tracing():
            # A loss such as out.sum() hands back a stride-0 gradient, on which
            # bmm's backward copies every (F, E) matrix on its own (1.5x the
            # whole fwd+bwd at (1024, 39, 16)); one dense copy is far cheaper.
            x.register_hook(torch.Tensor.contiguous)
        return x


def _check_nas_space(where: str, nas_space: Any) -> list[int]:
    if (
        not isinstance(nas_space, (list, tuple))
        or len(nas_space) < 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in nas_space)
        or nas_space[0] != 0
        or any(b <= a for a, b in zip(nas_space, nas_space[1:], strict=False))
    ):
        raise ValueError(
            f"{where}: nas_space must be a list of ints starting at 0 and strictly "
            f"increasing, e.g. [0, 1, 3, 8]; got {nas_space!r}"
        )
    return list(nas_space)


def rigid_masks(nas_space: Sequence[int]) -> torch.Tensor:
    """(len(nas_space), E): row 0 zeros (drop), row i ones on [nas_space[i-1], nas_space[i])."""
    masks = torch.zeros(len(nas_space), nas_space[-1])
    for i in range(1, len(nas_space)):
        masks[i, nas_space[i - 1] : nas_space[i]] = 1.0
    return masks


@dataclass(frozen=True)
class FeatureSelection:
    """What :meth:`iRazor.select_dims` decided for one feature."""

    feature: int
    regions: tuple[int, ...]  # the regions taken, most probable first (0 = the drop choice)
    dims: int  # the selected embedding size: the sum of the taken regions' widths
    spans: tuple[tuple[int, int], ...] = ()  # [start, end) of each taken region but drop

    @property
    def kept(self) -> bool:
        return self.dims > 0

    @property
    def kept_dims(self) -> list[int]:
        """Indices of the embedding dimensions that the taken regions cover."""
        return sorted(d for start, end in self.spans for d in range(start, end))


@dataclass(frozen=True)
class DimensionSelection:
    """The outcome of :meth:`iRazor.select_dims` for all features."""

    features: tuple[FeatureSelection, ...]
    embedding_size: int
    threshold: float

    @property
    def dims(self) -> list[int]:
        return [f.dims for f in self.features]

    @property
    def kept_features(self) -> list[int]:
        return [f.feature for f in self.features if f.kept]

    @property
    def total_dims(self) -> int:
        return sum(self.dims)

    @property
    def saved_dims(self) -> int:
        """Embedding dimensions saved over keeping every feature at full width."""
        return len(self.features) * self.embedding_size - self.total_dims


def select_dims_from_probs(
    probs: torch.Tensor, nas_space: Sequence[int], threshold: float
) -> DimensionSelection:
    """The cumulative-probability-threshold (CPT) rule; see :meth:`iRazor.select_dims`."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 < threshold <= 1.0
    ):
        raise ValueError(f"select_dims: threshold must be in (0, 1], got {threshold!r}")
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.dim() != 2 or probs.shape[1] != len(nas_space):
        raise ValueError(
            f"select_dims: probs must have shape (F, {len(nas_space)}), got {tuple(probs.shape)}"
        )
    widths = [0] + [nas_space[k] - nas_space[k - 1] for k in range(1, len(nas_space))]
    features = []
    for i, row in enumerate(probs.tolist()):
        # Stable sort: among equal probabilities the smaller region comes first.
        order = sorted(range(len(nas_space)), key=lambda k: (-row[k], k))
        chosen, total = [], 0.0
        for region in order:
            chosen.append(region)
            total += row[region]
            if total > threshold:
                break
        spans = tuple(sorted((nas_space[k - 1], nas_space[k]) for k in chosen if k > 0))
        dims = sum(widths[k] for k in chosen)
        features.append(FeatureSelection(i, tuple(chosen), dims, spans))
    return DimensionSelection(tuple(features), int(nas_space[-1]), float(threshold))


def _check_feature_weight(where: str, value: Any, num_feature: int) -> list[float] | None:
    """F finite per-feature costs as floats (numpy: valid under ``torch.device('meta')``)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    try:
        costs = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{where}: feature_weight must be {num_feature} numbers, got {value!r}"
        ) from err
    if costs.size != num_feature:
        raise ValueError(
            f"{where}: feature_weight must have num_feature={num_feature} entries, got {costs.size}"
        )
    if not np.isfinite(costs).all():
        raise ValueError(f"{where}: feature_weight must be finite, got {costs.tolist()}")
    return costs.tolist()


class iRazor(Layer):  # noqa: N801 - Monolith's class name
    """iRazor (Yao et al., 2022): learnt per-feature choice of embedding regions.

    ``nas_space = [0, n_1, ..., E]`` splits each embedding into regions
    ``[n_{i-1}, n_i)``; region 0 is the empty "drop" choice. Each feature
    has logits ``nas_weight`` (F, len(nas_space)); ``p = softmax(nas_weight /
    t)`` over the choices; ``soft_masks = p @ rigid_masks`` (F, E), so every
    dimension is weighted by the probability of its region; output
    ``embeds * soft_masks``.

    With ``feature_weight`` (F floats), every forward adds to ``losses``
    ``sum_f feature_weight[f] * sum_e soft_masks[f, e]``, which pushes
    expensive features towards the drop choice.

    Shapes: embeds (B, F, E), E = nas_space[-1], F = num_feature.

    Args:
        nas_space: region boundaries, starting at 0, strictly increasing.
        t: softmax temperature (> 0).
        initializer: of ``nas_weight`` (default glorot_uniform, as Keras's add_weight).
        regularizer: of ``nas_weight``.
        feature_weight: F per-feature costs for the auxiliary loss (list or tensor).
        out_type, keep_list: output merging (module docstring).
        num_feature: F.
        name: Monolith scope, default ``'i_razor'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        nas_space: list[int],
        t: float = 0.05,
        initializer: Any = None,
        regularizer: Any = None,
        feature_weight: Any = None,
        out_type: str | None = "concat",
        keep_list: bool = False,
        *,
        num_feature: int,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.nas_space = _check_nas_space(where, nas_space)
        self.num_feature = check_positive_int(where, "num_feature", num_feature)
        self.t = check_finite_number(where, "t", t, positive=True)
        check_choice(where, "out_type", out_type, MERGE_TYPES)
        self.out_type, self.keep_list = out_type, bool(keep_list)
        self.embedding_size = self.nas_space[-1]
        self.add_weight(
            "nas_weight",
            (num_feature, len(self.nas_space)),
            initializer or "glorot_uniform",
            regularizer,
        )
        factory = self.factory_kwargs
        self.register_buffer(
            "rigid_masks",
            torch.empty(len(self.nas_space), self.embedding_size, **factory),
            persistent=False,
        )
        self._feature_costs = _check_feature_weight(where, feature_weight, num_feature)
        self.register_buffer("feature_weight", None, persistent=False)
        if self._feature_costs is not None:
            self.register_buffer(
                "feature_weight", torch.empty(num_feature, **factory), persistent=False
            )

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # The constant buffers too: after to_empty() they hold garbage.
        if not self.rigid_masks.is_meta:
            with torch.no_grad():
                self.rigid_masks.copy_(rigid_masks(self.nas_space))
                if self.feature_weight is not None:
                    self.feature_weight.copy_(torch.tensor(self._feature_costs))

    def extra_repr(self) -> str:
        return (
            f"num_feature={self.num_feature}, nas_space={self.nas_space}, t={self.t}, "
            f"feature_weight={self.feature_weight is not None}, out_type={self.out_type!r}, "
            f"name={self.name!r}"
        )

    def choice_probs(self) -> torch.Tensor:
        """``softmax(nas_weight / t)`` over the choices: (F, len(nas_space))."""
        return torch.softmax(self.nas_weight / self.t, dim=1)

    def soft_masks(self, probs: torch.Tensor | None = None) -> torch.Tensor:
        """(F, E): each dimension weighted by its region's probability."""
        probs = self.choice_probs() if probs is None else probs
        return probs @ self.rigid_masks.to(probs.dtype)

    def forward(self, embeds: torch.Tensor):
        """embeds (B, F, E) -> merged (module docstring)."""
        where = self.where
        embeds = check_shape(where, "embeds", embeds, (None, self.num_feature, self.embedding_size))
        self.check_input_dtype("embeds", embeds)
        probs = self.choice_probs()
        self._summarize_histogram("nas_weight", probs)
        masks = self.soft_masks(probs)
        if self.feature_weight is not None:
            cost = self.feature_weight.to(masks.dtype) @ masks.sum(dim=1)
            self._forward_losses = [cost]
        return merge_tensor_list(embeds * masks, self.out_type, keep_list=self.keep_list)

    @torch.no_grad()
    def select_dims(self, threshold: float = 0.9) -> DimensionSelection:
        """Choose each feature's embedding size by the cumulative probability threshold.

        The rule of the i-Razor authors' released code (Yao et al., arXiv
        2204.00281), per feature:

        1. take the choice probabilities ``p`` (``softmax(nas_weight / t)``);
        2. sort the regions by probability, highest first (ties: smaller
           region first);
        3. take regions in that order until their cumulative probability
           first strictly exceeds ``threshold`` (all of them if it never does);
        4. the selected embedding size is the sum of the widths of the taken
           regions (the drop region has width 0); 0 removes the feature.

        For example, ``nas_space=[0, 2, 6, 14, 30]`` (widths 2, 4, 8, 16) with
        the regions ``[6, 14)`` and ``[14, 30)`` taken gives 8 + 16 = 24, and
        ``[0, 2)`` + ``[14, 30)`` gives 18.

        Returns a :class:`DimensionSelection` with per-feature ``dims``,
        ``regions``, ``kept``, ``kept_dims`` (the covered indices), and
        ``total_dims`` / ``saved_dims``.
        """
        return select_dims_from_probs(self.choice_probs().cpu(), self.nas_space, threshold)


class SeNet(Layer):
    """Squeeze-and-excitation over fields (Hu et al., 2018; FiBiNET's use).

    squeeze: mean of each field's embedding -> (B, F); excitation: MLP
    ``cmp_tower`` ``[cmp_dim, F]`` with relu then sigmoid (Monolith MLP
    defaults: weight norm); each field's embedding is scaled by its weight.
    ``cmp_dim=None`` uses the squeezed means themselves as weights (the
    original's identity tower).

    Input: a tensor (B, F, E), or a list of F tensors (B, E_f) of possibly
    different widths; for a list, the means are one concatenation and one
    segment-mean matmul, not a loop over fields. ``on_gpu`` is accepted for
    config compatibility; both inputs give the same result either way.

    Args:
        num_feature: F.
        cmp_dim: width of the bottleneck, or None for no tower.
        initializer, regularizer: of the tower's kernels.
        on_gpu: ignored (see above).
        out_type, keep_list: output merging (module docstring).
        name: Monolith scope, default ``'se_net'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        num_feature: int,
        cmp_dim: int | None,
        initializer: Any = None,
        regularizer: Any = None,
        on_gpu: bool = False,
        out_type: str | None = "concat",
        keep_list: bool = False,
        *,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.num_feature = check_positive_int(where, "num_feature", num_feature)
        check_choice(where, "out_type", out_type, MERGE_TYPES)
        self.out_type, self.keep_list, self.on_gpu = out_type, bool(keep_list), bool(on_gpu)
        self.cmp_dim = cmp_dim
        self.register_module("cmp_tower", None)
        if cmp_dim is not None:
            check_positive_int(where, "cmp_dim", cmp_dim)
            tower = MLP(
                [cmp_dim, num_feature],
                activations=["relu", "sigmoid"],
                initializers=resolve(where, "initializer", _initializers.get, initializer),
                kernel_regularizer=resolve(where, "regularizer", _regularizers.get, regularizer),
                input_dim=num_feature,
                name="cmp_tower",
                **self.factory_kwargs,
            )
            self.add_sublayer("cmp_tower", tower)

    def extra_repr(self) -> str:
        return (
            f"num_feature={self.num_feature}, cmp_dim={self.cmp_dim}, "
            f"out_type={self.out_type!r}, name={self.name!r}"
        )

    def excitation(self, squeezed: torch.Tensor) -> torch.Tensor:
        """(B, F) field means -> (B, F) field weights."""
        return squeezed if self.cmp_tower is None else self.cmp_tower(squeezed)

    def forward(self, embeds: torch.Tensor | Sequence[torch.Tensor]):
        """embeds (B, F, E) or F tensors (B, E_f) -> merged (module docstring)."""
        where = self.where
        if isinstance(embeds, torch.Tensor):
            embeds = check_shape(where, "embeds", embeds, (None, self.num_feature, None))
            self.check_input_dtype("embeds", embeds)
            tower, unsupported = self._kernel_tower()
            if _ops.use_kernel("senet", embeds, *tower, unsupported=unsupported):
                out = _ops.senet(embeds, tower, KERNEL_NORM_EPSILON)[0]
            else:
                # sum / E rather than mean: the backward then broadcasts instead
                # of materialising a full-size gradient for the squeeze.
                weights = self.excitation(embeds.sum(dim=2) / embeds.shape[2])
                out = embeds * weights.unsqueeze(-1)
            return merge_tensor_list(out, self.out_type, self.num_feature, keep_list=self.keep_list)
        return self._forward_list(where, embeds)

    def _kernel_tower(self) -> tuple[list[torch.Tensor], str | None]:
        """``([V1, g1, b1, V2, g2, b2], None)`` for the kernel (``[]`` without a
        tower), or ``([], why not)`` when the tower is no longer the one the
        constructor built (weight-normalised denses with biases, relu then
        sigmoid)."""
        if self.cmp_tower is None:
            return [], None
        layers = self.cmp_tower.plain_layers()
        acts = None if layers is None else [_activations.kernel_name(a) for _, a in layers]
        if acts != ["relu", "sigmoid"]:
            return [], "the tower is not dense-relu-dense-sigmoid"
        denses = [dense for dense, _ in layers]
        if any(
            not d.allow_kernel_norm or d.trainable_kernel_norm is None or d.bias is None
            for d in denses
        ):
            return [], "the tower's denses need learnable weight norms and biases"
        return [w for d in denses for w in (d.kernel, d.trainable_kernel_norm, d.bias)], None

    def _forward_list(self, where: str, embeds: list[torch.Tensor]):
        if not isinstance(embeds, (list, tuple)):
            raise TypeError(
                f"{where}: embeds must be a tensor (B, F, E) or a list of F tensors, "
                f"got {type(embeds).__name__}"
            )
        if len(embeds) != self.num_feature:
            raise ValueError(
                f"{where}: embeds must be a list of num_feature={self.num_feature} tensors, "
                f"got {len(embeds)}"
            )
        batch = check_tensor(where, "embeds[0]", embeds[0]).shape[0]
        for i, e in enumerate(embeds):
            check_shape(where, f"embeds[{i}]", e, (batch, None))
            self.check_input_dtype(f"embeds[{i}]", e)
        widths = [e.shape[1] for e in embeds]
        flat = torch.cat(embeds, dim=1)  # (B, sum E_f)
        field_of = torch.repeat_interleave(
            torch.arange(self.num_feature, device=flat.device),
            torch.tensor(widths, device=flat.device),
        )
        # (sum E_f, F): column f averages field f's columns of flat.
        averaging = torch.zeros(
            flat.shape[1], self.num_feature, dtype=flat.dtype, device=flat.device
        )
        averaging[torch.arange(flat.shape[1], device=flat.device), field_of] = 1.0
        averaging = averaging / torch.tensor(widths, dtype=flat.dtype, device=flat.device)
        weights = self.excitation(flat @ averaging)
        scaled = flat * weights[:, field_of]
        out = list(torch.split(scaled, widths, dim=1))
        return merge_tensor_list(out, self.out_type, self.num_feature, keep_list=self.keep_list)
