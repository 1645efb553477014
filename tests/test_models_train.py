"""CTRModel on every encoder / transform, the trainer, checkpoints and resume."""

import json

import numpy as np
import pytest
import torch

from monolith_layers import total_layer_loss
from monolith_layers.data import DataConfig, SyntheticConfig, build_datasets, generate
from monolith_layers.models import ConfigError, CTRModel, ModelConfig
from monolith_layers.train import (
    CheckpointLoadError,
    TrainConfig,
    Trainer,
    load_model,
    save_model,
)

pytest.importorskip("sklearn")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def small():
    log = generate(SyntheticConfig(num_users=300, max_events=20, seed=1))
    return log, build_datasets(log, DataConfig(max_len=8))


def _config(log, name="din", **values):
    return ModelConfig.from_name(
        name,
        num_users=log.num_users,
        num_items=log.num_items,
        num_categories=log.num_categories,
        max_len=8,
        embed_dim=4,
        hidden_units=[8],
        attention_units=[8],
        dmr_cmp_dim=4,
        **values,
    )


@pytest.mark.parametrize(
    "name", ["mean", "din", "dien", "dmr", "din+senet", "din+autoint", "dien+irazor"]
)
def test_every_model_runs_forward_and_backward(small, name):
    log, (train, _, _) = small
    model = CTRModel(_config(log, name))
    train.with_negative_history = model.needs_negative_history
    batch = train.__getitems__(np.arange(16))
    logits = model(batch)
    assert logits.shape == (16,) and torch.isfinite(logits).all()
    losses = total_layer_loss(model)
    if name.startswith("dien") or name.endswith("irazor"):
        assert losses.item() > 0  # DIEN's auxiliary loss / iRazor's feature-weight loss
    (
        torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"]) + losses
    ).backward()
    assert model.item_embedding.weight.grad is not None
    assert model.item_embedding.weight.grad[0].abs().sum() == 0  # padding_idx stays put


def test_padding_history_slots_do_not_change_predictions(small):
    log, (_, _, test) = small
    model = CTRModel(_config(log, "dien")).eval()
    batch = test.__getitems__(np.arange(8))
    base = model(batch)
    poked = dict(batch)
    poked["history"] = torch.where(
        batch["mask"], batch["history"], torch.ones_like(batch["history"])
    )
    torch.testing.assert_close(model(poked), base)


def test_config_round_trip_and_errors(small):
    log, _ = small
    config = _config(log, "dmr+senet")
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.name == "dmr+senet"
    with pytest.raises(
        ConfigError, match=r"encoder must be one of \['mean', 'din', 'dien', 'dmr'\]"
    ):
        ModelConfig(encoder="lstm")
    with pytest.raises(ConfigError, match=r"unknown keys \['hidden'\]"):
        ModelConfig.from_dict({"hidden": [3]})
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match="head_batch_norm must be true or false, got 'yes'"):
        ModelConfig(head_batch_norm="yes")


@pytest.mark.parametrize(("weight_norm", "batch_norm"), [(True, False), (False, True)])
def test_the_head_options_build_the_head_asked_for(small, weight_norm, batch_norm):
    """head_weight_norm / head_batch_norm reach the head's MLP (and only it), and a
    batch-normalised head saves and loads its running statistics."""
    from monolith_layers.batch_norm import BatchNorm

    log, (train, _, _) = small
    config = _config(log, "din", head_weight_norm=weight_norm, head_batch_norm=batch_norm)
    model = CTRModel(config)
    norms = [m for m in model.head.modules() if isinstance(m, BatchNorm)]
    assert bool(norms) == batch_norm
    kernel_norms = [n for n, _ in model.head.named_parameters() if n.endswith("kernel_norm")]
    assert bool(kernel_norms) == weight_norm
    batch = train.__getitems__(np.arange(32))
    model.train()(batch).sum().backward()
    again = CTRModel(ModelConfig.from_dict(config.to_dict()))
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval()(batch), model.eval()(batch))


