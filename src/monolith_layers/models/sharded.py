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

import contextlib
import logging
import warnings
from typing import Any

import torch

from ..data.schema import PADDING_ID
from .ctr import CTRModel, ModelConfig
from .features import FeatureCTRModel

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


NEGATIVE = "@negative"  # the feature name of a history sequence's sampled negatives


class TorchRecFeatureModel(FeatureCTRModel):
    """:class:`~monolith_layers.models.features.FeatureCTRModel` with its tables in
    one TorchRec ``EmbeddingCollection``: one table per sparse feature, read by
    that feature, by every sequence sharing it, and (``name@negative``) by DIEN's
    negatives of each history sequence. The batch becomes one KeyedJaggedTensor:
    sequences are jagged (only real entries are looked up).

    Args:
        config: the same :class:`ModelConfig` (with ``features``).
        device: where the tables are created (``'meta'`` for sharding).
    """

    def __init__(self, config: ModelConfig, device: torch.device | str | None = None) -> None:
        torchrec = _torchrec()
        super().__init__(config)
        widths = {
            f.name: f.embed_dim
            for f in self.schema.tables
            if f.embed_dim not in (None, config.embed_dim)
        }
        if widths:
            raise ShardingError(
                f"TorchRec's EmbeddingCollection needs one width for every table; features {widths} "
                f"set their own embed_dim (the model's is {config.embed_dim})"
            )
        readers: dict[str, list[str]] = {f.name: [] for f in self.schema.tables}
        for f in self.schema.features:
            if f.table is not None:
                readers[f.table].append(f.name)
        for f in self.schema.history:
            readers[f.shares].append(f.name + NEGATIVE)
        self.feature_order = [name for names in readers.values() for name in names]
        sizes = config.features["tables"]
        del self.tables
        self.embeddings = torchrec.EmbeddingCollection(
            tables=[
                torchrec.EmbeddingConfig(
                    name=table,
                    embedding_dim=config.embed_dim,
                    num_embeddings=int(sizes[table]),
                    feature_names=names,
                )
                for table, names in readers.items()
            ],
            device=torch.device(device) if device is not None else None,
        )

    def _width(self, table: str) -> int:
        return self.config.embed_dim

    def _jagged(self, batch: dict[str, torch.Tensor]) -> tuple[Any, dict[str, int]]:
        """The batch as one KeyedJaggedTensor (every feature of the collection, in
        order; absent negatives as empty lists), and each sequence's padded T."""
        from torchrec import KeyedJaggedTensor

        rows = len(batch[self.schema.features[0].name])
        negatives = batch.get("negative_history") if self._wants_negatives(batch) else None
        history = {f.name: i for i, f in enumerate(self.schema.history)}
        values, lengths, steps = [], [], {}
        for name in self.feature_order:
            if name.endswith(NEGATIVE):
                source = name.removesuffix(NEGATIVE)
                ids = negatives[:, history[source]] if negatives is not None else None
            else:
                ids = batch[name]
            if ids is None:
                lengths.append(torch.zeros(rows, dtype=torch.long, device=batch[source].device))
            elif ids.dim() == 1:
                values.append(ids)
                lengths.append(torch.ones_like(ids))
            else:
                real = ids != PADDING_ID
                values.append(ids[real])
                lengths.append(real.sum(dim=1))
                steps[name] = ids.shape[1]
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.feature_order,
            values=torch.cat(values).long(),
            lengths=torch.cat(lengths).int(),
        )
        return kjt, steps

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kjt, steps = self._jagged(batch)
        looked_up = self.embeddings(kjt)
        out = {}
        for f in self.schema.features:
            if f.kind == "sparse":
                out[f.name] = looked_up[f.name].values()
            elif f.kind == "sequence":
                out[f.name] = looked_up[f.name].to_padded_dense(desired_length=steps[f.name])
        if self._wants_negatives(batch):
            t = batch["negative_history"].shape[-1]
            out["negatives"] = torch.cat(
                [
                    looked_up[f.name + NEGATIVE].to_padded_dense(desired_length=t)
                    for f in self.schema.history
                ],
                dim=-1,
            )
        return out

    @staticmethod
    def plain_key(key: str) -> str:
        """The :class:`FeatureCTRModel` name of a state-dict key (tables renamed)."""
        prefix = "embeddings.embeddings."
        return "tables." + key.removeprefix(prefix) if key.startswith(prefix) else key


