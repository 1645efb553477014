"""Sample logs streamed into batches: splits, sharding across processes, a bounded shuffle.

:func:`schema_datasets` turns a sample log (see :mod:`.schema`) into three
:class:`SampleStream` splits and the fitted :class:`.FeatureEncoder`:

1. a counting pass reads the label (and the time or split column) of every
   row group and records how many rows of each split it holds;
2. the encoder's pass reads the training rows' features (vocabularies,
   dense statistics);
3. every epoch streams the pieces again.

Sharding. Each epoch lays the pieces end to end (in a seeded order, the
same on every process, when shuffling) and cuts the split's rows into
``world size x data-loader workers`` contiguous ranges whose sizes differ
by at most one row: every row is read by exactly one worker of one rank,
and none is dropped. Every range is cut into the same number of batches
(of ``batch_size`` rows, the last ones possibly smaller), so all ranks take
the same number of steps, as DDP and TorchRec's collectives need.

Shuffling: pieces in a per-epoch order, then rows within a buffer of
``shuffle_buffer`` rows. Memory is bounded by that buffer, one record batch
of the file (:data:`.columnar.READ_ROWS` rows of the columns read) and the
vocabularies, whatever the size of the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .columnar import Piece, SampleFiles, _arrow
from .encoding import FeatureEncoder, check_aligned, labels_of, sequence_lists
from .interactions import DataError
from .schema import PADDING_ID, Schema

PARTS = ("train", "valid", "test")
TIME_SAMPLE = 1 << 21  # event times kept to place the time split's cuts


# ------------------------------------------------------------------ splits
@dataclass
class SplitRule:
    """Which split (0 train, 1 valid, 2 test) each row of a sample log belongs to.

    ``kind``: ``'all'`` (the whole file is one split), ``'time'`` (cut at
    ``cuts``), ``'column'`` (the schema's split column) or ``'random'``
    (seeded, per row, with ``fractions`` for valid and test).
    """

    kind: str
    schema: Schema
    cuts: tuple[float, float] = (0.0, 0.0)
    fractions: tuple[float, float] = (0.1, 0.1)
    seed: int = 0

    def columns(self) -> list[str]:
        if self.kind == "time":
            return [self.schema.time]
        if self.kind == "column":
            return [self.schema.split]
        return []

    def assign(self, piece: Piece, batch, offset: int, where: str) -> np.ndarray:
        """The split of each row of ``batch``, the rows from ``offset`` of ``piece``."""
        n = batch.num_rows
        if self.kind == "all":
            return np.zeros(n, np.int8)
        if self.kind == "time":
            times = _times(batch.column(self.schema.time), where, self.schema.time)
            valid_cut, test_cut = self.cuts
            return np.where(times > test_cut, 2, np.where(times > valid_cut, 1, 0)).astype(np.int8)
        if self.kind == "column":
            return _split_column(batch.column(self.schema.split), where, self.schema.split)
        # Random: a stream per piece, so a row's split never depends on how it is batched.
        draws = np.random.default_rng((self.seed, piece.file, piece.row_group)).random(piece.rows)
        draws = draws[offset : offset + n]
        valid, test = self.fractions
        return np.where(draws < test, 2, np.where(draws < test + valid, 1, 0)).astype(np.int8)


def _times(column, where: str, name: str) -> np.ndarray:
    pa = _arrow()
    if pa.types.is_temporal(column.type):
        column = column.cast(pa.int64())
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataError(f"{where}: time column {name!r} is missing at row {bad[0]} of the batch")
    return values


def _split_column(column, where: str, name: str) -> np.ndarray:
    pa = _arrow()
    text = column.cast(pa.string()).fill_null("")
    index = (
        pa.compute.index_in(text, value_set=pa.array(PARTS))
        .fill_null(-1)
        .to_numpy(zero_copy_only=False)
    )
    bad = np.flatnonzero(index < 0)
    if len(bad):
        value = text[int(bad[0])].as_py()
        raise DataError(
            f"{where}: split column {name!r} holds {value!r}; expected one of {list(PARTS)}"
        )
    return index.astype(np.int8)


def split_rule(
    files: SampleFiles, schema: Schema, fractions: tuple[float, float], seed: int
) -> SplitRule:
    """The schema's split for one file: by time, by its split column, or at random."""
    if schema.time:
        return SplitRule("time", schema, cuts=_time_cuts(files, schema, fractions, seed))
    if files.has_column(schema.split):
        return SplitRule("column", schema)
    return SplitRule("random", schema, fractions=fractions, seed=seed)


def _time_cuts(files, schema, fractions, seed) -> tuple[float, float]:
    """The time split's cuts: quantiles of the event times (of a uniform sample of
    at most TIME_SAMPLE of them, so memory stays bounded)."""
    rate = min(1.0, TIME_SAMPLE / max(files.num_rows, 1))
    rng = np.random.default_rng(seed)
    kept = []
    for piece in files.pieces:
        for batch in files.read(piece, [schema.time]):
            times = _times(batch.column(0), files.where(piece), schema.time)
            kept.append(times if rate == 1.0 else times[rng.random(len(times)) < rate])
    valid, test = fractions
    cuts = np.quantile(np.concatenate(kept), [1 - valid - test, 1 - test])
    return float(cuts[0]), float(cuts[1])


def count_rows(files: SampleFiles, rule: SplitRule) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, positives)``, each (pieces, 3): how many rows (clicks) of each split
    every piece holds. Reads the label, the split rule's column and the history
    lists only, and checks every row's label and history alignment on the way,
    so that bad data stops a run before anything is written."""
    schema = files.schema
    rows = np.zeros((len(files.pieces), 3), np.int64)
    positives = np.zeros((len(files.pieces), 3), np.int64)
    history = [f.name for f in schema.history] if len(schema.history) > 1 else []
    columns = sorted({schema.label, *rule.columns(), *history})
    pc = _arrow().compute
    for index, piece in enumerate(files.pieces):
        where = files.where(piece)
        offset = 0
        for batch in files.read(piece, columns):
            part = rule.assign(piece, batch, offset, where)
            labels = labels_of(schema, batch, where)
            lengths = {
                name: pc.list_value_length(sequence_lists(batch.column(name)))
                .fill_null(0)
                .to_numpy()
                for name in history
            }
            check_aligned(schema, lengths, where)
            rows[index] += np.bincount(part, minlength=3)
            positives[index] += np.bincount(part, weights=labels, minlength=3).astype(np.int64)
            offset += batch.num_rows
    return rows, positives


# ------------------------------------------------------------------ streams
@dataclass(frozen=True)
class _Range:
    piece: int  # index into the files' pieces
    start: int  # first and past-the-last row of the split, counted within the piece
    stop: int
    first_row: int  # the split-wide row number of ``start`` (files' order)


def batch_sizes(rows: int, steps: int, batch_size: int) -> list[int]:
    """``rows`` cut into exactly ``steps`` batches of at most ``batch_size``."""
    sizes = [batch_size] * (steps - 1) + [rows - batch_size * (steps - 1)]
    if sizes[-1] == 0 and steps > 1 and batch_size > 1:
        sizes[-2], sizes[-1] = batch_size - 1, 1
    if any(s <= 0 for s in sizes):
        raise DataError(f"{rows} rows cannot make {steps} batches of at most {batch_size}")
    return sizes


class SampleStream:
    """One split of a sample log, streamed (module docstring); the trainer hands
    it the rank and world size (``shards_itself``) instead of a sampler.

    Each batch is a dict of tensors: every feature by name (sparse (B,)
    int64, dense (B,) float32, sequence (B, T) int64), ``label`` (B,),
    ``row`` (B,) (the row's number in the split, in the files' order),
    ``mask`` (B, T) bool for the behaviour history and, with
    ``with_negative_history``, ``negative_history`` (B, H, T): for DIEN's
    auxiliary loss, each real history step's ids replaced by those of a
    random real step of the batch (aligned across the H history sequences).
    """

    def __init__(
        self,
        name: str,
        files: SampleFiles,
        encoder: FeatureEncoder,
        rule: SplitRule,
        part: int,
        rows: np.ndarray,
        positives: int,
        seed: int = 0,
        shuffle_buffer: int = 32_768,
        workers: int = 0,
    ) -> None:
        self.name = name
        self.files, self.encoder, self.rule, self.part = files, encoder, rule, part
        self.piece_rows = np.asarray(rows, np.int64)
        self.num_positives = int(positives)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.workers = workers
        self.with_negative_history = False

    shards_itself = True

    def __len__(self) -> int:
        return int(self.piece_rows.sum())

    def positives(self) -> float:
        return self.num_positives / len(self) if len(self) else 0.0

    def check_evaluable(self) -> None:
        if len(self) == 0 or self.num_positives in (0, len(self)):
            only = "no rows" if len(self) == 0 else f"every label is {int(self.num_positives > 0)}"
            raise DataError(f"{self.name}: {only}; AUC needs both clicks and non-clicks")

    # ---------------------------------------------------------- planning
    def _ranges(self, shard: int, shards: int, order: np.ndarray) -> list[_Range]:
        total = len(self)
        lo, hi = shard * total // shards, (shard + 1) * total // shards
        natural_start = np.concatenate([[0], np.cumsum(self.piece_rows)])
        ranges, position = [], 0
        for piece in order:
            size = int(self.piece_rows[piece])
            start, stop = max(lo - position, 0), min(hi - position, size)
            if start < stop:
                ranges.append(_Range(int(piece), start, stop, int(natural_start[piece]) + start))
            position += size
        return ranges

    def loader(
        self,
        batch_size: int,
        shuffle: bool,
        epoch: int = 0,
        rank: int = 0,
        world: int = 1,
        pin_memory: bool = False,
    ) -> DataLoader:
        """This rank's batches of one epoch; ``len()`` is the same on every rank."""
        shards = world * max(self.workers, 1)
        if len(self) < shards:
            raise DataError(
                f"{self.name}: {len(self)} rows cannot be shared by {world} processes x "
                f"{max(self.workers, 1)} loader workers"
            )
        steps = math.ceil(math.ceil(len(self) / shards) / batch_size)
        epoch_stream = _EpochStream(self, batch_size, shuffle, epoch, rank, shards, steps)
        return DataLoader(
            epoch_stream,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=pin_memory,
            persistent_workers=False,
        )

    # ----------------------------------------------------------- reading
    def read_rows(self, ranges: list[_Range]) -> Iterator[dict[str, np.ndarray]]:
        """Encoded chunks of the split's rows in ``ranges`` (with their ``row`` numbers)."""
        pa = _arrow()
        schema = self.encoder.schema
        columns = sorted({*(f.name for f in schema.features), schema.label, *self.rule.columns()})
        for span in ranges:
            piece = self.files.pieces[span.piece]
            where = self.files.where(piece)
            offset, seen = 0, 0  # rows of the piece read / of the split met so far
            for batch in self.files.read(piece, columns):
                part = self.rule.assign(piece, batch, offset, where)
                offset += batch.num_rows
                keep = np.flatnonzero(part == self.part)
                # This batch holds the split's rows seen .. seen + len(keep) of the piece.
                lo, hi = max(span.start - seen, 0), max(min(span.stop - seen, len(keep)), 0)
                inside = keep[lo:hi]
                first = span.first_row + max(seen - span.start, 0)
                seen += len(keep)
                if not len(inside):
                    if seen >= span.stop:
                        break
                    continue
                batch = batch.take(pa.array(inside))
                chunk = self.encoder.encode(batch, where)
                chunk["label"] = self.encoder.labels(batch, where)
                chunk["row"] = first + np.arange(len(inside), dtype=np.int64)
                yield chunk
                if seen >= span.stop:
                    break


