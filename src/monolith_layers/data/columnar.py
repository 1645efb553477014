"""Sample-log files read in pieces: Parquet row groups, or slices of a CSV file.

A :class:`SampleFiles` is a Parquet file, a folder of Parquet shards
(``*.parquet``, read in name order) or a CSV file. Parquet is read one row
group at a time with pyarrow, so memory holds one row group's columns (and
only the columns asked for), never the whole file; write row groups of
about 100k rows. A CSV file is read whole (it is for small data) and cut
into pieces of :data:`CSV_PIECE_ROWS` rows.

Every column is checked against the schema from the files' metadata before
any row is read, and every read error names the file, the row group and the
column: a missing column, a list where a scalar belongs, a corrupt file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .interactions import DataError
from .schema import Feature, Schema

CSV_PIECE_ROWS = 65_536
READ_ROWS = 65_536  # rows per record batch read from a row group


def _arrow():
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading Parquet / CSV sample logs needs pyarrow: pip install 'monolith-layers[demo]'"
        ) from err
    return pyarrow


@dataclass(frozen=True)
class Piece:
    """A unit of reading: a Parquet row group, or a slice of a CSV file."""

    file: int  # index into SampleFiles.paths
    row_group: int  # the row group (Parquet) or the slice number (CSV)
    rows: int


class SampleFiles:
    """The files behind one ``--data`` / ``--valid`` / ``--test`` path (module docstring).

    Args:
        path: a Parquet file, a folder of Parquet files, or a ``.csv`` file.
        schema: the columns to check and read.
    """

    def __init__(self, path: str | Path, schema: Schema) -> None:
        pa = _arrow()
        self.path = Path(path)
        self.schema = schema
        self._csv = None
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self.paths = sorted(self.path.glob("*.parquet"))
            if not self.paths:
                raise DataError(f"{self.path}: a folder with no '*.parquet' files")
        else:
            self.paths = [self.path]
        self.pieces: list[Piece] = []
        if self.path.suffix.lower() == ".csv":
            self._csv = self._read_csv()
            for start in range(0, max(self._csv.num_rows, 1), CSV_PIECE_ROWS):
                rows = min(CSV_PIECE_ROWS, self._csv.num_rows - start)
                self.pieces.append(Piece(0, start // CSV_PIECE_ROWS, rows))
            self._check_types(self.path, self._csv.schema)
            return
        for index, file in enumerate(self.paths):
            try:
                metadata = pa.parquet.ParquetFile(file).metadata
                arrow_schema = pa.parquet.read_schema(file)
            except (pa.ArrowException, OSError) as err:
                raise DataError(f"{file}: not a readable Parquet file ({err})") from None
            self._check_types(file, arrow_schema)
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                if rows:
                    self.pieces.append(Piece(index, group, rows))
        if not self.pieces:
            raise DataError(f"{self.path}: holds no rows")

    @property
    def num_rows(self) -> int:
        return sum(p.rows for p in self.pieces)

    def where(self, piece: Piece) -> str:
        """``'file, row group k'``: what an error about the piece names."""
        unit = "rows from" if self._csv is not None else "row group"
        number = piece.row_group * CSV_PIECE_ROWS if self._csv is not None else piece.row_group
        return f"{self.paths[piece.file]}, {unit} {number}"

    def read(self, piece: Piece, columns: list[str]) -> Iterator:
        """The piece's ``columns`` as pyarrow RecordBatches of at most READ_ROWS rows."""
        pa = _arrow()
        if self._csv is not None:
            start = piece.row_group * CSV_PIECE_ROWS
            table = self._csv.select(columns).slice(start, piece.rows)
            yield from table.to_batches(max_chunksize=READ_ROWS)
            return
        try:
            file = pa.parquet.ParquetFile(self.paths[piece.file])
            yield from file.iter_batches(
                batch_size=READ_ROWS, row_groups=[piece.row_group], columns=columns
            )
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{self.where(piece)}: cannot be read ({err})") from None

    # ------------------------------------------------------------- checks
    def _read_csv(self):
        pa = _arrow()
        import pyarrow.csv as csv

        types = {f.name: pa.string() for f in self.schema.sequences}
        types.update({f.name: pa.float64() for f in self.schema.dense})
        types[self.schema.label] = pa.float64()
        if self.schema.split:
            types[self.schema.split] = pa.string()
        try:
            return csv.read_csv(
                self.path,
                convert_options=csv.ConvertOptions(column_types=types, strings_can_be_null=True),
            )
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{self.path}: not a readable CSV file ({err})") from None

    def _check_types(self, file: Path, arrow_schema) -> None:
        present = set(arrow_schema.names)
        missing = [c for c in self.schema.columns() if c not in present]
        if missing:
            raise DataError(
                f"{file}: no column {missing[0]!r} (the schema needs {missing}); it has "
                f"{sorted(present)}"
            )
        for feature in self.schema.features:
            _check_feature_type(file, feature, arrow_schema.field(feature.name).type)
        _check_scalar(
            file, self.schema.label, "the label", arrow_schema.field(self.schema.label).type
        )
        if self.schema.time:
            kind = arrow_schema.field(self.schema.time).type
            _check_scalar(file, self.schema.time, "the time", kind, allow_timestamp=True)

    def has_column(self, name: str | None) -> bool:
        if name is None:
            return False
        if self._csv is not None:
            return name in self._csv.schema.names
        pa = _arrow()
        return name in pa.parquet.read_schema(self.paths[0]).names


def _is_id_type(kind) -> bool:
    types = _arrow().types
    return types.is_integer(kind) or types.is_string(kind) or types.is_large_string(kind)


def _is_number_type(kind) -> bool:
    types = _arrow().types
    return (
        types.is_integer(kind)
        or types.is_floating(kind)
        or types.is_boolean(kind)
        or types.is_decimal(kind)
        or types.is_null(kind)
    )


def _is_list(kind) -> bool:
    types = _arrow().types
    return types.is_list(kind) or types.is_large_list(kind)


def _check_feature_type(file: Path, feature: Feature, kind) -> None:
    what = f"{file}: column {feature.name!r} ({feature.kind} feature) has type {kind}"
    if feature.kind == "sparse" and not _is_id_type(kind):
        hint = (
            "a list where one id per row belongs" if _is_list(kind) else "ids are ints or strings"
        )
        raise DataError(f"{what}: {hint}")
    if feature.kind == "dense":
        _check_scalar(file, feature.name, "a dense feature", kind)
    if feature.kind == "sequence":
        types = _arrow().types
        is_tokens = types.is_string(kind) or types.is_large_string(kind)
        if not (is_tokens or (_is_list(kind) and _is_id_type(kind.value_type))):
            raise DataError(
                f"{what}: expected a list of ints or strings (or space-separated tokens)"
            )


def _check_scalar(file: Path, column: str, role: str, kind, allow_timestamp=False) -> None:
    types = _arrow().types
    if _is_number_type(kind) or (allow_timestamp and types.is_temporal(kind)):
        return
    hint = "a list where one number per row belongs" if _is_list(kind) else "expected numbers"
    raise DataError(f"{file}: column {column!r} ({role}) has type {kind}: {hint}")
