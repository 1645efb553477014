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
