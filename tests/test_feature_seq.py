import json
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import Case

from monolith_layers import DIEN, DIN, DMR_U2I, enable_summaries, from_monolith, monolith_variables


def _shapes(inputs, *names):
    return [tuple(inputs[n].shape) for n in names]


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("name", ["din_sum", "din_elementwise_decay_mask"])
def test_din_parity(name):
    case = Case(name)
    case.check(*run_query_keys_layer(case, "DIN"))


def test_dien_parity():
    case = Case("dien")
    case.check(*run_query_keys_layer(case, "DIEN"))


def run_query_keys_layer(case, class_name):
    """(layer, inputs, outputs) of a DIN / DIEN fixture, for :meth:`Case.check`."""
    inputs = case.inputs
    layer = case.build(class_name, case.meta["ctor_kwargs"], _shapes(inputs, "queries", "keys"))
    out = layer(inputs["queries"], inputs["keys"], inputs.get("mask"))
    return layer, inputs, {"outputs": out}


def test_dmr_u2i_parity():
    case = Case("dmr_u2i")
    inputs = case.inputs
    layer = case.build("DMR_U2I", case.meta["ctor_kwargs"], _shapes(inputs, "items", "user_seq"))
    case.check(layer, inputs, {"outputs": layer(inputs["items"], inputs["user_seq"])})


# ------------------------------------------------------- DIN specifics
@pytest.mark.parametrize("batch", [5, 1000])  # 1000 * 9 positions run in two slices
def test_din_factored_first_layer_equals_concat(batch):
    torch.manual_seed(0)
    din = DIN([16, 8, 1], activation="relu", embed_dim=6).double()  # exact algebra, float64
    q = torch.randn(batch, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(batch, 9, 6, dtype=torch.float64)
    got, want = din.attention_logits(q, k), din.attention_logits_reference(q, k)
    torch.testing.assert_close(got, want)
    cot = torch.randn_like(got)
    g_got = torch.autograd.grad((got * cot).sum(), [q, *din.parameters()])
    g_want = torch.autograd.grad((want * cot).sum(), [q, *din.parameters()])
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)


def test_din_defaults_mode_and_names():
    din = DIN([4, 1], embed_dim=3)
    assert (
        type(din.compress_tower.get_layer(1)).__name__ == "Identity"
    )  # None -> linear, as Monolith
    assert "compress_tower/dense_0/trainable_kernel_norm" in monolith_variables(din)
    q, k = torch.randn(2, 3), torch.randn(2, 5, 3)
    assert din(q, k).shape == (2, 3)
    assert DIN([4, 1], mode="elementwise", embed_dim=3)(q, k).shape == (2, 5, 3)


def test_din_config_keeps_mode_and_decay_but_monolith_config_defaults_them():
    din = DIN([4, 1], mode="elementwise", decay=True, embed_dim=3)
    config = json.loads(json.dumps(din.get_config()))
    assert config["mode"] == "elementwise" and config["decay"] is True
    assert DIN.from_config(config).get_config() == config
    monolith_config = {
        "name": "din",
        "hidden_units": [4, 1],
        "activation": "linear",
        "initializer": {"class_name": "GlorotNormal", "config": {"seed": None}},
        "regularizer": None,
    }
    rebuilt = from_monolith("DIN", monolith_config, [(None, 3), (None, 5, 3)])
    assert rebuilt.mode == "sum" and rebuilt.decay is False


def test_din_summary(tmp_path):
    din = DIN([4, 1], embed_dim=3)
    recorder = enable_summaries(din, log_dir=str(tmp_path))
    din(torch.randn(2, 3), torch.randn(2, 5, 3), torch.ones(2, 5))
    assert recorder.tags_written == {"din/din_attention_outputs"}
    recorder.close()


# ------------------------------------------------------- DIEN specifics
def test_dien_variables_and_att_type():
    dien = DIEN(4, input_dim=3)
    names = sorted(monolith_variables(dien))
    assert names == sorted(
        [
            "attention_weight",
            "gru_cell/kernel",
            "gru_cell/recurrent_kernel",
            "gru_cell/bias",
            "augru_cell/gates/kernel",
            "augru_cell/gates/bias",
            "augru_cell/candidate/kernel",
            "augru_cell/candidate/bias",
        ]
    )
    assert DIEN(4, att_type="augru", input_dim=3).augru_cell.att_type == "AUGRU"
    with pytest.warns(UserWarning, match="always runs AGRU"):
        layer = from_monolith(
            "DIEN", {"num_units": 4, "att_type": "AUGRU"}, [(None, 4), (None, 5, 3)]
        )
    assert layer.augru_cell.att_type == "AGRU"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_monolith("DIEN", {"num_units": 4, "att_type": "AGRU"}, [(None, 4), (None, 5, 3)])


def test_dien_losses_cover_all_regularized_weights():
    dien = DIEN(4, regularizer="l2", input_dim=3)
    # gru kernel, attention weight, four AGRU weights
    assert len(dien.losses) == 6


