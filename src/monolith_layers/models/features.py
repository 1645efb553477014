"""A CTR model built from a feature schema (:mod:`monolith_layers.data.schema`).

::

    every sparse feature -> its table (E, or its own embed_dim)    -> a field (B, E)
    every side sequence  -> its table, mean over real steps         -> a field (B, E)
    history sequences    -> keys (B, T, W), W = their tables' widths side by side
    target features      -> the query (B, W), in the history's order
    interest = encoder(query, keys, mask)          mean | din | dien | dmr -> (B, W)
                                                   -> one field per history sequence
    every dense feature  -> standardised z, missing flag m          -> z * w + m * v (B, E)
    fields (B, F, E), in that order -> transform (none | senet | autoint | irazor)
                                    -> MLP head -> logit (B,)

The model standardises dense inputs itself (training mean and standard
deviation as buffers) and reads NaN as missing, so a served model takes the
raw numbers. Sparse and sequence inputs are ids from the
:class:`~monolith_layers.data.FeatureEncoder` (0 pads a sequence, 1 is unknown).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..data.schema import PADDING_ID, Schema
from .ctr import (
    ModelConfig,
    _masked_mean,
    build_encoder,
    build_head,
    build_transform,
    encode_interest,
    transform_and_score,
)


def feature_spec(encoder) -> dict[str, Any]:
    """What :class:`FeatureCTRModel` needs from a fitted ``FeatureEncoder`` (JSON)."""
    return {
        "schema": encoder.schema.to_dict(),
        "tables": encoder.table_sizes(),
        "dense": {name: list(stats) for name, stats in encoder.dense_stats.items()},
    }


class FeatureCTRModel(nn.Module):
    """The model of the module docstring; ``forward(batch) -> logits (B,)``.

    ``batch``: a dict with every feature of the schema by name (sparse (B,)
    int64, dense (B,) float, sequence (B, T) int64), optionally ``mask``
    (B, T) bool for the history (default: history ids != 0) and
    ``negative_history`` (B, H, T) for DIEN's auxiliary loss, as
    :class:`~monolith_layers.data.SampleStream` yields.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not config.features:
            raise ConfigError(
                "FeatureCTRModel: the config has no 'features' (fit them from a schema)"
            )
        self.config = config
        self.schema = Schema.from_dict(config.features["schema"])
        schema, e = self.schema, config.embed_dim
        if config.encoder != "mean" and not schema.history:
            raise ConfigError(
                f"model {config.name!r}: the schema has no behaviour history (a sequence that "
                "shares a feature with role 'target'); the encoder has nothing to read"
            )
        sizes = config.features["tables"]
        self.tables = nn.ModuleDict()
        for f in schema.tables:
            table = nn.Embedding(int(sizes[f.name]), f.embed_dim or e, padding_idx=PADDING_ID)
            nn.init.normal_(table.weight, std=0.05)
            with torch.no_grad():
                table.weight[PADDING_ID].zero_()
            self.tables[f.name] = table
        # A table narrower or wider than E reaches the field transform through a projection.
        self.to_field = nn.ModuleDict(
            {
                f.name: nn.Linear(f.embed_dim, e, bias=False)
                for f in schema.tables
                if f.embed_dim and f.embed_dim != e
            }
        )
        stats = [config.features["dense"][f.name] for f in schema.dense]
        self.register_buffer("dense_mean", torch.tensor([m for m, _ in stats]).reshape(-1))
        self.register_buffer("dense_std", torch.tensor([s for _, s in stats]).reshape(-1))
        self.dense_value = nn.Parameter(torch.randn(len(stats), e) * 0.05)
        self.dense_missing = nn.Parameter(torch.randn(len(stats), e) * 0.05)
        self.history_width = sum(self._width(f.shares) for f in schema.history)
        self.encoder = (
            build_encoder(
                ModelConfig.from_dict({**config.to_dict(), "max_len": schema.history_len or 1}),
                self.history_width,
            )
            if schema.history
            else None
        )
        self.num_fields = len(schema.sparse) + len(schema.dense) + len(schema.sequences)
        self.transform = build_transform(config, self.num_fields)
        self.head = build_head(config, self.num_fields)

    def _width(self, table: str) -> int:
        return self.tables[table].embedding_dim

    def _field(self, table: str, vectors: torch.Tensor) -> torch.Tensor:
        return self.to_field[table](vectors) if table in self.to_field else vectors

    def _wants_negatives(self, batch: dict[str, torch.Tensor]) -> bool:
        return self.needs_negative_history and self.training and "negative_history" in batch

    @property
    def needs_negative_history(self) -> bool:
        return self.config.encoder == "dien" and self.config.dien_aux_loss

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every table lookup: each sparse feature (B, dim), each sequence (B, T, dim)
        and, for DIEN's auxiliary loss, ``negatives`` (B, T, W). The one place
        that touches the tables (the TorchRec variant replaces it)."""
        out = {}
        for f in self.schema.features:
            if f.kind != "dense":
                out[f.name] = self.tables[f.table](batch[f.name])
        if self._wants_negatives(batch):
            negatives = batch["negative_history"]
            out["negatives"] = torch.cat(
                [self.tables[f.shares](negatives[:, i]) for i, f in enumerate(self.schema.history)],
                dim=-1,
            )
        return out

    def dense_fields(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D, E): each standardised value times its vector, plus the missing vector."""
        raw = torch.stack([batch[f.name] for f in self.schema.dense], dim=1).to(
            self.dense_mean.dtype
        )
        missing = torch.isnan(raw)
        z = torch.where(missing, torch.zeros_like(raw), (raw - self.dense_mean) / self.dense_std)
        return (
            z.unsqueeze(-1) * self.dense_value
            + missing.unsqueeze(-1).to(z.dtype) * self.dense_missing
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        schema = self.schema
        embedded = self.embed(batch)
        fields = [self._field(f.name, embedded[f.name]) for f in schema.sparse]
        for f in schema.side_sequences:
            real = batch[f.name] != PADDING_ID
            fields.append(self._field(f.table, _masked_mean(embedded[f.name], real)))
        if schema.history:
            keys = torch.cat([embedded[f.name] for f in schema.history], dim=-1)
            query = torch.cat([embedded[f.shares] for f in schema.history], dim=-1)
            mask = batch.get("mask")
            if mask is None:
                mask = batch[schema.history[0].name] != PADDING_ID
            interest = encode_interest(
                self.config, self.encoder, query, keys, mask, embedded.get("negatives")
            )
            widths = [self._width(f.shares) for f in schema.history]
            for f, part in zip(schema.history, interest.split(widths, dim=-1), strict=True):
                fields.append(self._field(f.shares, part))
        stacked = torch.stack(fields, dim=1)
        if schema.dense:
            stacked = torch.cat([stacked, self.dense_fields(batch).to(stacked.dtype)], dim=1)
        return transform_and_score(self.config, self.transform, self.head, stacked)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def __repr__(self) -> str:
        config = {k: v for k, v in self.config.to_dict().items() if k != "features"}
        return f"FeatureCTRModel({json.dumps(config)})\n" + super().__repr__()


def build_model(config: ModelConfig) -> nn.Module:
    """The model a config describes: a schema's :class:`FeatureCTRModel` when it
    has ``features``, else the fixed :class:`~monolith_layers.models.CTRModel`."""
    from .ctr import CTRModel

    return FeatureCTRModel(config) if config.features else CTRModel(config)
