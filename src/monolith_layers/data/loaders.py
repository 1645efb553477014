"""Read behaviour data from local files into :class:`Interactions`.

Formats (all read with pandas' C parser; nothing is downloaded):

* RecBole atomic files: ``DIR/<name>.inter`` (``user_id:token``,
  ``item_id:token``, ``rating:float`` and/or ``label:float``,
  ``timestamp:float``) and, if present, ``DIR/<name>.item`` whose
  ``class`` / ``genre`` / ``categories`` column gives the item category
  (its first token).
* MovieLens: ``u.data`` (+ ``u.item``), ``ratings.dat`` (+ ``movies.dat``),
  ``ratings.csv`` (+ ``movies.csv``); the first genre is the category.
* Amazon product reviews, 5-core JSON lines (``reviewerID``, ``asin``,
  ``unixReviewTime``) with the metadata file (``asin`` and
  ``categories`` / ``category``; the last category of the first path is the
  item's, as in the DIN / DIEN papers' preprocessing). Reviews are implicit
  feedback: every review is a click.
* ``ml-100k`` by name: the RecBole atomic files that the ``recbole``
  distribution on PyPI ships (``pip install --no-deps recbole``).

Explicit ratings become clicks where ``rating >= click_threshold``.
"""

from __future__ import annotations

import ast
import gzip
import importlib.metadata
import json
from pathlib import Path

import numpy as np

from .interactions import DataError, Interactions, from_columns

CATEGORY_COLUMNS = ("class", "genre", "genres", "categories", "category", "cate_id")


def _pandas():
    try:
        import pandas
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading data files needs pandas: pip install 'monolith-layers[demo]'"
        ) from err
    return pandas


def _read_table(path: Path, **kwargs):
    pd = _pandas()
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot be parsed: {str(err).splitlines()[0]}") from None


def _require(path: Path, frame, columns) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; it has {list(frame.columns)}")


def _numeric(path: Path, frame, column: str) -> np.ndarray:
    values = _pandas().to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataError(
            f"{path}: column {column!r} has a non-numeric value {frame[column].iloc[bad[0]]!r} "
            f"(data row {bad[0] + 1})"
        )
    return values


def _clicks(path: Path, frame, click_threshold: float) -> np.ndarray:
    if "label" in frame.columns:
        return (_numeric(path, frame, "label") > 0).astype(np.int64)
    return (_numeric(path, frame, "rating") >= click_threshold).astype(np.int64)


# --------------------------------------------------------------- RecBole
def load_recbole(
    directory: str | Path, click_threshold: float = 4.0, name: str | None = None
) -> Interactions:
    """RecBole atomic files ``DIR/<name>.inter`` (+ ``DIR/<name>.item``)."""
    directory = Path(directory)
    inter_files = sorted(directory.glob("*.inter"))
    if not inter_files:
        raise DataError(f"{directory}: no RecBole '.inter' file")
    if name is not None:
        inter = directory / f"{name}.inter"
    elif len(inter_files) > 1:
        raise DataError(
            f"{directory}: several '.inter' files {[p.name for p in inter_files]}; name one"
        )
    else:
        inter = inter_files[0]
    frame = _read_table(inter, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    needed = ["user_id", "item_id", "timestamp"]
    _require(inter, frame, needed + ([] if "label" in frame.columns else ["rating"]))
    categories = None
    item_file = inter.with_suffix(".item")
    if item_file.exists():
        items = _read_table(item_file, sep="\t", dtype=str, keep_default_na=False)
        items.columns = [c.split(":", 1)[0] for c in items.columns]
        _require(item_file, items, ["item_id"])
        column = next((c for c in CATEGORY_COLUMNS if c in items.columns), None)
        if column is not None:
            first = items[column].str.split().str[0]
            categories = {
                i: c for i, c in zip(items["item_id"], first, strict=True) if isinstance(c, str)
            }
    return from_columns(
        name or inter.stem,
        frame["user_id"].to_numpy(),
        frame["item_id"].to_numpy(),
        _numeric(inter, frame, "timestamp"),
        _clicks(inter, frame, click_threshold),
        categories,
    )


def ml100k_dir() -> Path:
    """Where the ``recbole`` distribution keeps MovieLens-100K (never imports recbole)."""
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            "ml-100k is read from the 'recbole' distribution, which is not installed: "
            "pip install --no-deps recbole (or pass --data DIR with MovieLens files)"
        ) from None
    for file in dist.files or []:
        if str(file).endswith("dataset_example/ml-100k/ml-100k.inter"):
            return Path(dist.locate_file(file)).parent
    raise DataError("the installed 'recbole' distribution has no dataset_example/ml-100k files")


# --------------------------------------------------------------- MovieLens
def _first_genre(text: str, separator: str) -> str | None:
    genre = str(text).split(separator)[0].strip()
    return genre if genre and genre != "(no genres listed)" else None