class _EpochStream(IterableDataset):
    """The batches of one epoch for one rank (and, inside, one loader worker)."""

    def __init__(self, stream, batch_size, shuffle, epoch, rank, shards, steps) -> None:
        self.stream, self.batch_size, self.shuffle = stream, batch_size, shuffle
        self.epoch, self.rank, self.shards, self.steps = epoch, rank, shards, steps
        self.workers = max(stream.workers, 1)

    def __len__(self) -> int:
        return self.steps * self.workers

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        shard = self.rank * self.workers + (info.id if info is not None else 0)
        stream = self.stream
        rng = np.random.default_rng((stream.seed, self.epoch, shard))
        pieces = np.arange(len(stream.piece_rows))
        if self.shuffle:  # the same order on every rank: a function of (seed, epoch) only
            pieces = np.random.default_rng((stream.seed, self.epoch)).permutation(pieces)
        ranges = stream._ranges(shard, self.shards, pieces)
        rows = sum(r.stop - r.start for r in ranges)
        sizes = batch_sizes(rows, self.steps, self.batch_size)
        buffered: list[dict[str, np.ndarray]] = []
        count, emitted = 0, 0
        for chunk in stream.read_rows(ranges):
            buffered.append(chunk)
            count += len(chunk["row"])
            if count < stream.shuffle_buffer:
                continue
            batches, leftover = self._drain(buffered, sizes[emitted:], rng, final=False)
            for batch in batches:
                emitted += 1
                yield self._tensors(batch, rng)
            buffered, count = [leftover], len(leftover["row"])
        if buffered:
            batches, _ = self._drain(buffered, sizes[emitted:], rng, final=True)
            for batch in batches:
                emitted += 1
                yield self._tensors(batch, rng)
        if emitted != len(sizes):
            raise DataError(
                f"{stream.name}: read {emitted} batches where {len(sizes)} were planned; the "
                "files changed while training?"
            )

    def _drain(self, buffered, sizes, rng, final: bool):
        merged = {k: np.concatenate([c[k] for c in buffered]) for k in buffered[0]}
        n = len(merged["row"])
        if self.shuffle:
            order = rng.permutation(n)
            merged = {k: v[order] for k, v in merged.items()}
        batches, start = [], 0
        for size in sizes:
            if start + size > n:
                break
            batches.append({k: v[start : start + size] for k, v in merged.items()})
            start += size
        if final and start != n:
            raise DataError(f"{self.stream.name}: {n - start} rows left after the planned batches")
        return batches, {k: v[start:] for k, v in merged.items()}

    def _tensors(self, batch: dict[str, np.ndarray], rng) -> dict[str, torch.Tensor]:
        schema = self.stream.encoder.schema
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
        history = [batch[f.name] for f in schema.history]
        if history:
            mask = history[0] != PADDING_ID
            out["mask"] = torch.from_numpy(mask)
            if self.stream.with_negative_history:
                out["negative_history"] = torch.from_numpy(_negatives(history, mask, rng))
        return out


