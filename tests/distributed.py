"""Two-process gloo helpers shared by the distributed tests."""

import contextlib
import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process_group(rank: int, world: int, port: int):
    """A gloo group on loopback for this rank, torn down only when every rank is done."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
        # gloo aborts a process whose peer closes its connections first.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(worker, *args, world: int = 2) -> None:
    """Run ``worker(rank, world, port, *args)`` in ``world`` processes."""
    mp.spawn(worker, args=(world, free_port(), *args), nprocs=world, join=True)
