"""Raw sample-log columns -> the model's arrays, fitted on the training rows.

:class:`FeatureEncoder` holds what one streaming pass over the training
rows learns: each sparse feature's vocabulary (values counted over the
feature's own column and every sequence sharing its table, ordered by count,
then value; ids from :data:`~monolith_layers.data.schema.FIRST_ID` on) and
each dense feature's mean and standard deviation. Hashed features need no
vocabulary: ``FIRST_ID + hash(text of the value) mod hash_buckets``, with
pandas' stable SipHash of the value's decimal or string text, so ``123``
and ``"123"`` agree. Unknown values (never seen, below ``min_count``, null)
get :data:`~monolith_layers.data.schema.UNKNOWN_ID`; 0 pads sequences.

Memory: the vocabularies (one entry per distinct value) and one record
batch at a time; every step is a pyarrow or numpy call over whole columns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .columnar import SampleFiles, _arrow
from .interactions import DataError
from .schema import FIRST_ID, PADDING_ID, UNKNOWN_ID, Schema

MERGE_EVERY = 16  # partial value counts kept before they are merged


class _Counts:
    """Streaming value counts of one table, merged every few batches."""

    def __init__(self) -> None:
        self.parts: list = []

    def add(self, values) -> None:
        pa = _arrow()
        counted = values.drop_null().value_counts()
        if len(counted):
            self.parts.append(
                pa.table({"value": counted.field("values"), "count": counted.field("counts")})
            )
        if len(self.parts) >= MERGE_EVERY:
            self.parts = [self.merged()]

    def merged(self):
        pa = _arrow()
        if not self.parts:
            return pa.table({"value": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        parts = self.parts
        if len({part.schema.field("value").type for part in parts}) > 1:
            # Ints in one column, strings in another column of the same table: count the text.
            parts = [
                part.set_column(0, "value", part.column(0).cast(pa.string())) for part in parts
            ]
        table = pa.concat_tables(parts).group_by("value").aggregate([("count", "sum")])
        return table.rename_columns(["value", "count"])


class _Moments:
    """Count, mean and squared deviations of a dense feature, merged batch by batch
    (Chan et al.'s pairwise update: no cancellation on large offsets)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        if not len(values):
            return
        n, mean = len(values), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    def stats(self) -> tuple[float, float]:
        std = (self.m2 / self.count) ** 0.5 if self.count else 0.0
        return self.mean, std if std > 0 else 1.0


def _ids(values, table: str, where: str):
    """A column of ids as int64 or string, whichever it holds."""
    pa = _arrow()
    kind = values.type
    if pa.types.is_integer(kind):
        return values.cast(pa.int64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return values.cast(pa.string())
    raise DataError(f"{where}: ids of table {table!r} have type {kind}; expected ints or strings")


def sequence_lists(column):
    """A sequence column as a list array (CSV cells are space-separated tokens)."""
    pa = _arrow()
    pc = pa.compute
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        trimmed = pc.utf8_trim_whitespace(column)
        blank = pc.equal(trimmed, "")
        trimmed = pc.if_else(blank, pa.scalar(None, trimmed.type), trimmed)
        return pc.utf8_split_whitespace(trimmed)
    return column


class FeatureEncoder:
    """Encodes record batches of a sample log (module docstring).

    Args:
        schema: the features.
        vocabularies: table name -> pyarrow array of its values (id ``FIRST_ID + i``).
        dense_stats: dense feature -> ``(mean, std)`` over the training rows.
    """

    def __init__(
        self,
        schema: Schema,
        vocabularies: dict[str, Any],
        dense_stats: dict[str, tuple[float, float]],
    ) -> None:
        self.schema = schema
        self.vocabularies = vocabularies
        self.dense_stats = dense_stats
        self._as_text: dict[str, Any] = {}

    # ------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        schema: Schema,
        files: SampleFiles,
        train_rows: Callable[[Any, Any, int], np.ndarray] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> FeatureEncoder:
        """One pass over ``files``; ``train_rows(piece, batch, offset)`` picks the
        training rows of a record batch that starts ``offset`` rows into its
        piece (a bool mask; default: every row)."""
        pa = _arrow()
        vocab_tables = [f.name for f in schema.tables if f.hash_buckets is None]
        readers = [f for f in schema.features if f.kind != "dense" and f.table in vocab_tables]
        counts = {name: _Counts() for name in vocab_tables}
        moments = {f.name: _Moments() for f in schema.dense}
        columns = sorted({f.name for f in readers} | set(moments) | _filter_columns(schema, files))
        for piece in files.pieces:
            where, offset = files.where(piece), 0
            for batch in files.read(piece, columns):
                if train_rows is not None:
                    rows = train_rows(piece, batch, offset)
                    offset += batch.num_rows
                    batch = batch.filter(pa.array(rows))
                for feature in readers:
                    column = batch.column(feature.name)
                    if feature.kind == "sequence":
                        column = pa.compute.list_flatten(sequence_lists(column))
                    counts[feature.table].add(
                        _ids(column, feature.table, f"{where}, column {feature.name!r}")
                    )
                for name, moment in moments.items():
                    moment.add(_dense_values(batch.column(name), where, name))
            if progress is not None:
                progress(piece.rows)
        vocabularies = {}
        for name, count in counts.items():
            feature = schema.feature(name)
            table = count.merged().filter(
                pa.compute.greater_equal(pa.compute.field("count"), feature.min_count)
            )
            table = table.sort_by([("count", "descending"), ("value", "ascending")])
            vocabularies[name] = table.column("value").combine_chunks()
        return cls(schema, vocabularies, {n: m.stats() for n, m in moments.items()})

    # ----------------------------------------------------------- encoding
    def table_sizes(self) -> dict[str, int]:
        """Rows of each table (sparse features, unshared sequences), padding and unknown included."""
        sizes = {}
        for f in self.schema.tables:
            values = f.hash_buckets if f.hash_buckets else len(self.vocabularies[f.name])
            sizes[f.name] = FIRST_ID + values
        return sizes

    def _lookup(self, values, table: str, where: str) -> np.ndarray:
        pa = _arrow()
        pc = pa.compute
        feature = self.schema.feature(table)
        values = _ids(values, table, where)
        if feature.hash_buckets:
            return self._hashed(values, feature.hash_buckets)
        vocabulary = self.vocabularies[table]
        if values.type != vocabulary.type:  # ints in one file, strings in another: compare text
            values = values.cast(pa.string())
            if table not in self._as_text:
                self._as_text[table] = vocabulary.cast(pa.string())
            vocabulary = self._as_text[table]
        index = pc.index_in(values, value_set=vocabulary).fill_null(-1)
        return index.to_numpy(zero_copy_only=False).astype(np.int64) + FIRST_ID

    @staticmethod
    def _hashed(values, buckets: int) -> np.ndarray:
        import pandas as pd

        pa = _arrow()
        text = values.cast(pa.string())
        missing = text.is_null().to_numpy(zero_copy_only=False)
        raw = text.fill_null("").to_numpy(zero_copy_only=False)
        hashed = pd.util.hash_array(raw, categorize=False) % np.uint64(buckets)
        return np.where(missing, UNKNOWN_ID, hashed.astype(np.int64) + FIRST_ID)

    def encode(self, batch, where: str) -> dict[str, np.ndarray]:
        """A record batch -> ``{feature: array}``: sparse (B,) int64, dense (B,)
        float32 raw values (NaN where missing; the model standardises), sequence
        (B, T) int64 left-aligned, padded with 0."""
        pa = _arrow()
        out: dict[str, np.ndarray] = {}
        history_lengths: dict[str, np.ndarray] = {}
        for feature in self.schema.features:
            column = batch.column(feature.name)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            at = f"{where}, column {feature.name!r}"
            if feature.kind == "sparse":
                out[feature.name] = self._lookup(column, feature.name, at)
            elif feature.kind == "dense":
                out[feature.name] = _dense_values(column, where, feature.name).astype(np.float32)
            else:
                lists = sequence_lists(column)
                lengths = pa.compute.list_value_length(lists).fill_null(0).to_numpy()
                flat = self._lookup(pa.compute.list_flatten(lists), feature.table, at)
                out[feature.name] = _pad(
                    flat, lengths.astype(np.int64), self.schema.sequence_len(feature)
                )
                history_lengths[feature.name] = lengths
        check_aligned(self.schema, history_lengths, where)
        return out

    def labels(self, batch, where: str) -> np.ndarray:
        """The label column as float32 0 / 1 (see :func:`labels_of`)."""
        return labels_of(self.schema, batch, where)

    # --------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "vocabularies": {
                name: {
                    "type": "int" if _arrow().types.is_integer(values.type) else "string",
                    "values": values.to_pylist(),
                }
                for name, values in self.vocabularies.items()
            },
            "dense_stats": {name: list(stats) for name, stats in self.dense_stats.items()},
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureEncoder:
        pa = _arrow()
        vocabularies = {
            name: pa.array(v["values"], pa.int64() if v["type"] == "int" else pa.string())
            for name, v in values["vocabularies"].items()
        }
        stats = {name: (float(m), float(s)) for name, (m, s) in values["dense_stats"].items()}
        return cls(Schema.from_dict(values["schema"]), vocabularies, stats)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> FeatureEncoder:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise DataError(
                f"{path}: missing; it holds the vocabularies the model was trained with"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}: not a features file written by train ({err})") from None


def labels_of(schema: Schema, batch, where: str) -> np.ndarray:
    """A record batch's label column as float32 0 / 1 (ratings through the schema's
    ``click_threshold``); a missing label or one that is not 0 / 1 is a DataError."""
    values = _dense_values(batch.column(schema.label), where, schema.label)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataError(
            f"{where}: label column {schema.label!r} is missing at row {bad[0]} of the batch"
        )
    if schema.click_threshold is not None:
        return (values >= schema.click_threshold).astype(np.float32)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        raise DataError(
            f"{where}: label column {schema.label!r} holds {float(values[bad[0]]):g}; labels "
            "are 0 / 1 (set click_threshold in the schema for ratings)"
        )
    return values.astype(np.float32)


def _filter_columns(schema: Schema, files: SampleFiles) -> set[str]:
    """The columns a split rule reads besides the features."""
    columns = {schema.label}
    if schema.time:
        columns.add(schema.time)
    elif files.has_column(schema.split):
        columns.add(schema.split)
    return columns


def _dense_values(column, where: str, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for null / non-finite values."""
    pa = _arrow()
    try:
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowException as err:
        raise DataError(f"{where}: column {name!r} is not numeric ({err})") from None
    return np.where(np.isfinite(values), values, np.nan)


def _pad(flat: np.ndarray, lengths: np.ndarray, steps: int) -> np.ndarray:
    """Flat lists -> (B, T): each row's last ``steps`` entries, left-aligned, 0-padded."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    keep = np.minimum(lengths, steps)
    start = offsets[:-1] + lengths - keep
    mask = np.arange(steps) < keep[:, None]
    positions = np.where(mask, start[:, None] + np.arange(steps), 0)
    ids = flat[positions] if len(flat) else np.zeros(positions.shape, np.int64)
    return np.where(mask, ids, PADDING_ID)


def check_aligned(schema: Schema, lengths: dict[str, np.ndarray], where: str) -> None:
    history = [f.name for f in schema.history]
    for name in history[1:]:
        differ = np.flatnonzero(lengths[name] != lengths[history[0]])
        if len(differ):
            row = differ[0]
            raise DataError(
                f"{where}: history sequences {history[0]!r} and {name!r} are aligned position by "
                f"position, but at row {row} of the batch they hold {lengths[history[0]][row]} and "
                f"{lengths[name][row]} entries"
            )


def describe(encoder: FeatureEncoder) -> Iterable[str]:
    """One line per feature: what the model will read."""
    sizes = encoder.table_sizes()
    for f in encoder.schema.features:
        if f.kind == "sparse":
            how = (
                f"hashed into {f.hash_buckets}"
                if f.hash_buckets
                else f"{sizes[f.name] - FIRST_ID} values"
            )
            yield f"  {f.name}: sparse{' (target)' if f.role else ''}, {how}"
        elif f.kind == "dense":
            mean, std = encoder.dense_stats[f.name]
            yield f"  {f.name}: dense, mean {mean:.4g}, std {std:.4g}"
        elif f.shares:
            yield f"  {f.name}: sequence of {f.shares}, T = {encoder.schema.sequence_len(f)}"
        else:
            how = (
                f"hashed into {f.hash_buckets}"
                if f.hash_buckets
                else f"{sizes[f.name] - FIRST_ID} values"
            )
            yield f"  {f.name}: sequence, {how}, T = {encoder.schema.sequence_len(f)}"