def test_training_learns_and_checkpoints_round_trip(tmp_path):
    log = generate(SyntheticConfig(num_users=2000, max_events=30, seed=2))
    train, valid, test = build_datasets(log, DataConfig(max_len=8))
    torch.manual_seed(0)
    model = CTRModel(_config(log, "din"))
    config = TrainConfig(epochs=3, batch_size=128, lr=5e-3, progress=False)
    trainer = Trainer(model, config, tmp_path)
    result = trainer.fit(train, valid)
    assert len(result.history) >= 2 and result.best_epoch >= 1
    assert result.history[-1].train_loss < result.history[0].train_loss
    # 2000 test samples: chance is 0.5 +- 0.013; six standard errors above it.
    assert trainer.evaluate(test)["auc"] > 0.58
    # One call rebuilds the best model from the folder or the weights file.
    for path in (tmp_path, tmp_path / "model.safetensors"):
        loaded = load_model(path).eval()
        batch = test.__getitems__(np.arange(32))
        torch.testing.assert_close(loaded(batch), model.eval()(batch))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["encoder"] == "din" and saved["train"]["epochs"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file left


@pytest.mark.parametrize(
    "name, precision",
    [("mean", "fp32"), ("dien", "fp32"), ("dien", "fp16")],  # DIEN samples history negatives
)
def test_resume_continues_where_a_run_stopped(small, tmp_path, name, precision):
    """Stopped after epoch 2 and resumed, a run ends bit for bit where an
    uninterrupted one does: weights, optimiser, loss scale, shuffles and negatives."""
    log, (train, valid, _) = small
    config = TrainConfig(
        epochs=3, batch_size=64, lr=1e-2, patience=5, progress=False, precision=precision
    )
    torch.manual_seed(0)
    full_model = CTRModel(_config(log, name))
    full = Trainer(full_model, config, tmp_path / "full").fit(train, valid)
    torch.manual_seed(0)
    first = TrainConfig(**{**config.to_dict(), "epochs": 2})
    Trainer(CTRModel(_config(log, name)), first, tmp_path / "split").fit(train, valid)
    resumed_model = CTRModel(_config(log, name))
    resumed = Trainer(resumed_model, config, tmp_path / "split").fit(train, valid, resume=True)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history, strict=True):
        assert (a.train_loss, a.valid_auc) == (b.train_loss, b.valid_auc)
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    other = "din" if name != "din" else "mean"
    with pytest.raises(CheckpointLoadError, match="another model config"):
        Trainer(CTRModel(_config(log, other)), config, tmp_path / "split").fit(
            train, valid, resume=True
        )


def test_checkpoint_of_another_config_is_refused(small, tmp_path):
    log, _ = small
    save_model(CTRModel(_config(log, "din")), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["embed_dim"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointLoadError, match="belong to another model config"):
        load_model(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointLoadError, match="config.json: missing"):
        load_model(tmp_path)
    with pytest.raises(CheckpointLoadError, match="no saved model"):
        load_model(tmp_path / "nothing")


def test_early_stopping(small):
    log, (train, valid, _) = small
    trainer = Trainer(
        CTRModel(_config(log, "mean")),
        TrainConfig(epochs=30, batch_size=64, lr=0.5, patience=1, progress=False),
    )
    result = trainer.fit(train, valid)
    assert result.stopped_early and len(result.history) < 30
    assert result.history[result.best_epoch - 1].valid_auc == result.best_auc


def test_auc_interval_matches_a_bootstrap():
    """The Hanley-McNeil 95 % half-width is what resampling the test set shows."""
    from sklearn.metrics import roc_auc_score

    from monolith_layers.train.report import auc_interval

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 3000)
    scores = labels * 0.8 + rng.normal(size=3000)  # an AUC near 0.7
    auc = roc_auc_score(labels, scores)
    half = auc_interval(auc, int(labels.sum()), int((1 - labels).sum()))
    rows = rng.integers(0, 3000, size=(400, 3000))
    resampled = [roc_auc_score(labels[r], scores[r]) for r in rows]
    bootstrap_half = 1.96 * np.std(resampled)
    assert 0.6 < auc < 0.8
    assert half == pytest.approx(bootstrap_half, rel=0.15)
    # A perfect ranking has no spread; the interval shrinks as 1 / sqrt(n).
    assert auc_interval(1.0, 100, 100) == 0.0
    assert auc_interval(0.7, 400, 400) == pytest.approx(auc_interval(0.7, 100, 100) / 2, rel=0.02)


