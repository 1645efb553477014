"""The CTR model with its embedding tables in TorchRec, ready to be sharded.

:class:`TorchRecCTRModel` is :class:`~monolith_layers.models.CTRModel` whose
user, item and category tables are one TorchRec ``EmbeddingCollection``; the
behaviour sequences are jagged features of the same tables (``history``
reads the item table, ``history_category`` the category table), fed as one
``KeyedJaggedTensor`` built from the batch: padded slots are never looked
up. The jagged sequence embeddings are turned into (B, T, 2E) once, and our
sequence layers run on them with the batch's mask, exactly as in
``CTRModel``. Wrap it in ``torchrec.distributed.DistributedModelParallel``
with :func:`shard` to place the tables across ranks (the dense layers are
replicated under DDP).

TorchRec on the CPU build of torch 2.13: ``pip install --no-deps
fbgemm-gpu-cpu==1.8.0 torchrec==1.8.0`` (torchrec's metadata asks for the
CUDA fbgemm-gpu, hence ``--no-deps``) plus its small dependencies
``tensordict pyvers orjson cloudpickle importlib_metadata torchmetrics==1.0.3
lightning-utilities pyre-extensions typing-inspect mypy-extensions``
(``pip install -e ".[torchrec]"`` then the two ``--no-deps`` packages).
fbgemm-gpu-cpu 1.9.0 pairs with torch 2.14, not 2.13. On CPU (gloo) TorchRec
offers data-parallel, table-wise and column-wise sharding; row-wise needs GPUs.
"""

from __future__ import annotations

from typing import Any

import torch

from .ctr import CTRModel, ModelConfig

TABLES = {
    "user": ("user",),
    "item": ("item", "history", "negative_history"),
    "category": ("category", "history_category", "negative_history_category"),
}
CPU_SHARDING_TYPES = ("data_parallel", "table_wise", "column_wise")


class ShardingError(ValueError):
    """A sharding type the device cannot do, or TorchRec is missing."""


def _torchrec():
    try:
        import torchrec
    except ImportError as err:
        raise ShardingError(
            "TorchRec is not installed: pip install --no-deps fbgemm-gpu-cpu==1.8.0 torchrec==1.8.0 "
            "(see monolith_layers.models.sharded for its small dependencies)"
        ) from err
    return torchrec


class TorchRecCTRModel(CTRModel):
    """:class:`CTRModel` with its embeddings in a TorchRec ``EmbeddingCollection``.

    Args:
        config: the same :class:`ModelConfig` as ``CTRModel``.
        device: where the tables are created; ``torch.device('meta')`` lets
            ``DistributedModelParallel`` allocate each shard on its rank only.
    """

    def __init__(self, config: ModelConfig, device: torch.device | str | None = None) -> None:
        torchrec = _torchrec()
        super().__init__(config)
        del self.user_embedding, self.item_embedding, self.category_embedding
        sizes = {
            "user": config.num_users + 1,
            "item": config.num_items + 1,
            "category": config.num_categories + 1,
        }
        self.embeddings = torchrec.EmbeddingCollection(
            tables=[
                torchrec.EmbeddingConfig(
                    name=name,
                    embedding_dim=config.embed_dim,
                    num_embeddings=sizes[name],
                    feature_names=list(features),
                )
                for name, features in TABLES.items()
            ],
            device=torch.device(device) if device is not None else None,
        )

    def _features(self, batch: dict[str, torch.Tensor]) -> tuple[bool, Any]:
        """The batch as one KeyedJaggedTensor: single ids, then the masked sequences."""
        from torchrec import KeyedJaggedTensor

        mask = batch["mask"]
        lengths_seq = mask.sum(dim=1)
        ones = torch.ones_like(lengths_seq)
        keys = ["user", "item", "category", "history", "history_category"]
        values = [
            batch["user"],
            batch["item"],
            batch["category"],
            batch["history"][mask],
            batch["history_category"][mask],
        ]
        lengths = [ones, ones, ones, lengths_seq, lengths_seq]
        # Every feature of the collection must be present: without negatives they are empty.
        keys += ["negative_history", "negative_history_category"]
        if self._wants_negatives(batch):
            values += [batch["negative_history"][mask], batch["negative_history_category"][mask]]
            lengths += [lengths_seq, lengths_seq]
        else:
            lengths += [torch.zeros_like(lengths_seq)] * 2
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=keys, values=torch.cat(values).long(), lengths=torch.cat(lengths).int()
        )
        return self._wants_negatives(batch), kjt

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with_negatives, kjt = self._features(batch)
        looked_up = self.embeddings(kjt)
        steps = batch["mask"].shape[1]

        def dense(name: str) -> torch.Tensor:
            return looked_up[name].to_padded_dense(desired_length=steps)  # (B, T, E), zero padding

        out = {
            "user": looked_up["user"].values(),
            "target": torch.cat(
                [looked_up["item"].values(), looked_up["category"].values()], dim=-1
            ),
            "history": torch.cat([dense("history"), dense("history_category")], dim=-1),
        }
        if with_negatives:
            out["negatives"] = torch.cat(
                [dense("negative_history"), dense("negative_history_category")], dim=-1
            )
        return out

    def table_weights(self) -> dict[str, torch.Tensor]:
        """``{table name: weight}`` of the (unsharded) tables."""
        return {name: module.weight for name, module in self.embeddings.embeddings.items()}


def shard(
    model: TorchRecCTRModel,
    sharding_type: str = "table_wise",
    device: torch.device | str = "cpu",
    process_group=None,
):
    """Wrap ``model`` in ``DistributedModelParallel`` with every table sharded as ``sharding_type``.

    Needs an initialised process group. On CPU only ``data_parallel``,
    ``table_wise`` and ``column_wise`` exist; anything else is a
    :class:`ShardingError` naming the choices.
    """
    _torchrec()
    import torch.distributed as dist
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )

    device = torch.device(device)
    if device.type == "cpu" and sharding_type not in CPU_SHARDING_TYPES:
        raise ShardingError(
            f"shard: {sharding_type!r} sharding needs GPUs; on CPU choose one of {list(CPU_SHARDING_TYPES)}"
        )
    if not (dist.is_available() and dist.is_initialized()):
        raise ShardingError(
            "shard: no process group; launch with torchrun (or call init_process_group)"
        )
    group = process_group or dist.GroupMember.WORLD
    constraints = {name: ParameterConstraints(sharding_types=[sharding_type]) for name in TABLES}
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(group), compute_device=device.type),
        constraints=constraints,
    )
    sharders = [EmbeddingCollectionSharder()]
    plan = planner.collective_plan(model, sharders, group)
    return DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)
