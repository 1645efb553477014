"""The fused recurrences and the sequence layers on a GPU (skipped without one)."""

import pytest
import torch

from monolith_layers import (
    DIEN,
    DIN,
    AGRUCell,
    KerasGRUCell,
    dynamic_rnn_with_attention,
    gru_sequence,
    static_rnn_with_attention,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
    from monolith_layers.models import CTRModel, ModelConfig
    from monolith_layers.train import TrainConfig, Trainer, load_model

    log = generate(SyntheticConfig(num_users=200, max_events=12, seed=3))
    train, valid, test = build_datasets(log, DataConfig(max_len=8))
    config = ModelConfig.from_name(
        "dien+senet",
        num_users=log.num_users,
        num_items=log.num_items,
        num_categories=log.num_categories,
        max_len=8,
        embed_dim=4,
    )
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
