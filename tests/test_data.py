"""Loaders on small files in the exact formats, samples, splits and negatives."""

import gzip
import json

import numpy as np
import pytest
import torch

from monolith_layers.data import (
    DataConfig,
    DataError,
    SyntheticConfig,
    build_datasets,
    from_columns,
    generate,
    load_dataset,
)

# user, item, rating, timestamp; user 1 has a timestamp tie (items 20 and 10 at t=3)
RATINGS = [
    (1, 10, 5, 3),
    (1, 20, 2, 3),
    (1, 30, 4, 1),
    (1, 40, 5, 7),
    (1, 50, 4, 9),
    (2, 10, 1, 2),
    (2, 30, 5, 4),
    (2, 40, 4, 6),
    (2, 50, 3, 8),
    (3, 20, 5, 5),
]
GENRES = {10: "Comedy", 20: "Drama", 30: "Comedy", 40: "Action", 50: "Drama"}


def _check_log(log, name_hint=""):
    assert len(log) == len(RATINGS) and log.num_users == 3 and log.num_items == 5
    assert log.num_categories == 3
    assert sorted(log.category_names) == ["Action", "Comedy", "Drama"]
    assert log.label.sum() == sum(r[2] >= 4 for r in RATINGS)
    # the same category for every item as the genre table says
    for item, genre in GENRES.items():
        code = log.item_names.index(str(item)) + 1
        assert log.category_names[log.item_category[code] - 1] == genre, name_hint


def test_recbole_atomic_files(tmp_path):
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS]
    (tmp_path / "toy.inter").write_text("\n".join(inter) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\tclass:token_seq"]
    items += [f"{i}\tMovie {i}\t{g} Other" for i, g in GENRES.items()]
    (tmp_path / "toy.item").write_text("\n".join(items) + "\n")
    _check_log(load_dataset(tmp_path), "recbole")
    _check_log(load_dataset(tmp_path / "toy.inter"), "recbole file")
    assert load_dataset(tmp_path, click_threshold=5).label.sum() == 4


def test_movielens_u_data(tmp_path):
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    names = ["unknown", "Action", "Comedy", "Drama"]
    (tmp_path / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(names)))
    rows = []
    for item, genre in GENRES.items():
        flags = ["1" if g == genre else "0" for g in names]
        rows.append(
            "|".join([str(item), f"Movie {item} (1995)", "01-Jan-1995", "", "http://x"] + flags)
        )
    (tmp_path / "u.item").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    _check_log(load_dataset(tmp_path), "u.data")


def test_movielens_ratings_dat_and_csv(tmp_path):
    dat = tmp_path / "ml-1m"
    dat.mkdir()
    (dat / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS))
    (dat / "movies.dat").write_text(
        "".join(f"{i}::Movie {i} (1995)::{g}|Other\n" for i, g in GENRES.items())
    )
    _check_log(load_dataset(dat), "ratings.dat")
    csv = tmp_path / "ml-latest"
    csv.mkdir()
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r}.0,{t}" for u, i, r, t in RATINGS]
    (csv / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [
        f'{i},"Movie {i}, The (1995)",{g}|Other' for i, g in GENRES.items()
    ]
    (csv / "movies.csv").write_text("\n".join(movies) + "\n")
    _check_log(load_dataset(csv / "ratings.csv"), "ratings.csv")


def test_amazon_reviews_with_metadata(tmp_path):
    reviews = [
        {"reviewerID": f"U{u}", "asin": f"B{i:03d}", "overall": float(r), "unixReviewTime": t}
        for u, i, r, t in RATINGS
    ]
    with gzip.open(tmp_path / "reviews_Toys_5.json.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in reviews) + "\n")
    # The 2014 metadata is Python literals, not JSON.
    meta = [repr({"asin": f"B{i:03d}", "categories": [["Toys", g]]}) for i, g in GENRES.items()]
    (tmp_path / "meta_Toys.json").write_text("\n".join(meta) + "\n")
    log = load_dataset(tmp_path)
    assert log.implicit and log.label.min() == 1 and len(log) == len(RATINGS)
    assert sorted(log.category_names) == ["Action", "Comedy", "Drama"]
    train, valid, test = build_datasets(log, DataConfig(max_len=4, negatives=2))
    # every event with two sampled negatives, never the positive item itself
    assert len(test) == 3 * 2 and test.label.sum() == 2
    for part in (train, valid, test):
        positives = part.label == 1
        negatives = ~positives
        assert (part.item[negatives] != np.repeat(part.item[positives], 2)).all()


def test_histories_are_the_clicks_before_each_event_in_time_order(tmp_path):
    user, item, rating, ts = map(np.array, zip(*RATINGS, strict=True))
    log = from_columns("toy", user, item, ts, (rating >= 4).astype(int))
    train, valid, test = build_datasets(log, DataConfig(max_len=3))
    code = {int(name): k + 1 for k, name in enumerate(log.item_names)}
    # user 1 in time order: 30(t1,click) then the tie at t3 broken by item id:
    # 10 (click) before 20 (no click); 40(t7,click) valid; 50(t9,click) test.
    batch = test.__getitems__([0])
    assert batch["item"].item() == code[50]
    assert batch["history"][0].tolist() == [code[30], code[10], code[40]]
    assert batch["mask"][0].tolist() == [True, True, True]
    full = train.__getitems__(np.arange(len(train)))
    rows = full["user"] == 0
    assert full["item"][rows].tolist() == [code[30], code[10], code[20]]
    assert full["history"][rows].tolist() == [[0, 0, 0], [code[30], 0, 0], [code[30], code[10], 0]]
    assert full["mask"][rows].sum(1).tolist() == [0, 1, 2]
    # user 3 has a single event: train only
    assert (full["user"] == 2).sum() == 1 and (test.user != 2).all()
    # max_len caps the history at the most recent clicks
    capped = build_datasets(log, DataConfig(max_len=1))[2].__getitems__([0])
    assert capped["history"][0].tolist() == [code[40]]


def test_time_split_and_negative_history():
    log = generate(SyntheticConfig(num_users=200, max_events=20, seed=3))
    train, valid, test = build_datasets(log, DataConfig(split="time", max_len=10))
    assert len(train) + len(valid) + len(test) == len(log)
    assert 0.05 < len(test) / len(log) < 0.15
    train.with_negative_history = True
    batch = train.__getitems__(np.arange(64))
    assert batch["negative_history"].shape == batch["history"].shape
    assert (batch["negative_history"][~batch["mask"]] == 0).all()
    assert (batch["negative_history"][batch["mask"]] > 0).all()
    loader = train.loader(32, shuffle=True, seed=1)
    first = next(iter(loader))
    assert first["history"].shape == (32, 10) and first["label"].dtype == torch.float32


def test_synthetic_is_reproducible_and_seeded():
    a = generate(SyntheticConfig(num_users=100, seed=5))
    b = generate(SyntheticConfig(num_users=100, seed=5))
    c = generate(SyntheticConfig(num_users=100, seed=6))
    assert np.array_equal(a.item, b.item) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.item[:100], c.item[:100])
    lengths = np.bincount(a.user)
    assert lengths.min() >= 10 and lengths.max() <= 60 and len(set(lengths.tolist())) > 10


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n",
            r"missing columns \['rating'\]",
        ),
        (
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\tfive\t3\n",
            "non-numeric value 'five'",
        ),
        ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n", "no interactions"),
    ],
)
def test_malformed_files_raise_data_error(tmp_path, content, message):
    (tmp_path / "bad.inter").write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path)


