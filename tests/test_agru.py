import json
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_helpers import needs_kernels
from parity import Case

import monolith_layers as ml
from monolith_layers import AGRUCell, dynamic_rnn_with_attention, static_rnn_with_attention


def _cell_from_case(case, input_dim):
    shapes = [(None, input_dim), (None, case.meta["ctor_kwargs"]["units"]), (None, 1)]
    return case.build("AGRUCell", case.meta["ctor_kwargs"], shapes)


@pytest.mark.parametrize("name", ["agru_cell_agru", "agru_cell_augru"])
def test_cell_parity(name):
    case = Case(name)
    inputs = case.inputs
    cell = _cell_from_case(case, inputs["x"].shape[1])
    out, new_state = cell(inputs["x"], inputs["state"], inputs["att_score"])
    case.check(cell, inputs, {"outputs": out, "new_state": new_state})


def test_cell_without_score_parity():
    case = Case("agru_cell_no_att_via_call")
    inputs = case.inputs
    cell = _cell_from_case(case, inputs["x"].shape[1])
    out, new_state = cell(inputs["x"], inputs["state"])
    case.check(cell, inputs, {"outputs": out, "new_state": new_state})


@pytest.mark.parametrize("name", ["agru_dynamic_rnn", "agru_static_rnn_augru"])
@pytest.mark.parametrize("helper", [dynamic_rnn_with_attention, static_rnn_with_attention])
def test_rnn_helpers_parity(name, helper):
    case = Case(name)
    case.check(*run_rnn_helper(case, helper))


def run_rnn_helper(case, helper=dynamic_rnn_with_attention):
    """(cell, inputs, outputs) of an RNN-helper fixture, for :meth:`Case.check`."""
    inputs = case.inputs
    cell = _cell_from_case(case, inputs["inputs"].shape[2])
    outputs, final = helper(cell, inputs["inputs"], inputs["att_scores"])
    return cell, inputs, {"outputs": outputs, "final_state": final}


def test_defaults_and_weights():
    cell = AGRUCell(4, input_dim=3)
    assert cell.att_type == "AGRU" and type(cell.activation).__name__ == "Tanh"
    assert cell.gates_kernel.shape == (7, 8) and cell.candidate_kernel.shape == (7, 4)
    assert torch.equal(cell.gates_bias, torch.ones(8)) and torch.equal(
        cell.candidate_bias, torch.ones(4)
    )
    assert sorted(cell.monolith_variables()) == [
        "candidate/bias",
        "candidate/kernel",
        "gates/bias",
        "gates/kernel",
    ]
    assert cell.state_size == cell.output_size == 4
    zero = cell.zero_state(5, dtype=torch.float64)
    assert zero.shape == (5, 4) and zero.dtype == torch.float64 and not zero.any()
    assert AGRUCell(2, att_type="augru", input_dim=1).att_type == "AUGRU"
    cell = AGRUCell(2, regularizer="l2", input_dim=1)
    assert len(cell.losses) == 4


def _gates_and_candidate(cell, x, h):
    w = cell.gates_kernel
    r, u = torch.sigmoid(torch.cat([x, h], 1) @ w + cell.gates_bias).chunk(2, dim=1)
    c = torch.tanh(torch.cat([x, r * h], 1) @ cell.candidate_kernel + cell.candidate_bias)
    return u, c


def test_every_update_rule_follows_its_formula():
    # The gate convention flips (Monolith quirk): AUGRU keeps u' * h + (1 - u') * c
    # with u' = (1 - a) u, while the plain update is (1 - u) * h + u * c.
    x, h, a = torch.randn(4, 2), torch.randn(4, 3), torch.rand(4, 1)
    for att_type in ("AGRU", "AUGRU"):
        cell = AGRUCell(3, att_type=att_type, input_dim=2)
        u, c = _gates_and_candidate(cell, x, h)
        torch.testing.assert_close(cell(x, h)[0], (1 - u) * h + u * c)
        damped = (1 - a) * u
        want = damped * h + (1 - damped) * c if att_type == "AUGRU" else (1 - a) * h + a * c
        torch.testing.assert_close(cell(x, h, a)[0], want)