def load_movielens(path: str | Path, click_threshold: float = 4.0) -> Interactions:
    """MovieLens ``u.data`` / ``ratings.dat`` / ``ratings.csv`` (a file or its folder)."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("u.data", "ratings.dat", "ratings.csv") if (path / n).exists()]
        if not found:
            raise DataError(f"{path}: no MovieLens u.data, ratings.dat or ratings.csv")
        path = found[0]
    columns = ["user", "item", "rating", "timestamp"]
    categories: dict | None = None
    if path.name == "u.data":
        frame = _read_table(path, sep="\t", header=None, names=columns, dtype=str)
        genres = path.with_name("u.genre")
        items = path.with_name("u.item")
        if items.exists():
            table = _read_table(items, sep="|", header=None, dtype=str, encoding="latin-1")
            names = (
                _read_table(genres, sep="|", header=None, dtype=str)[0].tolist()
                if genres.exists()
                else [f"genre_{i}" for i in range(table.shape[1] - 5)]
            )
            flags = table.iloc[:, 5:].to_numpy() == "1"
            categories = {
                item: names[int(np.argmax(row))]
                for item, row in zip(table[0], flags, strict=True)
                if row.any()
            }
    elif path.suffix == ".dat":
        frame = _read_table(path, sep="::", header=None, names=columns, dtype=str, engine="python")
        movies = path.with_name("movies.dat")
        if movies.exists():
            table = _read_table(
                movies,
                sep="::",
                header=None,
                names=["item", "title", "genres"],
                dtype=str,
                engine="python",
                encoding="latin-1",
            )
            categories = {
                i: _first_genre(g, "|") for i, g in zip(table["item"], table["genres"], strict=True)
            }
    elif path.suffix == ".csv":
        frame = _read_table(path, dtype=str)
        _require(path, frame, ["userId", "movieId", "rating", "timestamp"])
        frame = frame.rename(columns={"userId": "user", "movieId": "item"})
        movies = path.with_name("movies.csv")
        if movies.exists():
            table = _read_table(movies, dtype=str)
            _require(movies, table, ["movieId", "genres"])
            categories = {
                i: _first_genre(g, "|")
                for i, g in zip(table["movieId"], table["genres"], strict=True)
            }
    else:
        raise DataError(f"{path}: not a MovieLens ratings file (u.data, ratings.dat, ratings.csv)")
    if frame.isna().any().any():
        row = int(np.flatnonzero(frame.isna().any(axis=1).to_numpy())[0])
        raise DataError(f"{path}: data row {row + 1} has missing fields")
    categories = {k: v for k, v in (categories or {}).items() if v is not None}
    return from_columns(
        path.parent.name or path.name,
        frame["user"].to_numpy(),
        frame["item"].to_numpy(),
        _numeric(path, frame, "timestamp"),
        (_numeric(path, frame, "rating") >= click_threshold).astype(np.int64),
        categories,
    )


# --------------------------------------------------------------- Amazon
def _json_lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    # The 2014 dumps are Python literals, not JSON: read them as
                    # literals (never with eval).
                    try:
                        yield ast.literal_eval(line)
                    except (ValueError, SyntaxError):
                        raise DataError(
                            f"{path}: line {number} is neither JSON nor a literal"
                        ) from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read: {err}") from None


def _amazon_category(record: dict) -> str | None:
    paths = record.get("categories") or record.get("category")
    if not paths:
        return None
    first = paths[0] if isinstance(paths[0], list) else paths
    return str(first[-1]) if first else None


def load_amazon(reviews: str | Path, meta: str | Path | None = None) -> Interactions:
    """Amazon 5-core reviews (JSON lines, optionally gzipped) and their metadata."""
    reviews = Path(reviews)
    users, items, times = [], [], []
    for number, record in enumerate(_json_lines(reviews), 1):
        try:
            users.append(record["reviewerID"])
            items.append(record["asin"])
            times.append(float(record["unixReviewTime"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{reviews}: record {number} lacks reviewerID / asin / unixReviewTime"
            ) from None
    categories = None
    if meta is not None:
        categories = {}
        for record in _json_lines(Path(meta)):
            if isinstance(record, dict) and "asin" in record:
                category = _amazon_category(record)
                if category is not None:
                    categories[record["asin"]] = category
    return from_columns(
        reviews.name.split(".")[0],
        np.asarray(users, dtype=object),
        np.asarray(items, dtype=object),
        np.asarray(times),
        np.ones(len(users), dtype=np.int64),
        categories,
        implicit=True,
    )


def _amazon_files(directory: Path) -> tuple[Path, Path | None] | None:
    files = sorted(p for p in directory.iterdir() if p.name.endswith((".json", ".json.gz")))
    metas = [p for p in files if p.name.startswith("meta")]
    reviews = [p for p in files if not p.name.startswith("meta")]
    if len(reviews) == 1:
        return reviews[0], metas[0] if metas else None
    return None


def load_dataset(spec: str | Path, click_threshold: float = 4.0) -> Interactions:
    """``'ml-100k'``, or a file / folder in any of the formats above (detected).

    A log read from a path is named by that path, as given, so that every
    later error about it (an empty split, a single label) names the file the
    user passed.
    """
    if str(spec) == "ml-100k":
        return load_recbole(ml100k_dir(), click_threshold, name="ml-100k")
    log = _load_path(Path(spec), str(spec), click_threshold)
    log.name = str(spec)
    return log


def _load_path(path: Path, spec: str, click_threshold: float) -> Interactions:
    if not path.exists():
        raise DataError(
            f"{spec}: no such file or folder (use 'synthetic', 'ml-100k' or a path to RecBole, "
            "MovieLens or Amazon files)"
        )
    if path.is_file():
        if path.suffix == ".inter":
            return load_recbole(path.parent, click_threshold, name=path.stem)
        if path.name.endswith((".json", ".json.gz")):
            meta = next(iter(sorted(path.parent.glob("meta*.json*"))), None)
            return load_amazon(path, meta)
        return load_movielens(path, click_threshold)
    if any(path.glob("*.inter")):
        return load_recbole(path, click_threshold)
    if any((path / n).exists() for n in ("u.data", "ratings.dat", "ratings.csv")):
        return load_movielens(path, click_threshold)
    amazon = _amazon_files(path)
    if amazon is not None:
        return load_amazon(*amazon)
    raise DataError(
        f"{path}: found no RecBole .inter, MovieLens u.data / ratings.dat / ratings.csv, "
        "or Amazon reviews .json file"
    )
