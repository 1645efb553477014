"""A CTR model built from the layers: embeddings, a behaviour encoder, an
optional feature transform and an MLP head.

::

    user, item, category ids ---------> embeddings (E each)
    history item / category ids ------> embeddings (B, T, 2E), mask (B, T)
    target = [item, category] (B, 2E)
    interest = encoder(target, history, mask)          mean | din | dien | dmr -> (B, 2E)
    fields = [user, item, category, interest_item, interest_category]   (B, 5, E)
    fields = transform(fields)                          none | senet | autoint | irazor
    logit = MLP(head)(flatten(fields))                  (B,)

The item side is the concatenation of the item and category embeddings, as
in the DIN and DIEN papers. With ``encoder='dien'`` and a batch that carries
``negative_history``, DIEN's auxiliary loss joins the layer losses
(:func:`monolith_layers.total_layer_loss`); iRazor's feature-weight loss and
any regulariser do the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, JsonConfig
from ..feature_seq import DIEN, DIN, DMR_U2I
from ..feature_trans import AutoInt, SeNet, iRazor
from ..mlp import MLP

ENCODERS = ("mean", "din", "dien", "dmr")
TRANSFORMS = (None, "senet", "autoint", "irazor")
NUM_FIELDS = 5  # user, item, category, interest (item half), interest (category half)


@dataclass
class ModelConfig(JsonConfig):
    """Everything that defines a :class:`CTRModel` (JSON-serialisable).

    Args:
        encoder: ``'mean'``, ``'din'``, ``'dien'`` or ``'dmr'``.
        transform: ``None``, ``'senet'``, ``'autoint'`` or ``'irazor'``.
        embed_dim: E, the width of every embedding.
        max_len: T, the history length the model is built for (DMR needs it).
        num_users, num_items, num_categories: vocabulary sizes (ids 0..n; item
            and category 0 are padding).
        hidden_units: the head MLP's hidden widths (a final 1 is added).
        head_weight_norm: the head's layers weight-normalised (Monolith's MLP
            default: each kernel column scaled to a learned norm).
        head_batch_norm: batch normalisation before each of the head's layers
            (Monolith's ``enable_batch_normalization``).
        attention_units: DIN's attention tower widths (a final 1 is added).
        attention_activation: DIN's tower activation.
        att_type: DIEN's evolution cell, ``'AGRU'`` or ``'AUGRU'``.
        dien_aux_loss: add DIEN's auxiliary loss when the batch has negatives.
        dmr_cmp_dim: DMR_U2I's compressed width.
        senet_cmp_dim, autoint_layers: the transforms' sizes.
        irazor_space: iRazor's region boundaries over E (default ``[0, E/4, E/2, E]``).
        features: a sample log's fitted features (``schema``, embedding ``tables``
            sizes, ``dense`` means and standard deviations): set, the model is a
            :class:`~monolith_layers.models.features.FeatureCTRModel` and the
            vocabulary sizes above are unused.
    """

    encoder: str = "din"
    transform: str | None = None
    embed_dim: int = 16
    max_len: int = 50
    num_users: int = 1
    num_items: int = 1
    num_categories: int = 1
    hidden_units: list[int] = field(default_factory=lambda: [200, 80])
    head_weight_norm: bool = True
    head_batch_norm: bool = False
    attention_units: list[int] = field(default_factory=lambda: [80, 40])
    attention_activation: str = "prelu"
    att_type: str = "AUGRU"
    dien_aux_loss: bool = True
    dmr_cmp_dim: int = 32
    senet_cmp_dim: int = 3
    autoint_layers: int = 2
    irazor_space: list[int] | None = None
    features: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(
                f"ModelConfig: encoder must be one of {list(ENCODERS)}, got {self.encoder!r}"
            )
        if self.transform not in TRANSFORMS:
            raise ConfigError(
                f"ModelConfig: transform must be one of {list(TRANSFORMS)}, got {self.transform!r}"
            )
        for name in ("embed_dim", "max_len", "num_users", "num_items", "num_categories"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ModelConfig: {name} must be a positive int, got {value!r}")
        for name in ("head_weight_norm", "head_batch_norm", "dien_aux_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"ModelConfig: {name} must be true or false, got {getattr(self, name)!r}"
                )

    @property
    def name(self) -> str:
        """``'din'``, ``'din+irazor'``: the encoder and the transform."""
        return self.encoder + (f"+{self.transform}" if self.transform else "")

    @property
    def uses_native_kernels(self) -> bool:
        """Whether the model's layers have native (C++) fast paths to build:
        DIEN's recurrences, SeNet, AutoInt, and DIN with a tower activation
        its kernel knows (PReLU, the default, included)."""
        from .._ops import DIN_ACTIVATIONS

        return (
            self.encoder == "dien"
            or self.transform in ("senet", "autoint")
            or (self.encoder == "din" and self.attention_activation in DIN_ACTIVATIONS)
        )

    @classmethod
    def from_name(cls, name: str, **values: Any) -> ModelConfig:
        """``'dien'`` or ``'din+senet'`` -> a config with that encoder / transform."""
        encoder, _, transform = name.partition("+")
        return cls(encoder=encoder, transform=transform or None, **values)


def build_encoder(config: ModelConfig, width: int) -> nn.Module | None:
    """The behaviour encoder over keys and a query of ``width`` (None for mean pooling)."""
    if config.encoder == "din":
        return DIN(list(config.attention_units) + [1], config.attention_activation, embed_dim=width)
    if config.encoder == "dien":
        return DIEN(width, att_type=config.att_type, input_dim=width)
    if config.encoder == "dmr":
        return DMR_U2I(config.dmr_cmp_dim, seq_len=config.max_len, user_dim=width, item_dim=width)
    return None


def build_transform(config: ModelConfig, num_fields: int) -> nn.Module | None:
    """The field transform over (B, num_fields, E), or None."""
    e = config.embed_dim
    if config.transform == "senet":
        return SeNet(num_fields, config.senet_cmp_dim, out_type="stack")
    if config.transform == "autoint":
        return AutoInt(config.autoint_layers, out_type="stack", scale=True)
    if config.transform == "irazor":
        space = config.irazor_space or sorted({0, max(1, e // 4), max(1, e // 2), e})
        return iRazor(
            space,
            t=0.5,
            feature_weight=[1e-3] * num_fields,
            out_type="stack",
            num_feature=num_fields,
        )
    return None


def build_head(config: ModelConfig, num_fields: int) -> MLP:
    """The MLP from the flattened fields to one logit (AutoInt's output joins its input)."""
    width = num_fields * (2 if config.transform == "autoint" else 1) * config.embed_dim
    return MLP(
        list(config.hidden_units) + [1],
        use_weight_norm=config.head_weight_norm,
        enable_batch_normalization=config.head_batch_norm,
        input_dim=width,
        name="head",
    )


def encode_interest(
    config: ModelConfig,
    encoder: nn.Module | None,
    target: torch.Tensor,
    history: torch.Tensor,
    mask: torch.Tensor,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """The user's interest (B, W) from the query (B, W), keys (B, T, W) and mask (B, T)."""
    if config.encoder == "mean":
        return _masked_mean(history, mask)
    if config.encoder == "dien":
        return encoder(target, history, mask, neg_keys=negatives)
    return encoder(target, history, mask)


def transform_and_score(
    config: ModelConfig, transform: nn.Module | None, head: MLP, fields: torch.Tensor
) -> torch.Tensor:
    """Fields (B, F, E) -> the optional transform -> the head -> logits (B,)."""
    if transform is not None:
        transformed = transform(fields)
        fields = (
            torch.cat([fields, transformed], dim=1)
            if config.transform == "autoint"
            else transformed
        )
    return head(fields.flatten(1)).squeeze(-1)


def _masked_mean(history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keep = mask.unsqueeze(-1)
    total = torch.where(keep, history, history.new_zeros(())).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp_min(1).to(history.dtype)


class CTRModel(nn.Module):
    """The model of the module docstring; ``forward(batch) -> logits (B,)``.

    ``batch`` is a dict as :class:`monolith_layers.data.CTRDataset` yields:
    ``user``, ``item``, ``category`` (B,), ``history``, ``history_category``
    (B, T) ids, ``mask`` (B, T) bool, optionally ``negative_history`` and
    ``negative_history_category`` (B, T) for DIEN's auxiliary loss.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        e = config.embed_dim
        width = 2 * e  # item side: [item, category]
        self.user_embedding = nn.Embedding(config.num_users + 1, e)
        self.item_embedding = nn.Embedding(config.num_items + 1, e, padding_idx=0)
        self.category_embedding = nn.Embedding(config.num_categories + 1, e, padding_idx=0)
        for table in (self.user_embedding, self.item_embedding, self.category_embedding):
            nn.init.normal_(table.weight, std=0.05)
            if table.padding_idx is not None:
                with torch.no_grad():
                    table.weight[table.padding_idx].zero_()
        self.encoder = build_encoder(config, width)
        self.transform = build_transform(config, NUM_FIELDS)
        self.head = build_head(config, NUM_FIELDS)

    def item_side(self, items: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """[item, category] embeddings: (..., 2E)."""
        return torch.cat([self.item_embedding(items), self.category_embedding(categories)], dim=-1)

    def _wants_negatives(self, batch: dict[str, torch.Tensor]) -> bool:
        return (
            self.config.encoder == "dien"
            and self.config.dien_aux_loss
            and self.training
            and "negative_history" in batch
        )

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every embedding the model reads: ``user`` (B, E), ``target`` (B, 2E),
        ``history`` (B, T, 2E) and, for DIEN's auxiliary loss, ``negatives``
        (B, T, 2E). The one place that touches the embedding tables (the
        TorchRec variant replaces it)."""
        out = {
            "user": self.user_embedding(batch["user"]),
            "target": self.item_side(batch["item"], batch["category"]),
            "history": self.item_side(batch["history"], batch["history_category"]),
        }
        if self._wants_negatives(batch):
            out["negatives"] = self.item_side(
                batch["negative_history"], batch["negative_history_category"]
            )
        return out

    def interest(self, embedded: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """The behaviour encoder's output (B, 2E)."""
        return encode_interest(
            self.config,
            self.encoder,
            embedded["target"],
            embedded["history"],
            mask,
            embedded.get("negatives"),
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        e = self.config.embed_dim
        embedded = self.embed(batch)
        interest = self.interest(embedded, batch["mask"])
        target = embedded["target"]
        fields = torch.stack(
            [embedded["user"], target[:, :e], target[:, e:], interest[:, :e], interest[:, e:]],
            dim=1,
        )  # (B, F, E)
        return transform_and_score(self.config, self.transform, self.head, fields)

    @property
    def needs_negative_history(self) -> bool:
        return self.config.encoder == "dien" and self.config.dien_aux_loss

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def __repr__(self) -> str:
        return f"CTRModel({json.dumps(self.config.to_dict())})\n" + super().__repr__()
