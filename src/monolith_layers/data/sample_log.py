"""An interaction log written as a sample log: Parquet splits plus their feature schema.

:func:`write_sample_log` turns any log the loaders read (RecBole atomic
files, MovieLens, Amazon, the synthetic generator) into the form users'
own data takes: one row per sample with ``user_id``, ``item_id`` and
``category`` (the targets), the history lists ``hist_item_id`` /
``hist_category`` (the same samples and histories as
:func:`~monolith_layers.data.build_datasets`), the ``label`` and, from
RecBole's ``.user`` and ``.item`` files, every side column by its RecBole
type: ``token`` -> a sparse feature, ``float`` -> a dense feature,
``token_seq`` -> a sequence with a table of its own (genres, title words).
It writes ``train.parquet``, ``valid.parquet``, ``test.parquet``,
``schema.json`` and ``schema_no_side.json`` (the same without the side
features), ready for ``monolith-layers train --schema``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .columnar import _arrow
from .interactions import DataError, Interactions
from .samples import DataConfig, build_datasets

ROWS_PER_GROUP = 100_000
SIDE_TYPES = {"token": "sparse", "float": "dense", "token_seq": "sequence"}
SIDE_SEQUENCE_LEN = 8  # genres, title words: short bags
OWN_COLUMNS = ("user_id", "item_id", "category", "hist_item_id", "hist_category", "label")


def recbole_side_columns(
    directory: Path, stem: str, key: str
) -> tuple[dict[str, str], object] | None:
    """``({column: RecBole type}, frame indexed by the id)`` of ``DIR/<stem>.<user|item>``."""
    import pandas as pd

    path = directory / f"{stem}.{key}"
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be parsed: {str(err).splitlines()[0]}") from None
    types = {}
    names = []
    for header in frame.columns:
        name, _, kind = header.partition(":")
        names.append(name)
        types[name] = kind
    frame.columns = names
    id_column = f"{key}_id"
    if id_column not in frame.columns:
        raise DataError(f"{path}: no {id_column!r} column; it has {names}")
    side = {n: SIDE_TYPES[t] for n, t in types.items() if n != id_column and t in SIDE_TYPES}
    return side, frame.drop_duplicates(id_column).set_index(id_column)


def _feature_name(name: str, owner: str) -> str:
    return f"{owner}_{name}" if name in OWN_COLUMNS else name


def _side_arrays(kind_of: dict[str, str], frame, ids: np.ndarray, owner: str) -> dict:
    """Each side column for the given ids (absent ids: null)."""
    pa = _arrow()
    rows = frame.reindex(ids)
    out = {}
    for name, kind in kind_of.items():
        values = rows[name]
        if kind == "dense":
            out[_feature_name(name, owner)] = pa.array(
                np.asarray(values.replace("", np.nan).astype(float)), from_pandas=True
            )
        elif kind == "sparse":
            out[_feature_name(name, owner)] = pa.array(
                values.replace("", None).tolist(), pa.string()
            )
        else:
            tokens = [v.split() if isinstance(v, str) else [] for v in values.tolist()]
            out[_feature_name(name, owner)] = pa.array(tokens, pa.list_(pa.string()))
    return out


def _lists(values: np.ndarray, mask: np.ndarray, names: np.ndarray):
    """(B, T) codes under a mask -> a list column of their original names."""
    pa = _arrow()
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(offsets, pa.array(names[values[mask]], pa.string()))


def _names(names: list[str], start: int) -> np.ndarray:
    """Codes -> original names; codes below ``start`` (padding, unknown) -> None."""
    return np.array([None] * start + list(names), dtype=object)


def write_sample_log(
    log: Interactions,
    out_dir: str | Path,
    config: DataConfig | None = None,
    recbole_dir: str | Path | None = None,
    recbole_name: str | None = None,
) -> Path:
    """Write the log's splits and schemas into ``out_dir`` (module docstring);
    ``recbole_dir`` / ``recbole_name``: where the ``.user`` / ``.item`` side
    files are. Returns the path of ``schema.json``."""
    pa = _arrow()
    import pyarrow.parquet as pq

    config = config or DataConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sides = {}
    if recbole_dir is not None:
        for key in ("user", "item"):
            found = recbole_side_columns(Path(recbole_dir), recbole_name or log.name, key)
            if found is not None:
                sides[key] = found
    users = np.array(log.user_names, dtype=object)
    items, categories = _names(log.item_names, 1), _names(log.category_names, 1)
    for split, dataset in zip(("train", "valid", "test"), build_datasets(log, config), strict=True):
        writer = None
        for start in range(0, len(dataset), ROWS_PER_GROUP):
            batch = dataset.__getitems__(
                np.arange(start, min(start + ROWS_PER_GROUP, len(dataset)))
            )
            mask = batch["mask"].numpy()
            user_ids, item_ids = users[batch["user"].numpy()], items[batch["item"].numpy()]
            columns = {
                "user_id": pa.array(user_ids.tolist(), pa.string()),
                "item_id": pa.array(item_ids.tolist(), pa.string()),
                "category": pa.array(categories[batch["category"].numpy()].tolist(), pa.string()),
                "hist_item_id": _lists(batch["history"].numpy(), mask, items),
                "hist_category": _lists(batch["history_category"].numpy(), mask, categories),
                "label": pa.array(batch["label"].numpy().astype(np.int8)),
            }
            if "user" in sides:
                columns.update(_side_arrays(*sides["user"], user_ids, "user"))
            if "item" in sides:
                columns.update(_side_arrays(*sides["item"], item_ids, "item"))
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(out / f"{split}.parquet", table.schema)
            writer.write_table(table, row_group_size=ROWS_PER_GROUP)
        writer.close()
    side_features = [
        {"name": _feature_name(name, key), "kind": kind}
        | ({"max_len": SIDE_SEQUENCE_LEN} if kind == "sequence" else {})
        for key, (kinds, _) in sides.items()
        for name, kind in kinds.items()
    ]
    base = [
        {"name": "user_id", "kind": "sparse"},
        {"name": "item_id", "kind": "sparse", "role": "target"},
        {"name": "category", "kind": "sparse", "role": "target"},
    ]
    history = [
        {"name": "hist_item_id", "kind": "sequence", "shares": "item_id"},
        {"name": "hist_category", "kind": "sequence", "shares": "category"},
    ]
    schema = {"label": "label", "split": None, "max_len": config.max_len}
    (out / "schema.json").write_text(
        json.dumps({**schema, "features": base + side_features + history}, indent=2)
    )
    (out / "schema_no_side.json").write_text(
        json.dumps({**schema, "features": base + history}, indent=2)
    )
    return out / "schema.json"