def test_config_round_trip_and_params():
    cell = AGRUCell(
        4, att_type="AUGRU", activation="sigmoid", initializer="glorot_normal", input_dim=3
    )
    config = json.loads(json.dumps(cell.get_config()))
    assert AGRUCell.from_config(config).get_config() == config
    p = AGRUCell.params()
    p.units, p.input_dim = 2, 5
    assert p.instantiate()(torch.randn(1, 5), torch.randn(1, 2))[0].shape == (1, 2)


def test_bad_input():
    with pytest.raises(ValueError, match="att_type must be 'AGRU' or 'AUGRU', got 'GRU'"):
        AGRUCell(3, att_type="GRU", input_dim=2)
    cell = AGRUCell(3, input_dim=2)
    with pytest.raises(
        ValueError, match=r"AGRUCell\(agru_cell\): x must have shape \(\*, 2\), got \(4, 5\)"
    ):
        cell(torch.randn(4, 5), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"state must have shape \(4, 3\), got \(4, 2\)"):
        cell(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"att_score must have shape \(4, 1\), got \(4, 2\)"):
        cell(torch.randn(4, 2), torch.randn(4, 3), torch.randn(4, 2))
    x = torch.randn(4, 6, 2)
    for helper in (static_rnn_with_attention, dynamic_rnn_with_attention):
        name = helper.__name__
        with pytest.raises(
            ValueError, match=rf"{name}: att_scores must have shape \(4, 6\), got \(4, 5\)"
        ):
            helper(cell, x, torch.rand(4, 5))
        with pytest.raises(
            ValueError, match=rf"{name}: inputs must have shape \(\*, \*, 2\), got \(4, 6\)"
        ):
            helper(cell, torch.randn(4, 6), torch.rand(4, 6))
        with pytest.raises(ValueError, match=rf"{name}: init_state must have shape \(4, 3\)"):
            helper(cell, x, torch.rand(4, 6), init_state=torch.zeros(3, 3))
        with pytest.raises(
            ValueError, match=rf"{name}: mask must have shape \(4, 6\), got \(6, 4\)"
        ):
            helper(cell, x, torch.rand(4, 6), mask=torch.ones(6, 4))
        with pytest.raises(TypeError, match=rf"{name}: cell must be an AGRUCell"):
            helper(torch.nn.GRUCell(2, 3), x, torch.rand(4, 6))


def test_zero_state_follows_inputs_dtype():
    cell = AGRUCell(3, input_dim=2).double()
    outputs, final = dynamic_rnn_with_attention(
        cell, torch.randn(2, 4, 2, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64)
    )
    assert outputs.dtype == final.dtype == torch.float64


# ------------------------------------------------ fast path vs the reference
def _compare(cell, x, att, h0, mask):
    ref_out, ref_final = static_rnn_with_attention(cell, x, att, h0, mask)
    out, final = dynamic_rnn_with_attention(cell, x, att, h0, mask)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(final, ref_final)
    co, cf = torch.randn_like(out), torch.randn_like(final)
    leaves = [t for t in (x, att, h0) if t is not None and t.requires_grad] + list(
        cell.parameters()
    )
    want = torch.autograd.grad((ref_out * co).sum() + (ref_final * cf).sum(), leaves)
    got = torch.autograd.grad((out * co).sum() + (final * cf).sum(), leaves)
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 5),
    steps=st.integers(1, 6),
    dim=st.integers(1, 4),
    units=st.integers(1, 5),
    att_type=st.sampled_from(["AGRU", "AUGRU", None]),
    activation=st.sampled_from(["tanh", "sigmoid", "relu", "linear"]),
    with_state=st.booleans(),
    with_mask=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fast_path_equals_reference(
    batch, steps, dim, units, att_type, activation, with_state, with_mask, seed
):
    torch.manual_seed(seed)
    cell = AGRUCell(
        units, att_type=att_type or "AGRU", activation=activation, input_dim=dim
    ).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(batch, steps, dim, dtype=torch.float64, requires_grad=True)
    att = (
        None
        if att_type is None
        else torch.rand(batch, steps, dtype=torch.float64, requires_grad=True)
    )
    h0 = torch.randn(batch, units, dtype=torch.float64, requires_grad=True) if with_state else None
    mask = torch.rand(batch, steps) > 0.4 if with_mask else None
    _compare(cell, x, att, h0, mask)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    steps=st.integers(1, 6),
    att_type=st.sampled_from(["AGRU", "AUGRU", None]),
    seed=st.integers(0, 2**16),
)
def test_padding_never_changes_a_row(batch, steps, att_type, seed):
    torch.manual_seed(seed)
    cell = AGRUCell(3, att_type=att_type or "AGRU", input_dim=2)
    lengths = torch.randint(0, steps + 1, (batch,))
    x = torch.randn(batch, steps, 2)
    att = torch.rand(batch, steps)
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    outputs, final = dynamic_rnn_with_attention(
        cell, x, None if att_type is None else att, mask=mask
    )
    for b in range(batch):
        n = int(lengths[b])
        if n == 0:
            assert torch.equal(final[b], torch.zeros(3))
            assert torch.equal(outputs[b], torch.zeros(steps, 3))
            continue
        alone_out, alone_final = dynamic_rnn_with_attention(
            cell, x[b : b + 1, :n], None if att_type is None else att[b : b + 1, :n]
        )
        torch.testing.assert_close(final[b], alone_final[0])
        torch.testing.assert_close(outputs[b, :n], alone_out[0])
        assert torch.equal(outputs[b, n:], torch.zeros(steps - n, 3))


