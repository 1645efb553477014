"""A feature schema: what each column of a sample log is and how the model reads it.

A sample log has one row per impression, already joined: a label, maybe a
time, and any number of features. The schema names them (JSON, or the same
as Python objects)::

    {"label": "click", "time": "ts",
     "features": [
       {"name": "user_id", "kind": "sparse"},
       {"name": "item_id", "kind": "sparse", "role": "target"},
       {"name": "device", "kind": "sparse", "hash_buckets": 1000},
       {"name": "price", "kind": "dense"},
       {"name": "hist_item_id", "kind": "sequence", "shares": "item_id", "max_len": 50}]}

Kinds:

* ``sparse``: one id per row (int or string). Ids are numbered from a
  vocabulary built on the training rows (values seen fewer than
  ``min_count`` times, and values never seen, read as "unknown"), or, with
  ``hash_buckets``, hashed with no vocabulary (raw ids, as Monolith trains).
* ``dense``: a number. The model standardises it with the training mean and
  standard deviation; a missing value (null, NaN, inf) reads as the mean
  and sets the feature's missing flag, which the model also sees.
* ``sequence``: a list of ids per row (a Parquet list column, or
  space-separated tokens in a CSV cell), read through the embedding table of
  the sparse feature it ``shares`` (or, without ``shares``, a table of its
  own). The most recent ``max_len`` entries are
  kept (lists are oldest first). Sequences that share a ``role: "target"``
  feature form the behaviour history (their lengths must agree row by
  row); the target features are the query of DIN / DIEN / DMR. Any other
  sequence is averaged over its real entries into one field.

Splits: ``time`` (a global time split), else a ``split`` column holding
``train`` / ``valid`` / ``test``, else a seeded random split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import ConfigError, JsonConfig

KINDS = ("sparse", "dense", "sequence")
ROLES = (None, "target")
# Ids every table reserves: 0 pads a sequence, 1 is an unknown or missing value.
PADDING_ID, UNKNOWN_ID = 0, 1
FIRST_ID = 2


def _positive_int(owner: str, name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: {name} must be a positive int, got {value!r}")


@dataclass
class Feature(JsonConfig):
    """One column of the sample log.

    Args:
        name: the column's name.
        kind: ``'sparse'``, ``'dense'`` or ``'sequence'``.
        role: ``'target'`` for the candidate's features (sparse only): the
            query of the behaviour encoder.
        hash_buckets: a table's owner (below): hash raw values into this many
            ids instead of building a vocabulary.
        embed_dim: a table's owner: its width (default: the model's E).
        min_count: a table's owner: vocabulary values must be seen this often.
        shares: sequence only: the sparse feature whose table it reads. A
            sequence without ``shares`` owns a table of its own (a bag of
            tokens such as genres) and may set the three above.
        max_len: sequence only: the most recent entries kept (default: the
            schema's ``max_len``).
    """

    name: str
    kind: str
    role: str | None = None
    hash_buckets: int | None = None
    embed_dim: int | None = None
    min_count: int = 1
    shares: str | None = None
    max_len: int | None = None

    @property
    def owns_table(self) -> bool:
        """A sparse feature, or a sequence that shares no other feature's table."""
        return self.kind == "sparse" or (self.kind == "sequence" and not self.shares)

    @property
    def table(self) -> str | None:
        """The embedding table it reads (None for a dense feature)."""
        if self.kind == "dense":
            return None
        return self.shares or self.name

    def __post_init__(self) -> None:
        owner = f"feature {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"feature: name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"{owner}: kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.role not in ROLES:
            raise ConfigError(f"{owner}: role must be 'target' or absent, got {self.role!r}")
        for name in ("hash_buckets", "embed_dim", "max_len"):
            _positive_int(owner, name, getattr(self, name))
        _positive_int(owner, "min_count", self.min_count, allow_none=False)
        if self.role is not None and self.kind != "sparse":
            raise ConfigError(f"{owner}: role applies to sparse features, not {self.kind}")
        table_settings = [
            k for k in ("hash_buckets", "embed_dim") if getattr(self, k) is not None
        ] + (["min_count"] if self.min_count != 1 else [])
        if table_settings and not self.owns_table:
            where = f"the table of {self.shares!r}" if self.shares else "tables"
            raise ConfigError(
                f"{owner}: {table_settings} belong to {where}, not to a {self.kind} feature that reads it"
            )
        if self.kind != "sequence" and (self.shares is not None or self.max_len is not None):
            raise ConfigError(f"{owner}: 'shares' and 'max_len' apply to sequences only")
        if self.hash_buckets is not None and self.min_count != 1:
            raise ConfigError(f"{owner}: min_count needs a vocabulary; it has hash_buckets")


@dataclass
class Schema(JsonConfig):
    """The sample log's label, time and features (module docstring).

    Args:
        label: the label column: 0 / 1, or a rating with ``click_threshold``.
        features: the :class:`Feature` list, in the order the model reads them.
        time: a column of event times for the global time split.
        split: a column of ``train`` / ``valid`` / ``test`` (used when ``time`` is absent).
        click_threshold: labels at or above it are clicks (ratings).
        max_len: the default history length T of the sequences.
    """

    label: str
    features: list[Feature] = field(default_factory=list)
    time: str | None = None
    split: str | None = "split"
    click_threshold: float | None = None
    max_len: int = 50

    def __post_init__(self) -> None:
        self.features = [f if isinstance(f, Feature) else _feature(f) for f in self.features]
        _positive_int("schema", "max_len", self.max_len, allow_none=False)
        if not self.features:
            raise ConfigError("schema: 'features' is empty; declare at least one feature")
        names = [f.name for f in self.features]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"schema: features {repeated} are declared more than once")
        for column in (self.label, self.time, self.split):
            if column in names:
                raise ConfigError(
                    f"schema: column {column!r} is both a feature and the label/time/split"
                )
        by_name = {f.name: f for f in self.features}
        for f in self.sequences:
            if not f.shares:
                continue
            owner = by_name.get(f.shares)
            if owner is None or owner.kind != "sparse":
                raise ConfigError(
                    f"feature {f.name!r}: shares {f.shares!r}, which is not a sparse feature of "
                    f"the schema (sparse features: {[s.name for s in self.sparse]})"
                )
        lengths = {self.sequence_len(f) for f in self.history}
        if len(lengths) > 1:
            raise ConfigError(
                f"schema: the history sequences {[f.name for f in self.history]} are aligned "
                f"position by position, so their max_len must agree; got {sorted(lengths)}"
            )

    # ----------------------------------------------------------- the kinds
    @property
    def sparse(self) -> list[Feature]:
        return [f for f in self.features if f.kind == "sparse"]

    @property
    def dense(self) -> list[Feature]:
        return [f for f in self.features if f.kind == "dense"]

    @property
    def sequences(self) -> list[Feature]:
        return [f for f in self.features if f.kind == "sequence"]

    @property
    def tables(self) -> list[Feature]:
        """The features that own an embedding table (sparse, and unshared sequences)."""
        return [f for f in self.features if f.owns_table]

    @property
    def targets(self) -> list[Feature]:
        return [f for f in self.sparse if f.role == "target"]

    @property
    def history(self) -> list[Feature]:
        """The behaviour history: sequences sharing a target feature, in schema order."""
        targets = {f.name for f in self.targets}
        return [f for f in self.sequences if f.shares in targets]

    @property
    def side_sequences(self) -> list[Feature]:
        """Sequences outside the history: each is averaged into one field."""
        history = {f.name for f in self.history}
        return [f for f in self.sequences if f.name not in history]

    def sequence_len(self, feature: Feature) -> int:
        return feature.max_len or self.max_len

    @property
    def history_len(self) -> int:
        """T of the behaviour history (0 when the schema has none)."""
        return self.sequence_len(self.history[0]) if self.history else 0

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def columns(self) -> list[str]:
        """Every column the data must have (features, label, time)."""
        return [f.name for f in self.features] + [self.label] + ([self.time] if self.time else [])

    # ------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        defaults = {f.name: f.default for f in fields(Feature)}
        values["features"] = [
            {k: v for k, v in feature.items() if k in ("name", "kind") or v != defaults[k]}
            for feature in values["features"]
        ]
        return values

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a schema JSON file; a bad file is a :class:`ConfigError` naming it."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such schema file") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        try:
            return cls.from_dict(_mapping(values))
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"{path}: {err}") from None


def _feature(values: Any) -> Feature:
    values = _mapping(values, "a feature")
    try:
        return Feature.from_dict(values)
    except TypeError as err:  # a required key is absent
        raise ConfigError(f"feature {values.get('name')!r}: {err}") from None


def _mapping(values: Any, what: str = "the schema") -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(values).__name__}")
    return values
