"""benchmarks/bench_e2e.py on a sample log: the features each library is given,
the arrays the peers train on, and the script as a user runs it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sample_logs import SCHEMA, write_parquet, write_schema

from monolith_layers.data.schema import Schema
from monolith_layers.data.stream import schema_datasets

pytest.importorskip("pyarrow")
pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_e2e.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))  # its sibling harness.py, as when run as a script
    spec = importlib.util.spec_from_file_location("bench_e2e", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the class is made
    sys.modules["bench_e2e"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_e2e"]
    sys.path.remove(str(SCRIPT.parent))


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A schema and three small Parquet logs (train, valid, test)."""
    root = tmp_path_factory.mktemp("bench_log")
    files = {
        part: write_parquet(root / f"{part}.parquet", rows=rows, seed=seed)
        for part, rows, seed in (("train", 600, 0), ("valid", 200, 1), ("test", 200, 2))
    }
    return write_schema(root / "schema.json"), files


def _splits(log):
    schema_path, files = log
    return schema_datasets(Schema.load(schema_path), files["train"], files["valid"], files["test"])


def test_the_schema_maps_to_the_peers_features(bench, log):
    encoder = _splits(log)[3]
    task = bench.sample_log_task(encoder)
    assert task.sparse == ["user_id", "device"]
    assert task.targets == ["item_id", "category"]
    assert task.side_sequences == {"tags": "device"}
    assert task.dense == ["price"]
    assert task.max_len == SCHEMA["max_len"]
    assert task.tables == encoder.table_sizes()
    notes = bench.peer_notes(task)
    assert "price" in notes["torch-rechub"] and "tags" in notes["DeepCTR-Torch dien"]


def test_a_feature_named_like_a_peer_history_is_refused(bench, tmp_path):
    features = [*SCHEMA["features"], {"name": "seq_length", "kind": "dense"}]
    path = write_parquet(tmp_path / "log.parquet", rows=50, seq_length=np.ones(50))
    streams = schema_datasets(Schema.from_dict({**SCHEMA, "features": features}), path)
    with pytest.raises(ValueError, match="seq_length"):
        bench.sample_log_task(streams[3])


def test_the_peers_arrays_hold_every_row_with_histories_and_negatives(bench, log):
    splits = _splits(log)
    task = bench.sample_log_task(splits[3])
    for stream in splits[:3]:
        data = bench.sample_log_arrays(stream, task, seed=0)
        rows = len(stream)
        assert {len(v) for v in data.values()} == {rows}
        for target in task.targets:
            history, negatives = data[f"hist_{target}"], data[f"neg_hist_{target}"]
            assert history.shape == negatives.shape == (rows, task.max_len)
            # a negative at every real step and nowhere else
            assert np.array_equal(negatives != 0, history != 0)
        np.testing.assert_array_equal(data["seq_length"], (data["hist_item_id"] != 0).sum(1))
        assert data["tags"].shape == (rows, 3)
        assert data["price"].dtype == np.float32 and np.isfinite(data["price"]).all()
        assert set(np.unique(data["label"])) <= {0, 1}
    train = bench.sample_log_arrays(splits[0], task, seed=0)
    # standardised with the training rows' statistics: missing prices sit at 0
    assert abs(train["price"].mean()) < 0.1
    assert train["price"].std() == pytest.approx(np.sqrt(0.9), abs=0.1)


def test_negatives_are_fixed_by_the_seed(bench, log):
    splits = _splits(log)
    task = bench.sample_log_task(splits[3])
    first, again = (bench.sample_log_arrays(splits[0], task, seed=3) for _ in range(2))
    other = bench.sample_log_arrays(splits[0], task, seed=4)
    np.testing.assert_array_equal(first["neg_hist_item_id"], again["neg_hist_item_id"])
    assert not np.array_equal(first["neg_hist_item_id"], other["neg_hist_item_id"])
    np.testing.assert_array_equal(first["hist_item_id"], other["hist_item_id"])


def _run(*args, log=None):
    command = [sys.executable, str(SCRIPT), "--max-epochs", "1", "--threads", "1", *args]
    if log is not None:
        schema, files = log
        command += ["--schema", str(schema), "--data", str(files["train"])]
        command += ["--valid", str(files["valid"]), "--test", str(files["test"])]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_ours_runs_end_to_end_on_a_sample_log(log):
    done = _run("--models", "din,mean", "--libraries", "monolith-layers", log=log)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| din ") for line in rows), done.stdout
    assert any(line.startswith("| mean ") for line in rows), done.stdout
    assert "samples: train 600, valid 200, test 200" in done.stdout
    lines = done.stdout.splitlines()
    ready = next(i for i, line in enumerate(lines) if "(not in any timed run)" in line)
    first_run = next(i for i, line in enumerate(lines) if line.lstrip().startswith("seed 0 "))
    assert ready < first_run, "the kernels must be ready before the first timed run"


@pytest.mark.parametrize(
    "library, module", [("DeepCTR-Torch", "deepctr_torch"), ("torch-rechub", "torch_rechub")]
)
@pytest.mark.parametrize("model_name", ["din", "dien"])
def test_a_peer_trains_on_every_feature_it_reads(bench, log, library, module, model_name):
    pytest.importorskip(module)
    import argparse

    splits = _splits(log)
    task = bench.sample_log_task(splits[3])
    data = {
        part: bench.sample_log_arrays(stream, task, seed=0)
        for part, stream in zip(("train", "valid", "test"), splits[:3], strict=True)
    }
    args = argparse.Namespace(embed_dim=4, max_epochs=1, patience=1, schema="x", threads=1)
    run = bench.RUNNERS[library](model_name, task, splits, data, args, 0)
    assert 0.0 <= run.test_auc <= 1.0 and run.epochs == 1 and run.best_epoch == 1


def test_sample_log_flags_without_a_schema_are_one_error_line():
    done = _run("--valid", "v.parquet")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--valid and --test go with --schema" in done.stderr.splitlines()[-1]


def test_a_missing_schema_file_is_one_error_line(tmp_path):
    done = _run("--schema", str(tmp_path / "nope.json"), "--data", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr


def test_an_unknown_model_is_one_error_line_before_any_data_is_read():
    done = _run("--models", "din,dinn", "--data", "/no/such/log")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "'dinn'" in done.stderr.splitlines()[-1]