# --------------------------------------------------------- masks
LAYERS = {
    "din": lambda: DIN([8, 4, 1], activation="relu", embed_dim=4),
    "din_elementwise": lambda: DIN([8, 1], mode="elementwise", embed_dim=4),
    "dien_agru": lambda: DIEN(4, input_dim=3),
    "dien_augru": lambda: DIEN(4, att_type="AUGRU", activation="tanh", input_dim=3),
}


def _inputs(kind, batch, steps):
    if kind.startswith("din"):
        return torch.randn(batch, 4), torch.randn(batch, steps, 4)
    return torch.randn(batch, 4), torch.randn(batch, steps, 3)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(LAYERS)),
    batch=st.integers(1, 4),
    steps=st.integers(1, 6),
    seed=st.integers(0, 9999),
)
def test_padding_never_changes_a_row(kind, batch, steps, seed):
    torch.manual_seed(seed)
    layer = LAYERS[kind]()
    queries, keys = _inputs(kind, batch, steps)
    lengths = torch.randint(0, steps + 1, (batch,))
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    out = layer(queries, keys, mask)
    assert torch.isfinite(out).all()
    for b in range(batch):
        n = int(lengths[b])
        row = out[b] if out.dim() == 2 else out[b, :n]
        if n == 0:
            assert not out[b].any()
            continue
        alone = layer(queries[b : b + 1], keys[b : b + 1, :n])[0]
        torch.testing.assert_close(row, alone)
        if out.dim() == 3:
            assert not out[b, n:].any()


def test_dmr_padding_and_all_padding_rows():
    torch.manual_seed(0)
    dmr = DMR_U2I(4, seq_len=6, user_dim=3, item_dim=2)
    items, seq = torch.randn(3, 2), torch.randn(3, 6, 3)
    mask = torch.tensor(
        [[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 1]], dtype=torch.bool
    )
    out = dmr(items, seq, mask)
    noisy = seq.clone()
    noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), 3)
    torch.testing.assert_close(dmr(items, noisy, mask), out)
    assert torch.equal(out[1], torch.zeros(2))
    alpha = dmr.attention(seq, mask)
    assert torch.equal(alpha[~mask], torch.zeros(int((~mask).sum())))
    torch.testing.assert_close(alpha.sum(1), torch.tensor([1.0, 0.0, 1.0]))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in dmr.parameters())


def test_all_padding_gradients_are_finite():
    for kind, make in LAYERS.items():
        layer = make()
        queries, keys = _inputs(kind, 2, 5)
        keys.requires_grad_()
        out = layer(queries, keys, torch.zeros(2, 5))
        assert not out.any(), kind
        out.sum().backward()
        assert torch.isfinite(keys.grad).all(), kind


