"""Every layer, the Triton kernels, the trainer, DDP and export on a GPU (skipped
without one). Run where a GPU is lent: ``pytest tests/test_cuda.py``."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

import monolith_layers as ml
from monolith_layers import (
    DIEN,
    DIN,
    DMR_U2I,
    MLP,
    AGRUCell,
    AutoInt,
    KerasGRUCell,
    SeNet,
    dynamic_rnn_with_attention,
    gru_sequence,
    iRazor,
    static_rnn_with_attention,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TRITON = "kernel (triton)"


def _small_model(name, log, max_len):
    """The config of a small CTR model ``name`` (E = 4) for ``log``."""
    from monolith_layers.models import ModelConfig

    return ModelConfig.from_name(
        name,
        num_users=log.num_users,
        num_items=log.num_items,
        num_categories=log.num_categories,
        max_len=max_len,
        embed_dim=4,
    )


@pytest.mark.parametrize("att_type", ["AGRU", "AUGRU"])
def test_fused_agru_on_cuda_matches_reference(att_type):
    torch.manual_seed(0)
    cell = AGRUCell(8, att_type=att_type, input_dim=5).double().cuda()
    x = torch.randn(4, 7, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    att = torch.rand(4, 7, dtype=torch.float64, device="cuda")
    mask = torch.rand(4, 7, device="cuda") > 0.3
    ref = static_rnn_with_attention(cell, x, att, mask=mask)
    out = dynamic_rnn_with_attention(cell, x, att, mask=mask)
    for a, b in zip(ref, out, strict=True):
        torch.testing.assert_close(a, b)
    g_ref = torch.autograd.grad(sum(t.sum() for t in ref), [x, *cell.parameters()])
    g_out = torch.autograd.grad(sum(t.sum() for t in out), [x, *cell.parameters()])
    for a, b in zip(g_ref, g_out, strict=True):
        torch.testing.assert_close(a, b)


def test_fused_gru_on_cuda_matches_reference():
    torch.manual_seed(0)
    cell = KerasGRUCell(8, input_dim=5).double().cuda()
    x = torch.randn(4, 7, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    mask = torch.rand(4, 7, device="cuda") > 0.3
    ref = gru_sequence(cell, x, mask=mask, fast=False)
    out = gru_sequence(cell, x, mask=mask)
    for a, b in zip(ref, out, strict=True):
        torch.testing.assert_close(a, b)


def test_sequence_layers_run_on_cuda_in_half_precision():
    q, k = torch.randn(3, 6, device="cuda"), torch.randn(3, 9, 6, device="cuda")
    mask = torch.rand(3, 9, device="cuda") > 0.5
    for layer in (DIN([8, 1], embed_dim=6), DIEN(6, att_type="AUGRU", input_dim=6)):
        layer = layer.cuda().half()
        out = layer(q.half(), k.half(), mask)
        assert out.is_cuda and torch.isfinite(out).all()


def test_trainer_on_cuda_matches_its_checkpoint_on_the_cpu(tmp_path):
    """Training on the GPU (pinned batches, non-blocking copies), then the saved
    model evaluated on the CPU and back on the GPU."""
    from monolith_layers.data import DataConfig, SyntheticConfig, build_datasets, generate
    from monolith_layers.models import CTRModel
    from monolith_layers.train import TrainConfig, Trainer, load_model

    log = generate(SyntheticConfig(num_users=200, max_events=12, seed=3))
    train, valid, test = build_datasets(log, DataConfig(max_len=8))
    config = _small_model("dien+senet", log, max_len=8)
    settings = TrainConfig(epochs=2, batch_size=64, progress=False, device="cuda")
    trainer = Trainer(CTRModel(config), settings, tmp_path / "run")
    trainer.fit(train, valid)
    assert trainer.device.type == "cuda"
    on_gpu = trainer.evaluate(test)
    cpu_model = load_model(tmp_path / "run", map_location="cpu")
    on_cpu = Trainer(cpu_model, TrainConfig(progress=False, device="cpu")).evaluate(test)
    assert on_cpu["auc"] == pytest.approx(on_gpu["auc"], abs=1e-4)
    gpu_model = load_model(tmp_path / "run", map_location="cuda")
    assert next(gpu_model.parameters()).is_cuda


# ------------------------------------------------- every layer, CPU == CUDA
LAYERS = {
    "din_prelu": (lambda: DIN([8, 4, 1], activation="prelu", embed_dim=6), "queries_keys", 6),
    "din_elementwise": (lambda: DIN([8, 1], mode="elementwise", embed_dim=6), "queries_keys", 6),
    "dien_augru": (lambda: DIEN(6, att_type="AUGRU", input_dim=6), "queries_keys", 6),
    "dien_agru": (lambda: DIEN(6, input_dim=6), "queries_keys", 6),
    "dmr": (lambda: DMR_U2I(4, seq_len=9, user_dim=6, item_dim=3), "dmr", 6),
    "autoint": (lambda: AutoInt(2), "fields", 5),
    "senet": (lambda: SeNet(4, 2), "fields", 5),
    "irazor": (lambda: iRazor([0, 2, 5], num_feature=4), "fields", 5),
    "mlp": (lambda: MLP([8, 1], input_dim=5), "flat", 5),
}


def _layer_inputs(kind: str, width: int, generator):
    """float64 CPU inputs for one layer, and its call."""
    f64 = dict(generator=generator, dtype=torch.float64)
    mask = torch.rand(5, 9, generator=generator) > 0.3
    mask[1] = False  # a row with no history
    if kind == "queries_keys":
        return [torch.randn(5, width, **f64), torch.randn(5, 9, width, **f64)], [mask]
    if kind == "dmr":
        return [torch.randn(5, 3, **f64), torch.randn(5, 9, width, **f64)], [mask]
    if kind == "fields":
        return [torch.randn(5, 4, width, **f64)], []
    return [torch.randn(5, width, **f64)], []


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_on_cuda_equals_the_cpu(name):
    """Outputs and every gradient, float64, CUDA (the Triton kernels where a layer
    has them) against the CPU (the C++ kernels)."""
    make, kind, width = LAYERS[name]
    torch.manual_seed(0)
    cpu_layer = make().double()
    gpu_layer = copy.deepcopy(cpu_layer).cuda()
    tensors, masks = _layer_inputs(kind, width, torch.Generator().manual_seed(1))
    results = []
    for layer, device in ((cpu_layer, "cpu"), (gpu_layer, "cuda")):
        inputs = [t.to(device).requires_grad_() for t in tensors]
        with ml.which_paths() as ran:
            out = layer(*inputs, *(m.to(device) for m in masks))
        grads = torch.autograd.grad((out * out).sum(), [*inputs, *layer.parameters()])
        results.append([out, *grads])
        if device == "cuda" and name.startswith(("din", "dien")):
            assert {path for _, path in ran} == {TRITON}, ran
    for want, got in zip(*results, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("units", [4, 16, 40])
def test_triton_recurrences_on_cuda_equal_the_cpp_kernels(dtype, units):
    """Block sizes around tl.dot's 16, ragged lengths, float32 without TF32."""
    torch.manual_seed(units)
    cell = AGRUCell(units, att_type="AUGRU", input_dim=7, dtype=dtype)
    gru = KerasGRUCell(units, input_dim=7, dtype=dtype)
    x = torch.randn(37, 12, 7, dtype=dtype)
    att = torch.rand(37, 12, dtype=dtype)
    lengths = torch.randint(0, 13, (37,))
    results = []
    for device in ("cpu", "cuda"):
        agru_, gru_ = copy.deepcopy(cell).to(device), copy.deepcopy(gru).to(device)
        xs = x.to(device).requires_grad_()
        out, final = dynamic_rnn_with_attention(
            agru_, xs, att.to(device), lengths=lengths.to(device)
        )
        seq, last = gru_sequence(gru_, xs, lengths=lengths.to(device))
        loss = out.sum() + final.square().sum() + seq.sum() + last.square().sum()
        grads = torch.autograd.grad(loss, [xs, *agru_.parameters(), *gru_.parameters()])
        results.append([out, final, seq, last, *grads])
    tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else {}
    for want, got in zip(*results, strict=True):
        torch.testing.assert_close(got.cpu(), want, **tolerance)