def test_bad_paths_and_configs():
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset("/nonexistent/data")
    with pytest.raises(DataError, match="max_len must be a positive int"):
        DataConfig(max_len=0)
    with pytest.raises(DataError, match="split must be one of"):
        DataConfig(split="random")
    log = from_columns(
        "all-clicks", np.arange(9) // 3, np.arange(9) % 4, np.arange(9), np.ones(9, int)
    )
    with pytest.raises(DataError, match=r"all-clicks \(test split\): every label is 1"):
        build_datasets(log)[2].check_evaluable()


def test_ml100k_by_name_reads_the_recbole_distribution():
    pytest.importorskip("pandas")
    try:
        from monolith_layers.data import ml100k_dir

        ml100k_dir()
    except DataError as err:
        assert "pip install --no-deps recbole" in str(err)
        pytest.skip("recbole is not installed")
    log = load_dataset("ml-100k")
    assert len(log) == 100_000 and log.num_users == 943 and log.num_items == 1682
    assert log.num_categories >= 18


def test_the_ml1m_shaped_generator_writes_recbole_files_the_loader_reads(tmp_path):
    """benchmarks/make_recbole_log.py: the sizes asked, one rating per (user, item)
    pair, at least --least ratings per user, and the same files for the same seed."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "make_recbole_log.py"
    sizes = ["--users", "40", "--items", "90", "--genres", "5", "--ratings", "2500"]
    sizes += ["--least", "20", "--most", "90"]
    for out in ("a", "b"):
        subprocess.run(
            [sys.executable, str(script), "--out", str(tmp_path / out), *sizes],
            check=True,
            capture_output=True,
        )
    inter = (tmp_path / "a" / "ml-1m-shaped.inter").read_text()
    assert inter == (tmp_path / "b" / "ml-1m-shaped.inter").read_text()
    rows = np.array([line.split("\t") for line in inter.splitlines()[1:]], dtype=np.int64)
    users, items, stars = rows[:, 0], rows[:, 1], rows[:, 2]
    assert len(rows) == 2500 and len(np.unique(users)) == 40
    assert np.bincount(users).max() <= 90 and np.bincount(users)[1:].min() >= 20
    assert len(np.unique(users * 1000 + items)) == len(rows)
    assert set(stars) == {1, 2, 3, 4, 5}
    log = load_dataset(tmp_path / "a")
    assert len(log) == 2500 and log.num_users == 40 and log.num_items == len(np.unique(items))
    assert log.label.mean() == pytest.approx((stars >= 4).mean())
    assert 1 < log.num_categories <= 5