def test_all_padding_returns_init_state():
    cell = AGRUCell(3, att_type="AUGRU", input_dim=2)
    h0 = torch.randn(2, 3)
    out, final = dynamic_rnn_with_attention(
        cell, torch.randn(2, 4, 2), torch.rand(2, 4), h0, torch.zeros(2, 4)
    )
    assert torch.equal(final, h0) and not out.any()


def test_empty_sequence():
    cell = AGRUCell(3, input_dim=2)
    for helper in (static_rnn_with_attention, dynamic_rnn_with_attention):
        out, final = helper(cell, torch.randn(2, 0, 2), torch.rand(2, 0))
        assert out.shape == (2, 0, 3) and not final.any()


# ----------------------------------------- gradcheck of the operator's backward
@needs_kernels
@pytest.mark.parametrize("mode", ["none", "AGRU", "AUGRU"])
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "linear"])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_custom_backward(mode, act, masked):
    torch.manual_seed(1)
    steps, batch, units, dim = 4, 3, 2, 3
    f64 = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(batch, steps, dim, **f64)
    gates_kernel = torch.randn(dim + units, 2 * units, **f64)
    gates_bias = torch.randn(2 * units, **f64)
    cand_kernel = torch.randn(dim + units, units, **f64)
    cand_bias = torch.randn(units, **f64)
    h0 = torch.randn(batch, units, **f64)
    att = None if mode == "none" else torch.rand(batch, steps, **f64)
    mask = (
        torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
        if masked
        else None
    )
    if act == "relu":
        x = (x.detach() + 0.5 * torch.sign(x.detach())).requires_grad_()  # keep off the kink
    weights = (gates_kernel, gates_bias, cand_kernel, cand_bias)

    def fn(x, h0, *rest):
        scores = rest[4] if att is not None else None
        return torch.ops.monolith_layers.agru(x, scores, h0, *rest[:4], mask, mode, act)

    leaves = (x, h0, *weights) + ((att,) if att is not None else ())
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5)


def test_activation_without_a_kernel_falls_back_with_one_warning(monkeypatch):
    from monolith_layers._ops import registry

    monkeypatch.setattr(registry, "_warned", set())
    cell = AGRUCell(3, activation="elu", input_dim=2)
    x, att = torch.randn(2, 4, 2), torch.rand(2, 4)
    with pytest.warns(UserWarning, match="agru: activation ELU.* has no kernel"):
        with ml.which_paths() as ran:
            out, _ = dynamic_rnn_with_attention(cell, x, att)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        dynamic_rnn_with_attention(cell, x, att)
    assert ran[0][1].startswith("reference: activation ELU")
    torch.testing.assert_close(out, static_rnn_with_attention(cell, x, att)[0])