def _fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_device_resolution(monkeypatch):
    from monolith_layers.train import resolve_device
    from monolith_layers.train.trainer import backend_for

    _fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=rf"device '{spec}': .* sees no CUDA device"):
            resolve_device(spec)
    with pytest.raises(ConfigError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match="TrainConfig: device must be"):
        TrainConfig(device="cuda:x")
    # Two GPUs: auto and cuda follow LOCAL_RANK (one process per GPU under torchrun).
    _fake_gpus(monkeypatch, 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="cuda:2 asked for, but there are 2 GPUs"):
        resolve_device("cuda:2")
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


def test_trainer_and_load_model_on_an_explicit_cpu(small, tmp_path, monkeypatch):
    _fake_gpus(monkeypatch, 0)
    log, (train, valid, test) = small
    config = TrainConfig(epochs=1, batch_size=64, progress=False, device="cpu")
    trainer = Trainer(CTRModel(_config(log, "dien")), config, tmp_path / "run")
    trainer.fit(train, valid)
    assert trainer.device == torch.device("cpu")
    model = load_model(tmp_path / "run", map_location="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    cpu_again = Trainer(model, TrainConfig(progress=False, device="auto")).evaluate(test)
    assert cpu_again == trainer.evaluate(test)
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        load_model(tmp_path / "run", map_location="cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_like_fp32(small, precision):
    """The forward runs in bf16 / fp16 under autocast (weights stay float32), and
    the training losses follow fp32's to rounding."""
    log, (train, valid, _) = small

    def losses(precision):
        torch.manual_seed(0)
        model = CTRModel(_config(log, "dien"))
        seen = set()
        model.head.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
        config = TrainConfig(epochs=3, batch_size=64, lr=1e-2, progress=False, precision=precision)
        result = Trainer(model, config).fit(train, valid)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        return [r.train_loss for r in result.history], seen

    reference, reference_dtypes = losses("fp32")
    mixed, mixed_dtypes = losses(precision)
    assert reference_dtypes == {torch.float32}
    assert mixed_dtypes == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert mixed[-1] < mixed[0]
    assert mixed == pytest.approx(reference, rel=0.02)


def test_under_autocast_the_operators_compute_in_float32():
    """float32 inputs: the operator runs, autocast off inside, with the float32
    results (bf16 scores, as an autocast matmul gives, are promoted first);
    bf16 inputs: the reference, saying why."""
    import monolith_layers as ml

    torch.manual_seed(0)
    cell = ml.AGRUCell(3, input_dim=2, att_type="AUGRU")
    x, scores = torch.randn(2, 4, 2), torch.rand(2, 4).bfloat16()
    want = ml.dynamic_rnn_with_attention(cell, x, scores.float())
    with ml.which_paths() as ran, torch.autocast("cpu", dtype=torch.bfloat16):
        got = ml.dynamic_rnn_with_attention(cell, x, scores)
        ml.dynamic_rnn_with_attention(cell, x.bfloat16(), scores)
    assert ran[0] == ("agru", "kernel")
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    reason = "reference: autocast gave bfloat16, float32 inputs (the kernels take one of float32 / float64)"
    assert ran[1] == ("agru", reason)
    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainConfig(precision="fp8")


def test_the_default_din_model_runs_the_din_kernel():
    # PReLU is the CTR model's tower activation: the kernel covers it, so the
    # CLI builds the kernels for it and its forward runs the operator.
    import monolith_layers as ml
    from monolith_layers.export import INPUT_NAMES, example_inputs

    config = ModelConfig.from_name("din", num_users=9, num_items=9, num_categories=3, max_len=5)
    assert config.attention_activation == "prelu" and config.uses_native_kernels
    model = CTRModel(config)
    batch = dict(zip(INPUT_NAMES, example_inputs(model, 4, 5), strict=True))
    with ml.which_paths() as ran:
        model(batch)
    assert ("din_attention", "kernel") in ran