def local_state(module: torch.nn.Module) -> dict[str, Any]:
    """A copy of this rank's part of a (sharded) module's state: whole tensors,
    and a sharded table's local shards."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out: dict[str, Any] = {}
    for key, value in module.state_dict().items():
        if isinstance(value, ShardedTensor):
            out[key] = [shard.tensor.detach().clone() for shard in value.local_shards()]
        else:
            out[key] = value.detach().clone()
    return out


def load_local_state(module: torch.nn.Module, saved: dict[str, Any]) -> None:
    """Put back what :func:`local_state` copied."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with torch.no_grad():
        for key, value in module.state_dict().items():
            if isinstance(value, ShardedTensor):
                for shard, copy in zip(value.local_shards(), saved[key], strict=True):
                    shard.tensor.copy_(copy)
            else:
                value.copy_(saved[key])


def fused_adagrad(learning_rate: float) -> dict[str, Any]:
    """Fused-optimiser settings for sharded tables: exact Adagrad at ``learning_rate``.
    (fbgemm's CPU kernels fuse Adagrad and SGD only, not Adam.)"""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    return {"optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": learning_rate}


def dense_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an ordinary optimiser trains: all but the fused tables'."""
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    return [p for _, p in in_backward_optimizer_filter(module.named_parameters())]


def load_whole_state(
    module: torch.nn.Module, state: dict[str, torch.Tensor], plain_names: bool = True
) -> None:
    """Copy a whole state into a sharded model: each rank takes the rows and
    columns of its shards. ``plain_names``: ``state`` has
    :class:`FeatureCTRModel`'s names (``tables.*``), else TorchRec's."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with torch.no_grad():
        for key, value in module.state_dict().items():
            whole = state[TorchRecFeatureModel.plain_key(key) if plain_names else key]
            if isinstance(value, ShardedTensor):
                for local in value.local_shards():
                    rows, cols = local.metadata.shard_offsets
                    height, width = local.metadata.shard_sizes
                    local.tensor.copy_(whole[rows : rows + height, cols : cols + width])
            else:
                value.copy_(whole)


def gathered_state(module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole state of a sharded model, under :class:`FeatureCTRModel`'s names,
    on rank 0 (None elsewhere). Collective: every rank calls it."""
    import torch.distributed as dist
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    rank = dist.get_rank()
    out = {}
    for key, value in module.state_dict().items():
        if isinstance(value, ShardedTensor):
            with warnings.catch_warnings():  # ShardedTensor's deprecation, TorchRec's type
                warnings.simplefilter("ignore", FutureWarning)
                full = torch.empty(value.size(), dtype=value.dtype) if rank == 0 else None
                value.gather(dst=0, out=full)
            value = full
        if rank == 0:
            out[TorchRecFeatureModel.plain_key(key)] = value.detach().cpu().clone()
    return out if rank == 0 else None


def shard(
    model: TorchRecCTRModel | TorchRecFeatureModel,
    sharding_type: str = "table_wise",
    device: torch.device | str = "cpu",
    process_group=None,
    fused_params: dict[str, Any] | None = None,
):
    """Wrap ``model`` in ``DistributedModelParallel`` with every table sharded as ``sharding_type``.

    Needs an initialised process group. On CPU only ``data_parallel``,
    ``table_wise`` and ``column_wise`` exist; anything else is a
    :class:`ShardingError` naming the choices. ``fused_params``: the optimiser
    TorchRec runs inside the backward pass of table-wise and column-wise tables
    (:func:`fused_adagrad`); data-parallel tables are ordinary parameters.
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
    tables = [config.name for config in model.embeddings.embedding_configs()]
    constraints = {name: ParameterConstraints(sharding_types=[sharding_type]) for name in tables}
    sharders = [EmbeddingCollectionSharder(fused_params=fused_params)]
    with _quiet_torchrec():
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=dist.get_world_size(group), compute_device=device.type),
            constraints=constraints,
        )
        plan = planner.collective_plan(model, sharders, group)
        return DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)


@contextlib.contextmanager
def _quiet_torchrec():
    """TorchRec 1.8's planner and DMP warn about their own defaults (a Topology built
    directly, a storage heuristic, DDP's broadcast_buffers) on every rank; none is
    about the user's model, so they are kept off the user's screen."""
    names = ["torchrec.distributed.planner"] + [
        name
        for name in logging.root.manager.loggerDict
        if name.startswith("torchrec.distributed.planner.")
    ]
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