@needs_kernels
@pytest.mark.parametrize(
    "activation",
    [
        torch.nn.Tanh(),
        torch.nn.Sigmoid(),
        torch.nn.ReLU(),
        torch.nn.Identity(),
        torch.tanh,
        torch.relu,
    ],
)
def test_torch_activations_take_the_fused_path(activation):
    cell = AGRUCell(3, activation=activation, input_dim=2)
    x, att = torch.randn(2, 4, 2), torch.rand(2, 4)
    with warnings.catch_warnings(), ml.which_paths() as ran:
        warnings.simplefilter("error")
        out, _ = dynamic_rnn_with_attention(cell, x, att)
    assert ran == [("agru", "kernel")]
    torch.testing.assert_close(out, static_rnn_with_attention(cell, x, att)[0])


def test_half_precision_forward_is_close_to_float32():
    cell = AGRUCell(4, att_type="AUGRU", input_dim=3)
    x, att = torch.randn(2, 5, 3), torch.rand(2, 5)
    want, _ = dynamic_rnn_with_attention(cell, x, att)
    out, _ = dynamic_rnn_with_attention(
        cell.to(torch.bfloat16), x.to(torch.bfloat16), att.to(torch.bfloat16)
    )
    assert out.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa (relative step 2^-8 = 0.004); five steps of
    # rounding in the state stay within 0.05 of states of size ~1.
    torch.testing.assert_close(out.float(), want, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("att_type", ["AGRU", "AUGRU", None])
@pytest.mark.parametrize("masked", [False, True])
def test_inference_path_equals_reference(att_type, masked):
    torch.manual_seed(3)
    cell = AGRUCell(4, att_type=att_type or "AGRU", input_dim=3)
    x, att = torch.randn(5, 6, 3), torch.rand(5, 6)
    mask = torch.rand(5, 6) > 0.3 if masked else None
    score = None if att_type is None else att
    want = static_rnn_with_attention(cell, x, score, mask=mask)
    with torch.no_grad():  # takes the path that keeps no per-step history
        got = dynamic_rnn_with_attention(cell, x, score, mask=mask)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_keras_gru_fast_paths_equal_reference(masked, activation):
    from monolith_layers import KerasGRUCell, gru_sequence

    torch.manual_seed(4)
    cell = KerasGRUCell(4, activation=activation, input_dim=3).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, 6, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(5, 6) > 0.3 if masked else None
    want = gru_sequence(cell, x, h0, mask, fast=False)
    got = gru_sequence(cell, x, h0, mask)
    with torch.no_grad():
        inferred = gru_sequence(cell, x, h0, mask)
    for g, i, w in zip(got, inferred, want, strict=True):
        torch.testing.assert_close(g, w)
        torch.testing.assert_close(i, w)
    cot = [torch.randn_like(w) for w in want]
    leaves = [x, h0, *cell.parameters()]
    g_want = torch.autograd.grad(sum((w * c).sum() for w, c in zip(want, cot, strict=True)), leaves)
    g_got = torch.autograd.grad(sum((g * c).sum() for g, c in zip(got, cot, strict=True)), leaves)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)


@needs_kernels
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("masked", [False, True])
def test_keras_gru_gradcheck_custom_backward(act, masked):
    torch.manual_seed(5)
    f64 = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 4, 2, **f64)
    h0 = torch.randn(3, 2, **f64)
    kernel, recurrent, bias = (torch.randn(*shape, **f64) for shape in ((2, 6), (2, 6), (2, 6)))
    mask = (
        torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
        if masked
        else None
    )

    def fn(*tensors):
        return torch.ops.monolith_layers.gru(*tensors, mask, act)

    assert torch.autograd.gradcheck(fn, (x, h0, kernel, recurrent, bias), eps=1e-6, atol=1e-5)


def test_gru_sequence_bad_input():
    from monolith_layers import KerasGRUCell, gru_sequence

    with pytest.raises(TypeError, match="gru_sequence: cell must be a KerasGRUCell, got AGRUCell"):
        gru_sequence(AGRUCell(3, input_dim=2), torch.randn(2, 4, 2))
    cell = KerasGRUCell(3, input_dim=2)
    with pytest.raises(
        ValueError, match=r"gru_sequence: inputs must have shape \(\*, \*, 2\), got \(2, 4, 3\)"
    ):
        gru_sequence(cell, torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="recurrent_activation must be sigmoid"):
        KerasGRUCell(3, recurrent_activation="hard_sigmoid", input_dim=2)