def _negatives(history: list[np.ndarray], mask: np.ndarray, rng) -> np.ndarray:
    """(B, H, T): at each real step, the ids of a random real step of the batch."""
    rows, steps = np.nonzero(mask)
    stacked = np.stack(history, axis=1)  # (B, H, T)
    if not len(rows):
        return np.zeros_like(stacked)
    pick = rng.integers(len(rows), size=mask.shape)
    drawn = stacked[rows[pick], :, steps[pick]]  # (B, T, H)
    return np.where(mask[:, None, :], drawn.transpose(0, 2, 1), PADDING_ID)


# ------------------------------------------------------------------ building
def schema_datasets(
    schema: Schema,
    data: str | Path,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    fractions: tuple[float, float] = (0.1, 0.1),
    seed: int = 0,
    encoder: FeatureEncoder | None = None,
    shuffle_buffer: int = 32_768,
    workers: int = 0,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[SampleStream, SampleStream, SampleStream, FeatureEncoder]:
    """``(train, valid, test, encoder)`` of a sample log (module docstring).

    ``valid`` and ``test``: files of their own (give both, or neither and the
    schema's split cuts ``data``). ``encoder``: a fitted one (evaluation of a
    saved model); otherwise one is fitted on the training rows. ``progress``:
    ``progress(description, total rows)`` returns a callback taking rows done.
    """
    if (valid is None) != (test is None):
        raise DataError(
            "give both --valid and --test files, or neither (the schema then splits --data)"
        )
    files = SampleFiles(data, schema)
    rule = (
        SplitRule("all", schema)
        if valid is not None
        else split_rule(files, schema, fractions, seed)
    )
    rows, positives = count_rows(files, rule)
    if encoder is None:
        tick = progress("fitting vocabularies", files.num_rows) if progress else None
        encoder = FeatureEncoder.fit(
            schema,
            files,
            lambda piece, batch, offset: rule.assign(piece, batch, offset, files.where(piece)) == 0,
            tick,
        )
    common = {"seed": seed, "shuffle_buffer": shuffle_buffer, "workers": workers}
    streams = [
        SampleStream(
            f"{data} (train split)" if valid is None else str(data),
            files,
            encoder,
            rule,
            0,
            rows[:, 0],
            positives[:, 0].sum(),
            **common,
        )
    ]
    for part, path in ((1, valid), (2, test)):
        if path is None:
            streams.append(
                SampleStream(
                    f"{data} ({PARTS[part]} split)",
                    files,
                    encoder,
                    rule,
                    part,
                    rows[:, part],
                    positives[:, part].sum(),
                    **common,
                )
            )
            continue
        other = SampleFiles(path, schema)
        whole = SplitRule("all", schema)
        other_rows, other_positives = count_rows(other, whole)
        streams.append(
            SampleStream(
                str(path),
                other,
                encoder,
                whole,
                0,
                other_rows[:, 0],
                other_positives[:, 0].sum(),
                **common,
            )
        )
    for stream in streams:
        if len(stream) == 0:
            raise DataError(f"{stream.name}: no rows (check the split column / time / fractions)")
    return streams[0], streams[1], streams[2], encoder
