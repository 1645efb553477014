"""DistributedDataParallel over two CPU processes (gloo on loopback)."""

import pytest
import torch
import torch.distributed as dist
from distributed import spawn

from monolith_layers import DIEN, DIN, MLP


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.din = DIN([8, 1], activation="relu", embed_dim=4)
        self.dien = DIEN(4, att_type="AUGRU", input_dim=4)
        self.head = MLP([6, 1], input_dim=8)

    def forward(self, q, k, mask):
        return self.head(torch.cat([self.din(q, k, mask), self.dien(q, k, mask)], dim=1))


def _data():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(8, 4, generator=g, dtype=torch.float64)
    k = torch.randn(8, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.arange(5) < torch.randint(1, 6, (8, 1), generator=g)
    y = torch.randn(8, 1, generator=g, dtype=torch.float64)
    return q, k, mask, y


def _model():
    torch.manual_seed(0)
    return Model().double()


def _worker(rank, world, out_path):
    model = torch.nn.parallel.DistributedDataParallel(_model())
    q, k, mask, y = (t.chunk(world)[rank] for t in _data())
    loss = torch.nn.functional.mse_loss(model(q, k, mask), y)
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out_path)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_gradients_equal_single_process_full_batch(tmp_path):
    out_path = str(tmp_path / "grads.pt")
    spawn(_worker, out_path)
    ddp_grads = torch.load(out_path)
    model = _model()
    q, k, mask, y = _data()
    torch.nn.functional.mse_loss(model(q, k, mask), y).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], param.grad, msg=name)