def test_float_mask_keeps_values_at_least_one():
    din = DIN([4, 1], embed_dim=3)
    q, k = torch.randn(2, 3), torch.randn(2, 4, 3)
    float_mask = torch.tensor([[1.0, 0.5, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(din(q, k, float_mask), din(q, k, float_mask >= 1))


# ------------------------------------------------------- DMR specifics
def test_dmr_default_prelu_and_names():
    dmr = DMR_U2I(4, seq_len=5, user_dim=3, item_dim=2)
    names = monolith_variables(dmr)
    assert names["dense/p_re_lu/alpha"].shape == (2,)
    assert sorted(names) == sorted(
        [
            "pos_emb",
            "emb_weight",
            "z_weight",
            "bias",
            "dense/kernel",
            "dense/bias",
            "dense/p_re_lu/alpha",
        ]
    )
    assert torch.equal(dmr.z_weight, torch.ones(4, 1))
    assert dmr(torch.randn(2, 2), torch.randn(2, 5, 3)).shape == (2, 2)


# ------------------------------------------------------------ bad input
def test_bad_input_messages():
    din = DIN([4, 1], embed_dim=3)
    with pytest.raises(
        ValueError, match=r"DIN\(din\): keys must have shape \(\*, \*, 3\), got \(2, 5, 4\)"
    ):
        din(torch.randn(2, 3), torch.randn(2, 5, 4))
    with pytest.raises(
        ValueError, match=r"DIN\(din\): queries must have shape \(2, 3\), got \(2, 4\)"
    ):
        din(torch.randn(2, 4), torch.randn(2, 5, 3))
    with pytest.raises(
        ValueError, match=r"DIN\(din\): mask must have shape \(2, 5\), got \(2, 4\)"
    ):
        din(torch.randn(2, 3), torch.randn(2, 5, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="hidden_units must end in 1"):
        DIN([4, 2], embed_dim=3)
    with pytest.raises(ValueError, match="hidden_units must be a non-empty list"):
        DIN([], embed_dim=3)
    dien = DIEN(4, input_dim=3)
    with pytest.raises(
        ValueError, match=r"DIEN\(dien\): queries must have shape \(2, 4\), got \(2, 3\)"
    ):
        dien(torch.randn(2, 3), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="att_type must be 'AGRU' or 'AUGRU'"):
        DIEN(4, att_type="GRU", input_dim=3)
    dmr = DMR_U2I(4, seq_len=5, user_dim=3, item_dim=2)
    with pytest.raises(
        ValueError,
        match=r"DMR_U2I\(dmr__u2i\): user_seq must have shape \(\*, 5, 3\), got \(2, 6, 3\)",
    ):
        dmr(torch.randn(2, 2), torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match=r"items must have shape \(2, 2\), got \(2, 3\)"):
        dmr(torch.randn(2, 3), torch.randn(2, 5, 3))


# ------------------------------------------------- dtypes, compile, export
def _all_three():
    return [
        (DIN([8, 4, 1], activation="relu", embed_dim=6), (torch.randn(3, 6), torch.randn(3, 7, 6))),
        (DIEN(6, att_type="AUGRU", input_dim=5), (torch.randn(3, 6), torch.randn(3, 7, 5))),
        (DMR_U2I(4, seq_len=7, user_dim=5, item_dim=3), (torch.randn(3, 3), torch.randn(3, 7, 5))),
    ]


# Relative rounding step of each format (2^-11, 2^-8) times ~8 for the
# accumulated rounding of a few layers, on outputs of size ~1.
LOW_PRECISION_BOUND = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward_with_masks(dtype):
    for layer, args in _all_three():
        mask = torch.tensor([[1] * 7, [0] * 7, [1, 1, 0, 0, 1, 0, 0]], dtype=torch.bool)
        with torch.no_grad():
            want = layer(*args, mask)
            out = layer.to(dtype)(*(a.to(dtype) for a in args), mask)
        assert out.dtype == dtype, type(layer).__name__
        bound = LOW_PRECISION_BOUND[dtype] * max(1.0, want.abs().max().item())
        torch.testing.assert_close(out.float(), want, atol=bound, rtol=0)
        assert not out[1].any()


def test_torch_export_on_fixed_shapes():
    for layer, args in _all_three():
        layer.eval()
        mask = torch.ones(3, 7, dtype=torch.bool)
        exported = torch.export.export(layer, (*args, mask))
        torch.testing.assert_close(exported.module()(*args, mask), layer(*args, mask))


def test_torch_compile_matches_eager_with_gradients():
    mask = torch.tensor([[1] * 7, [0] * 7, [1, 1, 0, 0, 1, 0, 0]], dtype=torch.bool)
    for layer, args in _all_three():
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=False)
        keys = args[1].clone().requires_grad_()
        eager_keys = args[1].clone().requires_grad_()
        out = compiled(args[0], keys, mask)
        want = layer(args[0], eager_keys, mask)
        torch.testing.assert_close(out, want)
        out.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(keys.grad, eager_keys.grad)


def test_configs_round_trip_and_params():
    for layer, _ in _all_three():
        config = json.loads(json.dumps(layer.get_config()))
        assert type(layer).from_config(config).get_config() == config
    p = DIEN.params()
    p.num_units, p.input_dim = 3, 2
    assert p.instantiate()(torch.randn(1, 3), torch.randn(1, 4, 2)).shape == (1, 3)


# ------------------------------------------------- DIEN auxiliary loss
def test_dien_auxiliary_loss_formula_and_masking():
    torch.manual_seed(0)
    dien = DIEN(4, input_dim=4)
    queries, keys, negs = torch.randn(3, 4), torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    dien(queries, keys)
    assert dien.losses == []
    dien(queries, keys, neg_keys=negs)
    (aux,) = dien.losses
    from monolith_layers import gru_sequence

    h, _ = gru_sequence(dien.gru_cell, keys)
    pos = torch.sigmoid((h[:, :-1] * keys[:, 1:]).sum(-1))
    neg = torch.sigmoid((h[:, :-1] * negs[:, 1:]).sum(-1))
    want = -(torch.log(pos) + torch.log(1 - neg)).mean()
    torch.testing.assert_close(aux, want)
    aux.backward()
    assert dien.gru_cell.kernel.grad is not None and dien.augru_cell.gates_kernel.grad is None

    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0] * 6, [1] * 6], dtype=torch.bool)
    dien(queries, keys, mask, neg_keys=negs + 100 * (~mask).unsqueeze(-1))
    (masked,) = dien.losses
    alone = [
        dien.auxiliary_loss(*_interest_and_keys(dien, keys, negs, b, n))
        for b, n in ((0, 3), (2, 6))
    ]
    torch.testing.assert_close(masked, (alone[0] * 2 + alone[1] * 5) / 7)
    dien(queries, keys, torch.zeros(3, 6), neg_keys=negs)
    assert dien.losses[0].item() == 0.0


def _interest_and_keys(dien, keys, negs, b, n):
    from monolith_layers import gru_sequence

    h, _ = gru_sequence(dien.gru_cell, keys[b : b + 1, :n])
    return h, keys[b : b + 1, :n], negs[b : b + 1, :n]


def test_dien_auxiliary_loss_needs_equal_widths():
    dien = DIEN(4, input_dim=3)
    with pytest.raises(ValueError, match="needs input_dim == num_units"):
        dien(torch.randn(2, 4), torch.randn(2, 5, 3), neg_keys=torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"neg_keys must have shape \(2, 5, 4\)"):
        DIEN(4, input_dim=4)(torch.randn(2, 4), torch.randn(2, 5, 4), neg_keys=torch.randn(2, 4, 4))
