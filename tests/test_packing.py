"""Length-aware recurrences and jagged inputs: the packed paths against the references."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_helpers import needs_kernels

from monolith_layers import (
    DIEN,
    DIN,
    DMR_U2I,
    AGRUCell,
    Jagged,
    KerasGRUCell,
    dynamic_rnn_with_attention,
    fused,
    gru_sequence,
    static_rnn_with_attention,
)


def _mask(lengths, steps):
    return torch.arange(steps) < torch.as_tensor(lengths).unsqueeze(1)


# -- the layout --


@needs_kernels
def test_a_mask_with_holes_runs_each_rows_real_steps_in_order():
    # The packed layout follows each row's real slots in order: a row with
    # holes gives what its real steps, moved to the front, give.
    torch.manual_seed(0)
    cell = KerasGRUCell(3, input_dim=2, dtype=torch.float64)
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    mask = torch.tensor([[False, True, False, True], [True, True, True, False], [False] * 4])
    compact = torch.zeros_like(x)
    compact[0, :2], compact[1, :3] = x[0, [1, 3]], x[1, :3]
    out, final = gru_sequence(cell, x, mask=mask)
    out_compact, final_compact = gru_sequence(cell, compact, lengths=torch.tensor([2, 3, 0]))
    torch.testing.assert_close(final, final_compact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[0, [1, 3]], out_compact[0, :2], rtol=1e-12, atol=1e-12)
    assert not out[0, [0, 2]].any() and not out[2].any() and not final[2].any()


@needs_kernels
def test_full_rows_give_the_results_of_no_mask_exactly():
    cell = AGRUCell(4, att_type="AUGRU", input_dim=3)
    x, att = torch.randn(5, 6, 3), torch.rand(5, 6)
    full = dynamic_rnn_with_attention(cell, x, att, mask=torch.ones(5, 6, dtype=torch.bool))
    for got, want in zip(full, dynamic_rnn_with_attention(cell, x, att), strict=True):
        assert torch.equal(got, want)


# -- recurrences against the step-by-step references --


def _padding(draw_lengths, steps, holes, seed):
    """(mask, lengths) for a case: left-aligned lengths or a mask with holes."""
    lengths = torch.tensor(draw_lengths)
    if not holes:
        return None, lengths
    g = torch.Generator().manual_seed(seed)
    return torch.rand(len(draw_lengths), steps, generator=g) < 0.5, None


def _grads(outs, cot, leaves):
    total = sum((o * c).sum() for o, c in zip(outs, cot, strict=True))
    return torch.autograd.grad(total, leaves, allow_unused=True)


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(1, 6),
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    holes=st.booleans(),
    act=st.sampled_from(["tanh", "relu", "sigmoid"]),
)
def test_gru_sequence_packed_equals_reference(steps, lengths, holes, act):
    lengths = [min(n, steps) for n in lengths]
    torch.manual_seed(len(lengths) * 7 + steps)
    cell = KerasGRUCell(3, activation=act, input_dim=2).double()
    batch = len(lengths)
    x = torch.randn(batch, steps, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, 3, dtype=torch.float64, requires_grad=True)
    mask, lens = _padding(lengths, steps, holes, steps)
    want = gru_sequence(cell, x, h0, mask, fast=False, lengths=lens)
    got = gru_sequence(cell, x, h0, mask, lengths=lens)
    with torch.no_grad():
        inferred = gru_sequence(cell, x, h0, mask, lengths=lens)
    for g, i, w in zip(got, inferred, want, strict=True):
        torch.testing.assert_close(g, w)
        torch.testing.assert_close(i, w)
    cot = [torch.randn_like(w) for w in want]
    leaves = [x, h0, *cell.parameters()]
    for a, b in zip(_grads(got, cot, leaves), _grads(want, cot, leaves), strict=True):
        torch.testing.assert_close(a, b)


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(1, 6),
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    holes=st.booleans(),
    mode=st.sampled_from(["AGRU", "AUGRU", None]),
    act=st.sampled_from(["tanh", "relu"]),
)
def test_attention_rnn_packed_equals_reference(steps, lengths, holes, mode, act):
    lengths = [min(n, steps) for n in lengths]
    torch.manual_seed(len(lengths) * 5 + steps)
    cell = AGRUCell(3, att_type=mode or "AGRU", activation=act, input_dim=2).double()
    batch = len(lengths)
    x = torch.randn(batch, steps, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, 3, dtype=torch.float64, requires_grad=True)
    att = None
    if mode is not None:
        att = torch.rand(batch, steps, dtype=torch.float64, requires_grad=True)
    mask, lens = _padding(lengths, steps, holes, steps)
    want = static_rnn_with_attention(cell, x, att, h0, mask, lengths=lens)
    got = dynamic_rnn_with_attention(cell, x, att, h0, mask, lengths=lens)
    with torch.no_grad():
        inferred = dynamic_rnn_with_attention(cell, x, att, h0, mask, lengths=lens)
    for g, i, w in zip(got, inferred, want, strict=True):
        torch.testing.assert_close(g, w)
        torch.testing.assert_close(i, w)
    cot = [torch.randn_like(w) for w in want]
    leaves = [x, h0, *cell.parameters()] + ([att] if att is not None else [])
    for a, b in zip(_grads(got, cot, leaves), _grads(want, cot, leaves), strict=True):
        torch.testing.assert_close(a, b)


def test_packed_paths_ignore_nan_and_inf_in_padding():
    torch.manual_seed(0)
    cell = AGRUCell(4, att_type="AUGRU", input_dim=3)
    gru = KerasGRUCell(4, input_dim=3)
    lengths = torch.tensor([5, 1, 0, 3])
    x = torch.randn(4, 5, 3)
    att = torch.rand(4, 5)
    dirty_x, dirty_att = x.clone(), att.clone()
    pad = ~_mask(lengths, 5)
    dirty_x[pad] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    dirty_att[pad] = float("nan")
    results = []
    for xs, scores in ((x, att), (dirty_x, dirty_att)):
        xs = xs.clone().requires_grad_()
        out, final = dynamic_rnn_with_attention(cell, xs, scores, lengths=lengths)
        g_out, g_final = gru_sequence(gru, xs, lengths=lengths)
        loss = out.sum() + final.sum() + g_out.sum() + g_final.sum()
        grads = torch.autograd.grad(loss, [xs, *cell.parameters(), *gru.parameters()])
        results.append((out, final, g_out, g_final, *grads))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@needs_kernels
@pytest.mark.parametrize("op", ["gru", "none", "AGRU", "AUGRU"])
@pytest.mark.parametrize(
    "lengths",
    [[1], [0], [3, 0, 2, 3], [0, 0], [2, 2, 2]],
    ids=["B=1,T=1", "one empty row", "mixed", "all padding", "full"],
)
def test_gradcheck_of_the_recurrences_on_edge_lengths(op, lengths):
    # op: the Keras GRU, or the attention GRU in one of its modes.
    steps, batch, d, u = max(max(lengths), 1), len(lengths), 2, 3
    mask = _mask(lengths, steps)
    torch.manual_seed(1)

    def new(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    x, h0 = new(batch, steps, d), new(batch, u)
    if op == "gru":
        weights = (new(d, 3 * u), new(u, 3 * u), new(2, 3 * u))
        scores = ()
    else:
        weights = (new(d + u, 2 * u), new(2 * u), new(d + u, u), new(u))
        scores = (
            ()
            if op == "none"
            else (torch.rand(batch, steps, dtype=torch.float64).requires_grad_(),)
        )
    for act in ("tanh", "sigmoid", "linear"):

        def fn(x, h0, *rest, act=act):
            if op == "gru":
                return torch.ops.monolith_layers.gru(x, h0, *rest, mask, act)
            att = rest[4] if scores else None
            return torch.ops.monolith_layers.agru(x, att, h0, *rest[:4], mask, op, act)

        assert torch.autograd.gradcheck(fn, (x, h0, *weights, *scores), eps=1e-6, atol=1e-5)


@needs_kernels
def test_recurrences_save_nothing_beyond_their_own_inputs_and_outputs():
    # Memory: the training forward keeps the inputs, the weights and the
    # outputs (which are the states, re-packed in the backward); no per-step
    # gates, candidates or packed copies.
    batch, steps, dim, units = 16, 30, 8, 8
    lengths = torch.randint(1, steps + 1, (batch,))
    x = torch.randn(batch, steps, dim, requires_grad=True)
    scores = torch.rand(batch, steps, requires_grad=True)
    gru = KerasGRUCell(units, input_dim=dim)
    agru = AGRUCell(units, att_type="AUGRU", input_dim=dim)
    for cell, run in (
        (gru, lambda: gru_sequence(gru, x, lengths=lengths)),
        (agru, lambda: dynamic_rnn_with_attention(agru, x, scores, lengths=lengths)),
    ):
        saved = {}

        def keep(t, saved=saved):
            # Views share memory: count every storage once, floats only.
            if t.is_floating_point():
                storage = t.untyped_storage()
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            outputs, _ = run()
        own = {t.untyped_storage().data_ptr() for t in (x, scores, outputs, *cell.parameters())}
        extra = sum(n for storage, n in saved.items() if storage not in own)
        # beyond the caller's tensors: only the default zero initial state (B, U)
        assert saved and extra <= 4 * batch * units, type(cell).__name__


# -- lengths and jagged inputs on the layers --


def test_lengths_must_be_valid_integers():
    cell = KerasGRUCell(3, input_dim=2)
    x = torch.randn(2, 4, 2)
    with pytest.raises(TypeError, match="gru_sequence: lengths must be an integer tensor"):
        gru_sequence(cell, x, lengths=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\].*from 1 to 5"):
        gru_sequence(cell, x, lengths=torch.tensor([1, 5]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2\), got \(3\)"):
        gru_sequence(cell, x, lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="pass mask or lengths, not both"):
        gru_sequence(cell, x, mask=torch.ones(2, 4), lengths=torch.tensor([1, 2]))
    din = DIN([4, 1], embed_dim=2)
    with pytest.raises(ValueError, match=r"DIN\(din\): lengths must lie in \[0, 4\]"):
        din(torch.randn(2, 2), x, lengths=torch.tensor([-1, 2]))


@pytest.mark.parametrize("mode", ["sum", "elementwise"])
def test_din_on_real_positions_equals_the_dense_reference(mode):
    torch.manual_seed(3)
    din = DIN([6, 3, 1], activation="relu", embed_dim=4, mode=mode, decay=True)
    q = torch.randn(6, 4)
    k = torch.randn(6, 8, 4, requires_grad=True)
    lengths = torch.tensor([8, 0, 1, 2, 3, 1])  # 15 of 48 real: the jagged path
    got = din(q, k, lengths=lengths)
    with fused(False):
        want = din(q, k, _mask(lengths, 8))
    torch.testing.assert_close(got, want)
    cot = torch.randn_like(want)
    leaves = [k, *din.parameters()]
    for a, b in zip(_grads([got], [cot], leaves), _grads([want], [cot], leaves), strict=True):
        torch.testing.assert_close(a, b)


def test_jagged_inputs_are_padded_once_and_equal_lengths():
    torch.manual_seed(4)
    lengths = torch.tensor([3, 0, 5, 1])
    values = torch.randn(int(lengths.sum()), 4)
    jagged = Jagged(values, lengths)
    padded, back = jagged.to_padded(6)
    assert padded.shape == (4, 6, 4) and torch.equal(back, lengths)
    assert torch.equal(padded[2, :5], values[3:8]) and padded[1].abs().sum() == 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    assert torch.equal(Jagged.from_offsets(values, offsets).lengths, lengths)

    class TorchRecLike:  # the two methods of torchrec's JaggedTensor the layers read
        def values(self):
            return values

        def lengths(self):
            return lengths

    q = torch.randn(4, 4)
    keys = jagged.to_padded()[0]
    din, dien = DIN([4, 1], embed_dim=4), DIEN(4, input_dim=4)
    dmr = DMR_U2I(3, seq_len=6, user_dim=4, item_dim=4)
    for jag in (jagged, TorchRecLike()):
        torch.testing.assert_close(din(q, jag), din(q, keys, lengths=lengths))
        torch.testing.assert_close(dien(q, jag), dien(q, keys, lengths=lengths))
        torch.testing.assert_close(dmr(q, jag), dmr(q, padded, lengths=lengths))
    with pytest.raises(ValueError, match="carries its own lengths"):
        din(q, jagged, lengths=lengths)
    with pytest.raises(ValueError, match="lengths sum to 9 but values has 8 rows"):
        Jagged(values[:8], lengths)
    with pytest.raises(ValueError, match="a row has 5 steps, more than T = 4"):
        jagged.to_padded(4)
