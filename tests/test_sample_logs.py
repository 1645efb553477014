"""Sample logs from a feature schema: the schema, the encoder, streaming and sharding,
bad data, the schema model, and the CLI (progress bars on, as users run it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_logs import SCHEMA, columns, write_csv, write_parquet, write_schema

from monolith_layers.cli import main
from monolith_layers.config import ConfigError
from monolith_layers.data import DataError
from monolith_layers.data.columnar import SampleFiles
from monolith_layers.data.encoding import FeatureEncoder
from monolith_layers.data.schema import FIRST_ID, UNKNOWN_ID, Schema
from monolith_layers.data.stream import batch_sizes, schema_datasets
from monolith_layers.models import ModelConfig
from monolith_layers.models.features import FeatureCTRModel, feature_spec

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _schema(**changes) -> Schema:
    return Schema.from_dict({**SCHEMA, **changes})


def _streams(path, **kwargs):
    return schema_datasets(_schema(), path, **kwargs)


def _all_rows(stream, batch_size=32, shuffle=False, epoch=0, rank=0, world=1):
    batches = list(stream.loader(batch_size, shuffle, epoch=epoch, rank=rank, world=world))
    return batches, np.concatenate([b["row"].numpy() for b in batches])


# ------------------------------------------------------------------ schema
@pytest.mark.parametrize(
    "features, says",
    [
        (
            [
                {"name": "a", "kind": "sparse"},
                {"name": "s", "kind": "sequence", "shares": "a", "hash_buckets": 3},
            ],
            "belong to the table of 'a'",
        ),
        (
            [{"name": "a", "kind": "dense"}, {"name": "s", "kind": "sequence", "shares": "a"}],
            "not a sparse",
        ),
        ([{"name": "a", "kind": "sparse"}, {"name": "a", "kind": "dense"}], "more than once"),
        ([{"name": "a", "kind": "sparse", "hash_buckets": 5, "min_count": 2}], "min_count"),
        ([{"name": "a", "kind": "dense", "role": "target"}], "sparse features"),
        ([{"name": "a"}], "kind"),
        ([{"name": "a", "kind": "wide"}], "kind must be one of"),
        (
            [
                {"name": "t", "kind": "sparse", "role": "target"},
                {"name": "h1", "kind": "sequence", "shares": "t", "max_len": 4},
                {"name": "h2", "kind": "sequence", "shares": "t", "max_len": 5},
            ],
            "max_len must agree",
        ),
    ],
)
def test_bad_schemas_name_the_feature_and_the_rule(features, says):
    with pytest.raises(ConfigError, match=says):
        Schema.from_dict({"label": "y", "features": features})


def test_schema_round_trips_through_json(tmp_path):
    schema = Schema.load(write_schema(tmp_path / "s.json"))
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert [f.name for f in schema.history] == ["hist_item_id", "hist_category"]
    assert [f.name for f in schema.side_sequences] == ["tags"]
    assert schema.history_len == 6


# ----------------------------------------------------------------- encoder
def test_vocabulary_comes_from_training_rows_only(tmp_path):
    path = write_parquet(tmp_path / "log.parquet")
    train, valid, test, encoder = _streams(path)
    raw = columns(400)
    cut = np.quantile(raw["ts"].astype(float), 0.8)
    train_items = {v for v, t in zip(raw["item_id"], raw["ts"], strict=True) if t <= cut}
    train_items |= {
        v for h, t in zip(raw["hist_item_id"], raw["ts"], strict=True) if t <= cut for v in h
    }
    assert set(encoder.vocabularies["item_id"].to_pylist()) == train_items
    # Ordered by count (then value): the most frequent value gets the first id.
    counts = encoder.vocabularies["item_id"].to_pylist()
    assert encoder.table_sizes()["item_id"] == len(counts) + FIRST_ID


def test_unknown_values_get_the_unknown_id_and_sequences_share_ids(tmp_path):
    path = write_parquet(tmp_path / "log.parquet")
    *_, encoder = _streams(path)
    batch = pa.record_batch(
        {
            **{k: pa.array(v[:2]) for k, v in columns(2, seed=3).items()},
            "item_id": pa.array(["never-seen", "item-3"]),
            "hist_item_id": pa.array([["item-3", "never-seen"], []]),
            "hist_category": pa.array([[3, 1], []]),
        }
    )
    encoded = encoder.encode(batch, "test")
    assert encoded["item_id"][0] == UNKNOWN_ID
    assert encoded["hist_item_id"][0, 0] == encoded["item_id"][1]  # one table, one id
    assert encoded["hist_item_id"][0, 1] == UNKNOWN_ID
    assert (encoded["hist_item_id"][1] == 0).all()  # an empty history is all padding


def test_min_count_sends_rare_values_to_unknown(tmp_path):
    path = write_parquet(tmp_path / "log.parquet")
    schema = _schema()
    schema.feature("user_id").min_count = 10**6
    files = SampleFiles(path, schema)
    encoder = FeatureEncoder.fit(schema, files)
    assert len(encoder.vocabularies["user_id"]) == 0
    assert encoder.table_sizes()["user_id"] == FIRST_ID


def test_hashed_ids_are_stable_and_text_based():
    hashed = FeatureEncoder._hashed(pa.array(["123", None, "x"]), 7)
    again = FeatureEncoder._hashed(pa.array([123, None, None]).cast(pa.int64()), 7)
    assert hashed[0] == again[0]  # 123 and "123" are one raw id
    assert hashed[1] == UNKNOWN_ID
    assert FIRST_ID <= hashed[0] < FIRST_ID + 7 and FIRST_ID <= hashed[2] < FIRST_ID + 7
    assert (FeatureEncoder._hashed(pa.array(["123", "x"]), 7) == hashed[[0, 2]]).all()


def test_sequences_keep_the_most_recent_entries_left_aligned(tmp_path):
    path = write_parquet(tmp_path / "log.parquet")
    *_, encoder = _streams(path)
    history = [f"item-{i}" for i in range(9)]
    batch = pa.record_batch(
        {
            **{k: pa.array(v[:1]) for k, v in columns(1).items()},
            "hist_item_id": pa.array([history]),
            "hist_category": pa.array([[0] * 9]),
        }
    )
    ids = encoder.encode(batch, "test")["hist_item_id"][0]
    want = encoder._lookup(pa.array(history[-6:]), "item_id", "test")
    np.testing.assert_array_equal(ids, want)


def test_dense_statistics_and_missing_values(tmp_path):
    path = write_parquet(tmp_path / "log.parquet")
    *_, encoder = _streams(path)
    raw = columns(400)
    train = raw["ts"] <= np.quantile(raw["ts"].astype(float), 0.8)
    price = raw["price"][train]
    mean, std = encoder.dense_stats["price"]
    assert mean == pytest.approx(np.nanmean(price), rel=1e-12)
    assert std == pytest.approx(np.nanstd(price), rel=1e-12)
    batch = pa.record_batch(
        {
            **{k: pa.array(v[:3]) for k, v in raw.items()},
            "price": pa.array([1.0, None, float("inf")]),
        }
    )
    values = encoder.encode(batch, "test")["price"]
    assert values[0] == 1.0 and np.isnan(values[1]) and np.isnan(values[2])


def test_csv_and_parquet_give_the_same_batches(tmp_path):
    parquet = _streams(write_parquet(tmp_path / "log.parquet"))
    csv = _streams(write_csv(tmp_path / "log.csv"))
    for a, b in zip(parquet[:3], csv[:3], strict=True):
        first, _ = _all_rows(a, 64)
        second, _ = _all_rows(b, 64)
        for x, y in zip(first, second, strict=True):
            for key in x:
                torch.testing.assert_close(x[key], y[key], equal_nan=True)


# ---------------------------------------------------------------- sharding
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(10, 300),
    row_group=st.integers(3, 80),
    batch_size=st.integers(2, 40),
    world=st.integers(1, 3),
    workers=st.sampled_from([0, 2]),
    shuffle=st.booleans(),
)
def test_every_row_is_read_once_per_epoch_over_all_ranks_and_workers(
    tmp_path_factory, rows, row_group, batch_size, world, workers, shuffle
):
    path = write_parquet(tmp_path_factory.mktemp("log") / "log.parquet", rows, row_group)
    train, *_ = _streams(path, workers=workers, shuffle_buffer=17)
    if len(train) < world * max(workers, 1):
        with pytest.raises(DataError, match="cannot be shared"):
            train.loader(batch_size, shuffle, world=world)
        return
    seen, steps = [], set()
    for rank in range(world):
        batches, got = _all_rows(train, batch_size, shuffle, epoch=3, rank=rank, world=world)
        assert len(batches) == len(train.loader(batch_size, shuffle, rank=rank, world=world))
        assert all(0 < len(b["row"]) <= batch_size for b in batches)
        steps.add(len(batches))
        seen.append(got)
    assert len(steps) == 1  # every rank takes the same number of steps
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(len(train)))


def test_shuffling_is_a_function_of_seed_and_epoch(tmp_path):
    train, *_ = _streams(write_parquet(tmp_path / "log.parquet"), shuffle_buffer=50)
    one = _all_rows(train, 16, True, epoch=1)[1]
    assert (one == _all_rows(train, 16, True, epoch=1)[1]).all()
    assert not (one == _all_rows(train, 16, True, epoch=2)[1]).all()
    assert not (one == np.arange(len(train))).all()


def test_batch_sizes_cover_the_rows_in_exactly_the_planned_steps():
    assert batch_sizes(8, 3, 4) == [4, 3, 1]
    assert sum(batch_sizes(100, 4, 32)) == 100
    with pytest.raises(DataError):
        batch_sizes(2, 3, 1)


def test_splits_by_column_and_at_random(tmp_path):
    raw = columns(300)
    split = np.array(["train", "valid", "test"])[np.arange(300) % 3]
    path = write_parquet(tmp_path / "log.parquet", 300, split=split)
    train, valid, test, _ = schema_datasets(_schema(time=None), path)
    assert (len(train), len(valid), len(test)) == (100, 100, 100)
    plain = write_parquet(tmp_path / "plain.parquet", 300)
    a = schema_datasets(_schema(time=None), plain, seed=4)
    b = schema_datasets(_schema(time=None), plain, seed=4)
    assert [len(s) for s in a[:3]] == [len(s) for s in b[:3]]
    assert sum(len(s) for s in a[:3]) == len(raw["ts"])
    assert 0 < len(a[1]) < 100 and 0 < len(a[2]) < 100


def test_negatives_are_real_history_steps_of_the_batch(tmp_path):
    train, *_ = _streams(write_parquet(tmp_path / "log.parquet"))
    train.with_negative_history = True
    batch = next(iter(train.loader(64, True)))
    negatives, mask = batch["negative_history"], batch["mask"]
    assert negatives.shape == (64, 2, 6)
    assert ((negatives != 0) == mask.unsqueeze(1)).all()
    pairs = {
        tuple(p)
        for p in torch.stack(
            [batch["hist_item_id"][mask], batch["hist_category"][mask]], 1
        ).tolist()
    }
    drawn = torch.stack([negatives[:, 0][mask], negatives[:, 1][mask]], 1).tolist()
    assert {tuple(p) for p in drawn} <= pairs  # item and category stay aligned


# ---------------------------------------------------------------- bad data
def test_a_missing_column_names_the_file_and_column(tmp_path):
    path = tmp_path / "log.parquet"
    data = columns(50)
    del data["price"]
    pq.write_table(pa.table(data), path)
    with pytest.raises(DataError, match=r"log.parquet: no column 'price'"):
        _streams(path)


def test_a_list_where_a_scalar_belongs_is_named(tmp_path):
    path = write_parquet(tmp_path / "log.parquet", 50, price=[[1.0]] * 50)
    with pytest.raises(DataError, match=r"column 'price' \(a dense feature\).*a list"):
        _streams(path)


def test_a_corrupt_file_is_named(tmp_path):
    good = write_parquet(tmp_path / "log.parquet", 50).read_bytes()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        _streams(bad)


def test_a_bad_label_names_file_row_group_and_column(tmp_path):
    labels = np.zeros(100, np.int64)
    labels[70] = 3
    path = write_parquet(tmp_path / "log.parquet", 100, 32, click=labels)
    with pytest.raises(DataError, match=r"log.parquet, row group 2: label column 'click' holds 3"):
        _streams(path)


def test_misaligned_histories_are_an_error(tmp_path):
    data = columns(40)
    data["hist_category"] = [h[:-1] if len(h) else h for h in data["hist_category"]]
    path = write_parquet(tmp_path / "log.parquet", 40, **{"hist_category": data["hist_category"]})
    with pytest.raises(DataError, match=r"log.parquet, row group 0: history sequences .* aligned"):
        _streams(path)  # found before training, so nothing is written


# ------------------------------------------------------------------ model
def _model(encoder_name, transform=None, path=None, tmp_path=None):
    *_, encoder = _streams(path)
    config = ModelConfig(
        encoder=encoder_name,
        transform=transform,
        embed_dim=4,
        hidden_units=[8],
        attention_units=[4],
        max_len=6,
        dmr_cmp_dim=4,
        features=feature_spec(encoder),
    )
    torch.manual_seed(0)
    return FeatureCTRModel(config)


@pytest.mark.parametrize(
    "name", ["mean", "din", "dien", "dmr", "din+senet", "dien+autoint", "mean+irazor"]
)
def test_schema_models_ignore_padding_and_read_missing_values(tmp_path, name):
    path = write_parquet(tmp_path / "log.parquet")
    encoder_name, _, transform = name.partition("+")
    model = _model(encoder_name, transform or None, path).eval()
    train, *_ = _streams(path)
    batch = next(iter(train.loader(32, False)))
    out = model(batch)
    assert out.shape == (32,) and torch.isfinite(out).all()
    # Ids at padded steps (under the batch's mask) never reach a result.
    noisy = dict(batch)
    for key in ("hist_item_id", "hist_category"):
        noise = torch.randint(2, 5, batch[key].shape)
        noisy[key] = torch.where(batch["mask"], batch[key], noise)
    torch.testing.assert_close(model(noisy), out)
    missing = dict(batch)
    missing["price"] = torch.full_like(batch["price"], float("nan"))
    changed = model(missing)
    assert torch.isfinite(changed).all() and not torch.allclose(changed, out)


def test_the_encoder_needs_a_history():
    schema = {"label": "y", "features": [{"name": "a", "kind": "sparse"}]}
    spec = {"schema": schema, "tables": {"a": 5}, "dense": {}}
    with pytest.raises(ConfigError, match="no behaviour history"):
        FeatureCTRModel(ModelConfig(encoder="din", features=spec))
    assert FeatureCTRModel(ModelConfig(encoder="mean", features=spec))(
        {"a": torch.tensor([2, 3])}
    ).shape == (2,)


# -------------------------------------------------------------------- CLI
def _train(tmp_path, *extra, model="din") -> tuple[int, object]:
    log = write_parquet(tmp_path / "log.parquet", 600)
    schema = write_schema(tmp_path / "schema.json")
    out = tmp_path / "run"
    argv = ["train", "--schema", str(schema), "--data", str(log), "--model", model]
    argv += ["--embed-dim", "4", "--epochs", "2", "--out", str(out), *extra]
    return main(argv), out


def test_cli_trains_evaluates_and_exports_a_parquet_log(tmp_path, capsys):
    code, out = _train(tmp_path, "--batch-size", "64")  # progress bars on, as users run it
    assert code == 0
    printed = capsys.readouterr()
    assert "rows train 480" in printed.out and "device: sparse, hashed into 7" in printed.out
    assert "Traceback" not in printed.err
    saved = json.loads((out / "metrics.json").read_text())["models"]["din"]
    assert main(["evaluate", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["auc"] == saved["test_auc"] and evaluated["samples"] == 60
    assert main(["evaluate", str(out), "--split", "all", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 600
    target = tmp_path / "model.pt2"
    assert main(["export", str(out), "--format", "exported-program", "--out", str(target)]) == 0
    program = torch.export.load(str(target)).module()
    inputs = [n.name for n in program.graph.nodes if n.op == "placeholder"]
    assert len(inputs) == len(SCHEMA["features"])


def test_cli_max_steps_bounds_the_run(tmp_path, capsys):
    code, out = _train(tmp_path, "--batch-size", "16", "--max-steps", "5", "--no-progress")
    assert code == 0
    history = json.loads((out / "metrics.json").read_text())["models"]["din"]["history"]
    assert len(history) == 1


def test_cli_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys):
    log = write_parquet(tmp_path / "log.parquet", 60, click=np.full(60, 2))
    schema = write_schema(tmp_path / "schema.json")
    out = tmp_path / "run"
    code = main(["train", "--schema", str(schema), "--data", str(log), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "label column 'click' holds 2" in err
    assert not out.exists()


def test_cli_separate_valid_and_test_files(tmp_path, capsys):
    files = [
        write_parquet(tmp_path / f"{n}.parquet", 200, seed=i) for i, n in enumerate(("a", "b", "c"))
    ]
    schema = write_schema(tmp_path / "schema.json")
    argv = ["train", "--schema", str(schema), "--data", str(files[0]), "--valid", str(files[1])]
    argv += [
        "--test",
        str(files[2]),
        "--epochs",
        "1",
        "--embed-dim",
        "4",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*argv, "--no-progress"]) == 0
    assert "rows train 200, valid 200, test 200" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--schema",
                str(schema),
                "--data",
                str(files[0]),
                "--valid",
                str(files[1]),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "give both --valid and --test" in capsys.readouterr().err


# -------------------------------------------------- the loaders as sample logs
def _recbole_with_sides(tmp_path):
    from test_cli import _recbole_dir

    folder = _recbole_dir(tmp_path, users=40)
    users = ["user_id:token\tage:token\tincome:float\thobbies:token_seq"]
    users += [
        f"u{u}\t{20 + u % 4}\t{'' if u % 7 == 0 else 1000 + u}\th{u % 3} h{u % 5}"
        for u in range(40)
    ]
    (folder / "toy.user").write_text("\n".join(users) + "\n")
    return folder


def test_samples_writes_splits_with_side_features_and_the_same_histories(tmp_path, capsys):
    from monolith_layers.data import DataConfig, build_datasets, load_dataset

    folder = _recbole_with_sides(tmp_path)
    out = tmp_path / "samples"
    assert main(["samples", "--data", str(folder), "--out", str(out), "--max-len", "5"]) == 0
    assert "train on it: monolith-layers train --schema" in capsys.readouterr().out
    schema = Schema.load(out / "schema.json")
    kinds = {f.name: (f.kind, f.shares) for f in schema.features}
    assert kinds["age"] == ("sparse", None) and kinds["income"] == ("dense", None)
    assert kinds["hobbies"] == ("sequence", None) and kinds["class"] == ("sequence", None)
    assert [f.name for f in schema.history] == ["hist_item_id", "hist_category"]
    bare = Schema.load(out / "schema_no_side.json")
    assert {f.name for f in bare.features} == {
        "user_id",
        "item_id",
        "category",
        "hist_item_id",
        "hist_category",
    }
    log = load_dataset(folder)
    splits = build_datasets(log, DataConfig(max_len=5))
    train = pq.read_table(out / "train.parquet").to_pydict()
    assert len(train["label"]) == len(splits[0])
    batch = splits[0].__getitems__(np.arange(len(splits[0])))
    items = np.array([None, *log.item_names], dtype=object)
    for row in (0, 7, len(splits[0]) - 1):
        want = items[batch["history"][row][batch["mask"][row]].numpy()].tolist()
        assert train["hist_item_id"][row] == want
    income = dict(zip(train["user_id"], train["income"], strict=True))
    assert income["u0"] is None and income["u1"] == 1001.0  # a missing float stays missing
    assert main(["samples", "--data", str(folder), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