def test_mixed_precision_training_on_cuda(tmp_path):
    from monolith_layers.data import DataConfig, SyntheticConfig, build_datasets, generate
    from monolith_layers.models import CTRModel
    from monolith_layers.train import TrainConfig, Trainer

    log = generate(SyntheticConfig(num_users=200, max_events=12, seed=3))
    train, valid, _ = build_datasets(log, DataConfig(max_len=8))
    config = _small_model("din", log, max_len=8)
    for precision in ("bf16", "fp16"):
        settings = TrainConfig(
            epochs=1, batch_size=64, progress=False, device="cuda", precision=precision
        )
        history = Trainer(CTRModel(config), settings, tmp_path / precision).fit(train, valid)
        assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in history)


# ------------------------------------------------------- DDP, export, the CLI
def _cli(*args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_ddp_on_one_gpu_with_nccl(tmp_path):
    from test_cli import _recbole_dir
    from test_train_ddp import free_port

    data, out = _recbole_dir(tmp_path, users=61), tmp_path / "run"
    done = _cli(
        "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_port", str(free_port()),
        "-m", "monolith_layers", "train", "--data", str(data), "--model", "dien", "--max-len",
        "6", "--embed-dim", "4", "--epochs", "1", "--device", "cuda", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["world_size"] == 1


@pytest.mark.parametrize("fmt", ["exported-program", "torchscript"])
def test_export_on_cuda(tmp_path, fmt):
    """Traced and checked on the GPU: the exported program keeps the operators
    (their CUDA kernels are the Triton ones), TorchScript the reference ops."""
    from monolith_layers.data import SyntheticConfig, generate
    from monolith_layers.export import example_inputs, export_model
    from monolith_layers.models import CTRModel

    log = generate(SyntheticConfig(num_users=50, max_events=8, seed=1))
    config = _small_model("dien", log, max_len=6)
    model = CTRModel(config).cuda().eval()
    path = export_model(model, fmt, tmp_path / f"model.{fmt}")
    inputs = [t.cuda() for t in example_inputs(model, 16, 6, seed=3)]
    if fmt == "exported-program":
        program = torch.export.load(str(path))
        assert "monolith_layers.agru" in str(program.graph)
        got = program.module()(*inputs)
    else:
        got = torch.jit.load(str(path))(*inputs)
    from monolith_layers.export import ServingModule

    with torch.no_grad():
        want = ServingModule(model)(*inputs)
    assert got.is_cuda
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
