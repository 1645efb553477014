"""TorchRec: the CTR model's tables in an EmbeddingCollection, sharded table-wise
over two gloo processes, against the unsharded model (same weights, same batch)."""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("torchrec")

from distributed import spawn, tiny_model_config  # noqa: E402

from monolith_layers.data import DataConfig, SyntheticConfig, build_datasets, generate  # noqa: E402
from monolith_layers.models import CTRModel  # noqa: E402
from monolith_layers.models.sharded import (  # noqa: E402
    ShardingError,
    TorchRecCTRModel,
    load_whole_state,
    shard,
)


def _setup(encoder="dien"):
    log = generate(SyntheticConfig(num_users=60, max_events=14, seed=5))
    train = build_datasets(log, DataConfig(max_len=6))[0]
    train.with_negative_history = True
    return train.__getitems__(np.arange(16)), tiny_model_config(log, encoder)


def test_embedding_collection_model_equals_the_plain_model():
    batch, config = _setup("din")
    torch.manual_seed(0)
    plain = CTRModel(config).eval()
    torchrec_model = TorchRecCTRModel(config).eval()
    state = plain.state_dict()
    tables = {"user": "user_embedding", "item": "item_embedding", "category": "category_embedding"}
    with torch.no_grad():
        for name, weight in torchrec_model.table_weights().items():
            weight.copy_(state[f"{tables[name]}.weight"])
        for key, value in torchrec_model.state_dict().items():
            if not key.startswith("embeddings."):
                value.copy_(state[key])
    torch.testing.assert_close(torchrec_model(batch), plain(batch))


def _worker(rank, world, sharding_type, folder):
    torch.set_num_threads(1)
    batch, config = _setup()
    torch.manual_seed(0)
    reference = TorchRecCTRModel(config)
    sharded = shard(TorchRecCTRModel(config, device="meta"), sharding_type)
    # Both models have TorchRec's table names: no renaming on the way in.
    load_whole_state(sharded, reference.state_dict(), plain_names=False)
    local = {k: v.chunk(world)[rank] for k, v in batch.items()}
    out = sharded(local)  # training mode: DIEN's auxiliary loss uses the negatives
    want = reference(local)
    loss = out.sum() + sum(
        m._forward_losses[0] for m in sharded.modules() if getattr(m, "_forward_losses", None)
    )
    loss.backward()
    torch.save(
        {"out": out.detach(), "want": want.detach()},
        os.path.join(folder, f"{sharding_type}{rank}.pt"),
    )


@pytest.mark.parametrize("sharding_type", ["table_wise", "column_wise"])
def test_two_process_sharding_equals_the_unsharded_model(sharding_type, tmp_path):
    spawn(_worker, sharding_type, str(tmp_path))
    for rank in range(2):
        result = torch.load(tmp_path / f"{sharding_type}{rank}.pt")
        torch.testing.assert_close(result["out"], result["want"], rtol=1e-5, atol=1e-6)


def test_unsupported_sharding_is_a_clear_error():
    _, config = _setup()
    with pytest.raises(ShardingError, match="'row_wise' sharding needs GPUs; on CPU choose one of"):
        shard(TorchRecCTRModel(config), "row_wise")
    with pytest.raises(ShardingError, match="no process group"):
        shard(TorchRecCTRModel(config), "table_wise")


# ------------------------------------------------------------ schema models
def _feature_model_config(tmp_path, encoder="dien"):
    from sample_logs import SCHEMA, write_parquet

    from monolith_layers.data.schema import Schema
    from monolith_layers.data.stream import schema_datasets
    from monolith_layers.models import ModelConfig
    from monolith_layers.models.features import feature_spec

    log = write_parquet(tmp_path / "log.parquet", 300)
    train, *_, encoder_fitted = schema_datasets(Schema.from_dict(SCHEMA), log)
    train.with_negative_history = True
    batch = next(iter(train.loader(32, False)))
    config = ModelConfig(
        encoder=encoder, embed_dim=4, hidden_units=[8], features=feature_spec(encoder_fitted)
    )
    return batch, config


@pytest.mark.parametrize("encoder", ["din", "dien"])
def test_feature_model_in_an_embedding_collection_equals_the_plain_one(tmp_path, encoder):
    from monolith_layers.models.features import FeatureCTRModel
    from monolith_layers.models.sharded import TorchRecFeatureModel

    batch, config = _feature_model_config(tmp_path, encoder)
    torch.manual_seed(0)
    plain = FeatureCTRModel(config)
    collection = TorchRecFeatureModel(config)
    state = plain.state_dict()
    with torch.no_grad():
        for key, value in collection.state_dict().items():
            value.copy_(state[TorchRecFeatureModel.plain_key(key)])
    # Training mode: DIEN's auxiliary loss reads the negatives through the collection too.
    torch.testing.assert_close(collection(batch), plain(batch))
    aux = [m._forward_losses for m in collection.modules() if getattr(m, "_forward_losses", None)]
    want = [m._forward_losses for m in plain.modules() if getattr(m, "_forward_losses", None)]
    assert len(aux) == len(want) == (1 if encoder == "dien" else 0)
    for got, expected in zip(aux, want, strict=True):
        torch.testing.assert_close(got[0], expected[0])


@pytest.mark.parametrize("sharding_type", ["table_wise", "column_wise"])
def test_cli_shards_a_schema_model_and_one_process_evaluates_it_the_same(
    tmp_path, sharding_type, capsys
):
    import json
    import subprocess
    import sys

    from distributed import free_port
    from sample_logs import write_parquet, write_schema

    from monolith_layers.cli import main

    log = write_parquet(tmp_path / "log.parquet", 600)
    schema = write_schema(tmp_path / "schema.json")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--master_port", str(free_port()), "-m", "monolith_layers", "train"]
    command += ["--schema", str(schema), "--data", str(log), "--model", "dien", "--embed-dim", "4"]
    command += ["--epochs", "2", "--batch-size", "64", "--shard", sharding_type, "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stdout.count("data parallel over 2 processes") == 1
    saved = json.loads((out / "metrics.json").read_text())["models"]["dien"]
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    single = json.loads(capsys.readouterr().out)
    # The tables gathered into model.safetensors, run by one process: the same test scores.
    assert single["auc"] == saved["test_auc"]
    assert single["logloss"] == pytest.approx(saved["test_logloss"], rel=1e-6)
