"""Sequence layers: DIN, DIEN and DMR_U2I, with real padding masks.

Every layer takes an optional ``mask`` (B, T): True (or a float >= 1, as in
Monolith) marks a real step. Padded steps never change a result, whatever
values they hold (NaN and Inf included: padding is selected away, never
multiplied by zero), and get exactly zero gradient; a row with no real step
gives finite zeros; T = 0 and B = 0 give correctly shaped results. Without a
mask the results equal the originals.

Masks need not be left-aligned: holes are allowed. DIN and DIEN see only the
order of the real steps. DMR_U2I's position embedding belongs to the slot,
not to the rank among real steps: with a mask ``[1, 0, 1]`` the second real
step still gets ``pos_emb[2]``, as it would in the original fed the same
padded tensor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from . import _ops
from . import activations as _activations
from . import initializers as _initializers
from . import regularizers as _regularizers
from ._checks import (
    check_choice,
    check_dims_list,
    check_positive_int,
    check_shape,
    resolve,
)
from ._ops import fused_enabled
from ._sequence import check_padding, masked_softmax, padding_mask, zero_padded
from .agru import AGRUCell, check_att_type, run_attention_rnn
from .dense import KERNEL_NORM_EPSILON, Dense
from .gru import KerasGRUCell, run_gru
from .jagged import unjag
from .layer import Layer
from .mlp import MLP


def _check_query_keys(
    layer: Layer,
    queries: Any,
    keys: Any,
    query_dim: int,
    key_dim: int | None,
    mask: Any,
    lengths: Any,
):
    """Shapes and dtypes of (queries, keys); ``(queries, keys, mask, lengths)``.

    Jagged keys are padded first (their lengths become ``lengths``); the mask
    comes back as bool (True = real step), lengths as int64.
    """
    where = layer.where
    keys, lengths = unjag(where, keys, mask, lengths)
    keys = check_shape(where, "keys", keys, (None, None, key_dim))
    queries = check_shape(where, "queries", queries, (keys.shape[0], query_dim))
    layer.check_input_dtype("keys", keys)
    layer.check_input_dtype("queries", queries)
    mask, lengths = check_padding(where, mask, lengths, keys.shape[0], keys.shape[1])
    return queries, keys, mask, lengths


DIN_MODES = ("sum", "elementwise")


class DIN(Layer):
    """Deep Interest Network attention pooling (Zhou et al., 2018), Monolith's variant.

    ``w = MLP([q, k, q - k, q * k])`` per step (no softmax, as in Monolith and
    the paper), optionally divided by sqrt(H) (``decay``), zeroed on padded
    steps; ``mode='sum'`` returns ``sum_t w_t k_t``, any other mode ``k * w``.

    The first dense of the tower is computed without building the (B, T, 4H)
    concatenation: with its kernel split into four (H, h1) blocks,
    ``[q, k, q-k, q*k] @ W = q @ (W1 + W3) + k @ (W2 - W3 + diag(q) W4)``,
    one batched matmul with the q part computed once per row.

    Shapes: queries (B, H), keys (B, T, H), mask (B, T) -> (B, H) for
    ``'sum'``, (B, T, H) for ``'elementwise'``.

    Fast path (on unless ``set_fused(False)``): in float32 / float64, the
    operator ``torch.ops.monolith_layers.din_attention`` (kept as one call
    by ``torch.compile`` / ``torch.export``) runs the tower and the pooling
    over the real keys only, for towers of tanh / sigmoid / relu / linear /
    PReLU layers as the constructor builds them: on the CPU a C++ kernel,
    one batch row at a time with a factored first layer; on CUDA the tower
    as GEMMs over the real positions and a Triton pooling kernel.
    Elsewhere (bf16 / fp16, ONNX / TorchScript export, another activation) the
    factored first layer runs as tensor ops; with the fast path off the
    tower runs on the materialised concatenation (the reference).

    Args:
        hidden_units: widths of the ``compress_tower`` MLP; the last must be 1.
        activation: hidden activation of the tower; ``None`` is linear (as in
            the original, whose Keras ``activations.get(None)`` is linear).
        initializer: kernel initializer of the tower, default glorot_normal.
        regularizer: kernel regularizer of the tower.
        mode: ``'sum'`` pools over T; ``'elementwise'`` keeps T (``k * w``).
        decay: divide the weights by sqrt(H).
        embed_dim: H.
        name: Monolith scope, default ``'din'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        hidden_units: list[int],
        activation: Any = None,
        initializer: Any = None,
        regularizer: Any = None,
        mode: str = "sum",
        decay: bool = False,
        *,
        embed_dim: int,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        dims = check_dims_list(where, "hidden_units", hidden_units)
        if dims[-1] != 1:
            raise ValueError(f"{where}: hidden_units must end in 1, got {hidden_units!r}")
        self.embed_dim = check_positive_int(where, "embed_dim", embed_dim)
        check_choice(where, "mode", mode, DIN_MODES)
        self.mode, self.decay = mode, bool(decay)
        resolve(where, "activation", _activations.get, activation, units=1)
        tower = MLP(
            dims,
            activations=activation if activation is not None else "linear",
            initializers=resolve(where, "initializer", _initializers.get, initializer)
            or "glorot_normal",
            kernel_regularizer=resolve(where, "regularizer", _regularizers.get, regularizer),
            input_dim=4 * embed_dim,
            name="compress_tower",
            **self.factory_kwargs,
        )
        self.compress_tower = self.add_sublayer("compress_tower", tower)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, hidden_units={self.compress_tower.output_dims}, "
            f"mode={self.mode!r}, decay={self.decay}, name={self.name!r}"
        )

    def attention_logits_reference(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The tower on the materialised ``[q, k, q-k, q*k]`` (B, T, 4H) -> (B, T, 1)."""
        q = queries.unsqueeze(1).expand_as(keys)
        return self.compress_tower(torch.cat([q, keys, q - keys, q * keys], dim=-1))

    def attention_logits(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Same values as :meth:`attention_logits_reference`, without the concat:
        the first dense's kernel split into ``(W1 + W3, W2 - W3, W4)``."""
        dense = self.compress_tower.dense_0
        w1, w2, w3, w4 = dense.effective_kernel().split(self.embed_dim, dim=0)
        per_row = queries @ (w1 + w3)
        if dense.bias is not None:
            per_row = per_row + dense.bias
        # (B, H, h1): each row's key-side kernel, W2 - W3 + diag(q_b) W4.
        key_kernel = torch.addcmul(w2 - w3, queries.unsqueeze(-1), w4)
        first = torch.baddbmm(per_row.unsqueeze(1), keys, key_kernel)
        return self.compress_tower.run_from(first, 1)

    def forward(
        self,
        queries: torch.Tensor,
        keys: Any,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """queries (B, H), keys (B, T, H), mask (B, T) or lengths (B,) -> (B, H) or (B, T, H).

        ``keys`` may also be jagged (:class:`monolith_layers.Jagged` or a
        TorchRec ``JaggedTensor``), padded once on entry. Runs the operator
        ``torch.ops.monolith_layers.din_attention`` where it can (class
        docstring), else the factored tensor ops, or the materialised
        concatenation with the fast path switched off.
        """
        queries, keys, mask, lengths = _check_query_keys(
            self, queries, keys, self.embed_dim, self.embed_dim, mask, lengths
        )
        mask = padding_mask(mask, lengths, keys.shape[1])
        tower, codes, slopes, unsupported = self._kernel_tower()
        if keys.shape[1] and _ops.use_kernel(
            "din_attention", queries, keys, *tower, *slopes, unsupported=unsupported
        ):
            inputs = (queries, keys, *tower, *slopes)
            save = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
            decay = self.embed_dim**0.5 if self.decay else 1.0
            out, weights, _ = _ops.din_attention(
                queries,
                keys,
                mask,
                tower,
                codes,
                slopes,
                self.mode == "sum",
                decay,
                KERNEL_NORM_EPSILON,
                save,
            )
            if self._summary is not None:
                self._summarize_histogram(f"{self.name}_attention_outputs", weights.unsqueeze(-1))
            return out
        keys = zero_padded(keys, mask)  # DIEN's helpers do this themselves; DIN reads keys raw
        keep = None if mask is None else mask.unsqueeze(-1)
        if fused_enabled():
            logits = self.attention_logits(queries, keys)
        else:
            logits = self.attention_logits_reference(queries, keys)
        return self._pool(keys, logits, keep)

    def _kernel_tower(self) -> tuple[list[torch.Tensor], list[int], list[torch.Tensor], str | None]:
        """The tower as the kernel takes it: ``([V1, g1, b1, V2, ...], activation
        codes, PReLU slopes (empty for other layers), None)``, or ``([], [], [],
        why not)`` for a tower it cannot run."""
        layers = self.compress_tower.plain_layers()
        if layers is None:
            return [], [], [], "the tower has batch normalisation"
        weights, codes, slopes = [], [], []
        for i, (dense, activation) in enumerate(layers):
            if (
                not dense.allow_kernel_norm
                or dense.trainable_kernel_norm is None
                or dense.bias is None
            ):
                return [], [], [], "the tower's denses need learnable weight norms and biases"
            weights += [dense.kernel, dense.trainable_kernel_norm, dense.bias]
            if i == len(layers) - 1:
                break
            if isinstance(activation, _activations.PReLU):
                codes.append(_ops.DIN_ACTIVATIONS["prelu"])
                slopes.append(activation.alpha)
                continue
            name = _activations.kernel_name(activation)
            if name is None:
                return [], [], [], f"tower activation {activation!r} has no kernel"
            codes.append(_ops.DIN_ACTIVATIONS[name])
            slopes.append(dense.bias.new_empty(0))
        return weights, codes, slopes, None

    def _pool(self, keys, weights, keep):
        """Scale, mask and apply the attention weights (B, T, 1) to keys (B, T, H)."""
        if self.decay:
            weights = weights / self.embed_dim**0.5
        if keep is not None:
            weights = weights.masked_fill(~keep, 0.0)
        if self._summary is not None:
            self._summarize_histogram(f"{self.name}_attention_outputs", weights)
        # A multiply and a reduction: faster than a batch of (1, T) @ (T, H)
        # matmuls, forward and backward.
        return (weights * keys).sum(dim=1) if self.mode == "sum" else keys * weights


class DIEN(Layer):
    """Deep Interest Evolution Network (Zhou et al., 2019), Monolith's layer.

    1. Interest extractor: a Keras GRU cell ``gru_cell`` over the keys.
    2. Attention: ``softmax_T(outputs @ (queries @ W^T))`` with ``W`` =
       ``attention_weight`` (U, U); padded steps get exactly zero weight.
    3. Interest evolution: an :class:`AGRUCell` ``augru_cell`` through
       :func:`dynamic_rnn_with_attention`; the final state is the output.

    ``att_type`` is honoured ('AGRU' or 'AUGRU'); Monolith ignores it and
    always runs AGRU, which :func:`monolith_layers.from_monolith` reproduces.
    With a mask the GRU carries its state through padded steps and the AGRU
    skips them; a row with no real step returns zeros.

    Shapes: queries (B, U), keys (B, T, D), mask (B, T) -> (B, U).

    Args:
        num_units: U, width of both recurrent cells and of the queries.
        att_type: 'AGRU' or 'AUGRU' for the evolution cell.
        activation: candidate activation of both cells (default relu).
        initializer: kernel initializer of everything (default he_uniform);
            the GRU's recurrent kernel uses Keras's orthogonal default.
        regularizer: kernel regularizer of the GRU kernel, the attention
            weight and all AGRU weights (as in Monolith).
        input_dim: D, the keys' width.
        name: Monolith scope, default ``'dien'``.
        device, dtype: where and in what precision the weights live.
    """

    def __init__(
        self,
        num_units: int,
        att_type: str = "AGRU",
        activation: Any = "relu",
        initializer: Any = "he_uniform",
        regularizer: Any = None,
        *,
        input_dim: int,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.num_units = check_positive_int(where, "num_units", num_units)
        self.input_dim = check_positive_int(where, "input_dim", input_dim)
        self.att_type = check_att_type(where, att_type)
        resolve(where, "activation", _activations.get, activation, units=num_units)
        initializer = resolve(where, "initializer", _initializers.get, initializer or "he_uniform")
        regularizer = resolve(where, "regularizer", _regularizers.get, regularizer)
        gru = KerasGRUCell(
            num_units,
            activation=activation,
            kernel_initializer=initializer,
            kernel_regularizer=regularizer,
            input_dim=input_dim,
            name="gru_cell",
            **self.factory_kwargs,
        )
        self.gru_cell = self.add_sublayer("gru_cell", gru)
        augru = AGRUCell(
            num_units,
            att_type=att_type,
            activation=activation,
            initializer=initializer,
            regularizer=regularizer,
            input_dim=num_units,
            name="augru_cell",
            **self.factory_kwargs,
        )
        self.augru_cell = self.add_sublayer("augru_cell", augru)
        self.add_weight("attention_weight", (num_units, num_units), initializer, regularizer)

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, num_units={self.num_units}, "
            f"att_type={self.att_type!r}, name={self.name!r}"
        )

    def attention(
        self, queries: torch.Tensor, interests: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Softmax over T of ``interests @ (queries @ W^T)``: (B, T)."""
        query_weight = queries @ self.attention_weight.t()
        logits = torch.bmm(interests, query_weight.unsqueeze(-1)).squeeze(-1)
        return masked_softmax(logits, mask, dim=1)

    def forward(
        self,
        queries: torch.Tensor,
        keys: Any,
        mask: torch.Tensor | None = None,
        neg_keys: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """queries (B, U), keys (B, T, D), mask (B, T) or lengths (B,) -> (B, U).

        ``keys`` may also be jagged (:class:`monolith_layers.Jagged` or a
        TorchRec ``JaggedTensor``, padded once on entry; ``neg_keys`` is
        then jagged too). ``neg_keys`` (B, T, D), sampled non-clicked
        behaviours aligned with ``keys``, adds the paper's auxiliary loss to
        ``losses`` (see :meth:`auxiliary_loss`); without it the layer adds
        no loss. Both recurrences compute real steps only (see
        :func:`~monolith_layers.dynamic_rnn_with_attention`).
        """
        if neg_keys is not None and mask is None and lengths is None:
            neg_keys = unjag(self.where, neg_keys, None, None)[0]
        queries, keys, mask, lengths = _check_query_keys(
            self, queries, keys, self.num_units, self.input_dim, mask, lengths
        )
        # The padding, checked once above, travels as one mask to both recurrences.
        mask = padding_mask(mask, lengths, keys.shape[1])
        zeros = keys.new_zeros(keys.shape[0], self.num_units)
        interests, _ = run_gru(self.gru_cell, keys, zeros, mask)
        self._forward_losses = []
        if neg_keys is not None:
            self._forward_losses = [self.auxiliary_loss(interests, keys, neg_keys, mask)]
        scores = self.attention(queries, interests, mask)
        return run_attention_rnn(self.augru_cell, interests, scores, zeros, mask)[1]

    def auxiliary_loss(
        self,
        interests: torch.Tensor,
        keys: torch.Tensor,
        neg_keys: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DIEN's auxiliary loss (Zhou et al., 2019, eq. 7), masked.

        Each extractor state ``h_t`` should score the next clicked behaviour
        ``e_{t+1}`` above the sampled negative ``n_{t+1}``, with the inner
        product as score: the mean over pairs where steps t and t+1 are both
        real of ``-log sigmoid(<h_t, e_{t+1}>) - log(1 - sigmoid(<h_t, n_{t+1}>))``.
        Needs ``input_dim == num_units``; zero when no pair is real.
        """
        where = self.where
        if self.input_dim != self.num_units:
            raise ValueError(
                f"{where}: the auxiliary loss scores <h_t, e_t+1> and needs input_dim == "
                f"num_units, got input_dim={self.input_dim}, num_units={self.num_units}"
            )
        neg_keys = check_shape(where, "neg_keys", neg_keys, tuple(keys.shape))
        self.check_input_dtype("neg_keys", neg_keys)
        keys, neg_keys = zero_padded(keys, mask), zero_padded(neg_keys, mask)
        states = interests[:, :-1]
        pos_logits = (states * keys[:, 1:]).sum(-1)
        neg_logits = (states * neg_keys[:, 1:]).sum(-1)
        # -log sigmoid(x) = softplus(-x);  -log(1 - sigmoid(x)) = softplus(x)
        per_pair = F.softplus(-pos_logits) + F.softplus(neg_logits)
        if mask is None:
            return per_pair.mean() if per_pair.numel() else per_pair.sum()
        pairs = mask[:, :-1] & mask[:, 1:]
        total = torch.where(pairs, per_pair, per_pair.new_zeros(())).sum()
        return total / pairs.sum().clamp_min(1).to(per_pair.dtype)


class DMR_U2I(Layer):
    """Deep Match to Rank's user-to-item network (Lyu et al., 2020), Monolith's variant.

    ``alpha = softmax_T((pos_emb + user_seq @ emb_weight + bias) @ z_weight)``;
    ``out = dense(sum_t alpha_t user_seq_t) * items`` (Monolith replaces the
    paper's dot product by an elementwise product). The logits are computed as
    ``user_seq @ (emb_weight @ z) + (pos_emb + bias) @ z``, the same value
    with cmp_dim times fewer multiplications.

    Shapes: items (B, item_dim), user_seq (B, T, user_dim), mask (B, T)
    -> (B, item_dim), T = ``seq_len``.

    Args:
        cmp_dim: width of the compressed representation.
        activation: of the ``dense`` layer; default PReLU (one learnable slope
            per unit, Keras weight name ``dense/p_re_lu/alpha``), which the
            original cannot build on TF 2.4.
        initializer: of ``pos_emb``, ``emb_weight`` and the dense kernel.
        regularizer: of the same three.
        seq_len: T. user_dim: width of the sequence. item_dim: width of items.
        name: Monolith scope, default ``'dmr__u2i'``.
        device, dtype: where and in what precision the weights live.

    With a mask, each real step keeps the position embedding of its own slot
    (holes are not closed up; see the module docstring).
    """

    def __init__(
        self,
        cmp_dim: int,
        activation: Any = "prelu",
        initializer: Any = "glorot_uniform",
        regularizer: Any = None,
        *,
        seq_len: int,
        user_dim: int,
        item_dim: int,
        name: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(name=name, device=device, dtype=dtype)
        where = self.where
        self.cmp_dim = check_positive_int(where, "cmp_dim", cmp_dim)
        self.seq_len = check_positive_int(where, "seq_len", seq_len)
        self.user_dim = check_positive_int(where, "user_dim", user_dim)
        self.item_dim = check_positive_int(where, "item_dim", item_dim)
        initializer = initializer or "glorot_normal"
        self.add_weight("pos_emb", (seq_len, cmp_dim), initializer, regularizer)
        self.add_weight("emb_weight", (user_dim, cmp_dim), initializer, regularizer)
        self.add_weight("z_weight", (cmp_dim, 1), "ones")
        self.add_weight("bias", (cmp_dim,), "zeros")
        dense = Dense(
            item_dim,
            activation=activation,
            kernel_initializer=initializer,
            kernel_regularizer=regularizer,
            input_dim=user_dim,
            name="dense",
            **self.factory_kwargs,
        )
        self.dense = self.add_sublayer("dense", dense)

    def extra_repr(self) -> str:
        return (
            f"seq_len={self.seq_len}, user_dim={self.user_dim}, item_dim={self.item_dim}, "
            f"cmp_dim={self.cmp_dim}, name={self.name!r}"
        )

    def attention(self, user_seq: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``alpha`` (B, T), summing to one over the real steps of each row."""
        per_step = (self.pos_emb + self.bias) @ self.z_weight  # (T, 1)
        logits = (user_seq @ (self.emb_weight @ self.z_weight) + per_step).squeeze(-1)
        return masked_softmax(logits, mask, dim=1)

    def forward(
        self,
        items: torch.Tensor,
        user_seq: Any,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items (B, item_dim), user_seq (B, T, user_dim), mask (B, T) or lengths (B,)
        -> (B, item_dim). ``user_seq`` may be jagged (padded once to T = seq_len)."""
        where = self.where
        user_seq, lengths = unjag(where, user_seq, mask, lengths, self.seq_len)
        user_seq = check_shape(where, "user_seq", user_seq, (None, self.seq_len, self.user_dim))
        items = check_shape(where, "items", items, (user_seq.shape[0], self.item_dim))
        self.check_input_dtype("user_seq", user_seq)
        self.check_input_dtype("items", items)
        mask, lengths = check_padding(where, mask, lengths, user_seq.shape[0], self.seq_len)
        mask = padding_mask(mask, lengths, self.seq_len)
        if mask is not None:
            user_seq = zero_padded(user_seq, mask)
        alpha = self.attention(user_seq, mask)
        merged = torch.bmm(alpha.unsqueeze(1), user_seq).squeeze(1)  # (B, user_dim)
        out = self.dense(merged) * items
        if mask is not None:
            # A row with no real step has nothing to attend to: zeros, not dense(0).
            out = torch.where(mask.any(dim=1, keepdim=True), out, out.new_zeros(()))
        return out
