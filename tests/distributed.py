"""Two-process gloo helpers shared by the distributed tests."""

import os
import socket
import sys

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_in_group(rank: int, world: int, port: int, body, *args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        body(rank, world, *args)
        # gloo aborts a process whose peer closes its connections first.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Once DDP (or TorchRec, which wraps it) has run, the group's gloo threads
    # survive destroy_process_group: something native keeps the group alive. At
    # interpreter exit they meet C++ static destruction, which now and then aborts
    # the process ("terminate called without an active exception", SIGABRT) after
    # all its work is done. Leave without that teardown; the results are on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(body, *args, world: int = 2) -> None:
    """Run ``body(rank, world, *args)`` in ``world`` processes joined by one gloo group.

    The group is torn down only after every rank's ``body`` has returned.
    """
    mp.spawn(_run_in_group, args=(world, free_port(), body, *args), nprocs=world, join=True)


def tiny_model_config(log, encoder: str = "dien"):
    """A small CTR model's config for ``log`` (E = 4, T = 6, one hidden layer of 8)."""
    from monolith_layers.models import ModelConfig

    return ModelConfig(
        encoder=encoder,
        embed_dim=4,
        max_len=6,
        hidden_units=[8],
        num_users=log.num_users,
        num_items=log.num_items,
        num_categories=log.num_categories,
    )
