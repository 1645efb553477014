"""Hostile inputs and PyTorch idioms: padding that holds NaN, empty batches and
histories, meta-device construction, the fast-path switch, dtype and name
errors, config capture, double backward, summaries and deep copies."""

import copy
import os
import subprocess
import sys
import warnings

import matplotlib
import numpy as np
import pytest
import torch

import monolith_layers as ml
from monolith_layers import (
    DIEN,
    DIN,
    DMR_U2I,
    MLP,
    AGRUCell,
    AutoInt,
    BatchNorm,
    Dense,
    KerasGRUCell,
    SeNet,
    dynamic_rnn_with_attention,
    gru_sequence,
    iRazor,
    merge_tensor_list,
    static_rnn_with_attention,
)

B, T, E = 4, 6, 5
LENGTHS = torch.tensor([6, 3, 1, 0])
MASK = torch.arange(T) < LENGTHS.unsqueeze(1)  # left-aligned, one all-padding row


def _poisoned(keys, mask, value):
    """keys with every padded slot overwritten by ``value`` (nan / inf)."""
    return torch.where(mask.unsqueeze(-1), keys, torch.full_like(keys, value))


def _sequence_cases():
    torch.manual_seed(1)
    return {
        "din": (DIN([8, 4, 1], activation="sigmoid", embed_dim=E), torch.randn(B, E)),
        "din_elementwise": (
            DIN([4, 1], activation="relu", mode="elementwise", decay=True, embed_dim=E),
            torch.randn(B, E),
        ),
        "dien_agru": (DIEN(E, input_dim=E), torch.randn(B, E)),
        "dien_augru": (
            DIEN(E, att_type="AUGRU", activation="tanh", input_dim=E),
            torch.randn(B, E),
        ),
        "dmr": (DMR_U2I(3, seq_len=T, user_dim=E, item_dim=E), torch.randn(B, E)),
    }


# ------------------------------------------------------------- padding poison
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", sorted(_sequence_cases()))
def test_padding_holding_nan_or_inf_changes_nothing(name, poison, fast):
    layer, queries = _sequence_cases()[name]
    keys = torch.randn(B, T, E)
    with ml.fused(fast):
        results = []
        for k in (keys, _poisoned(keys, MASK, poison)):
            k = k.clone().requires_grad_()
            out = layer(queries, k, MASK)
            out.backward(torch.ones_like(out))
            grads = [p.grad.clone() for p in layer.parameters()] + [k.grad]
            layer.zero_grad()
            results.append((out.detach(), grads))
    (clean, clean_grads), (dirty, dirty_grads) = results
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    for got, want in zip(dirty_grads, clean_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.isfinite(dirty).all()


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("att_type", ["AGRU", "AUGRU", None])
def test_attention_rnn_ignores_nan_in_padded_inputs_and_scores(att_type, fast):
    cell = AGRUCell(3, att_type=att_type or "AGRU", input_dim=E)
    x, att = torch.randn(B, T, E), torch.rand(B, T)
    helper = dynamic_rnn_with_attention if fast else static_rnn_with_attention
    outs = []
    for xs, scores in (
        (x, att),
        (_poisoned(x, MASK, float("nan")), att.masked_fill(~MASK, float("nan"))),
    ):
        xs = xs.clone().requires_grad_()
        out, final = helper(cell, xs, None if att_type is None else scores, mask=MASK)
        (out.sum() + final.sum()).backward()
        outs.append((out.detach(), final.detach(), xs.grad, cell.gates_kernel.grad.clone()))
        cell.zero_grad()
    for got, want in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_gru_sequence_and_autoint_ignore_nan_padding():
    cell = KerasGRUCell(3, input_dim=E)
    x = torch.randn(B, T, E)
    for fast in (True, False):
        want = gru_sequence(cell, x, mask=MASK, fast=fast)
        got = gru_sequence(cell, _poisoned(x, MASK, float("nan")), mask=MASK, fast=fast)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    fields = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    embeds = torch.randn(4, 3, E)
    layer = AutoInt(layer_num=2, out_type="stack")
    want = layer(embeds, fields)
    got = layer(_poisoned(embeds, fields, float("nan")), fields)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not got[2].any()


# --------------------------------------------------------------- empty inputs
@pytest.mark.parametrize("name", sorted(_sequence_cases()))
def test_empty_batch_and_empty_history(name):
    layer, _ = _sequence_cases()[name]
    steps = [T] if name == "dmr" else [0, T]
    for batch in (0, 3):
        for t in steps:
            queries, keys = torch.randn(batch, E), torch.randn(batch, t, E)
            mask = torch.zeros(batch, t, dtype=torch.bool)
            out = layer(queries, keys, mask)
            expected = (
                (batch, t, E) if getattr(layer, "mode", "sum") == "elementwise" else (batch, E)
            )
            assert out.shape == expected and not out.any() and torch.isfinite(out).all()


def test_feature_transforms_on_empty_batches():
    embeds = torch.randn(0, 3, 4)
    assert AutoInt()(embeds).shape == (0, 12)
    assert AutoInt()(torch.randn(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)).shape == (2, 0)
    assert SeNet(3, 2)(embeds).shape == (0, 12)
    assert SeNet(3, 2)([torch.randn(0, 2), torch.randn(0, 3), torch.randn(0, 1)]).shape == (0, 6)
    assert iRazor([0, 1, 4], num_feature=3)(embeds).shape == (0, 12)
    assert merge_tensor_list(torch.randn(0, 6), "stack", num_feature=3).shape == (0, 3, 2)


# ------------------------------------------------------------ PyTorch idioms
def _every_layer():
    return {
        "din": lambda **f: DIN([8, 1], activation="prelu", embed_dim=E, **f),
        "dien": lambda **f: DIEN(E, input_dim=E, **f),
        "dmr": lambda **f: DMR_U2I(3, seq_len=T, user_dim=E, item_dim=E, **f),
        "agru": lambda **f: AGRUCell(3, activation="prelu", input_dim=E, **f),
        "gru": lambda **f: KerasGRUCell(3, input_dim=E, **f),
        "mlp": lambda **f: MLP([4, 1], enable_batch_normalization=True, input_dim=E, **f),
        "dense": lambda **f: Dense(
            3, allow_kernel_norm=True, kernel_norm_trainable=True, input_dim=E, **f
        ),
        "batch_norm": lambda **f: BatchNorm(E, **f),
        "irazor": lambda **f: iRazor([0, 2, 5], feature_weight=[1, 2, 3], num_feature=3, **f),
        "senet": lambda **f: SeNet(3, 2, **f),
        "autoint": lambda **f: AutoInt(**f),
    }


@pytest.mark.parametrize("name", sorted(_every_layer()))
def test_meta_device_then_to_empty_and_reset_parameters(name):
    build = _every_layer()[name]
    with torch.device("meta"):
        layer = build()
    assert all(t.is_meta for t in layer.state_dict().values())
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    reference = build()
    for (key, got), want in zip(
        layer.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.isfinite(got).all(), key
        if key.endswith(("bias", "moving_mean", "moving_variance", "gamma", "beta", "alpha")):
            torch.testing.assert_close(got, want)  # constant initialisers give the same values
    for key, got in dict(layer.named_buffers()).items():  # non-persistent buffers too
        torch.testing.assert_close(got, dict(reference.named_buffers())[key])
    if name == "dense":  # g is drawn from the fresh kernel's column norms
        torch.testing.assert_close(layer.trainable_kernel_norm, layer.kernel.norm(dim=0))


@pytest.mark.parametrize("name", sorted(_every_layer()))
def test_factory_kwargs_and_reset_parameters(name):
    build = _every_layer()[name]
    layer = build(dtype=torch.float64, device="cpu")
    assert all(
        t.dtype == torch.float64 for t in layer.state_dict().values() if t.is_floating_point()
    )
    assert "dtype" not in layer.get_config() and "device" not in layer.get_config()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.reset_parameters()
    drawn = ("kernel", "pos_emb", "emb_weight", "nas_weight", "attention_weight")
    random = [k for k in before if k.endswith(drawn)]
    assert all(not torch.equal(before[k], layer.state_dict()[k]) for k in random)
    assert repr(layer).count("name=") >= 1


def test_extra_repr_shows_sizes_and_switches():
    assert "embed_dim=5, hidden_units=[8, 1], mode='sum'" in repr(DIN([8, 1], embed_dim=5))
    assert "5, 3, att_type='AUGRU', kernel_activation=True" in repr(
        AGRUCell(3, att_type="augru", input_dim=5)
    )
    assert "kernel_activation=False" in repr(AGRUCell(3, activation="elu", input_dim=5))
    assert "5, 3, bias=True, kernel_norm=False" in repr(Dense(3, input_dim=5))


def test_prelu_inside_recurrent_cells_is_a_monolith_variable():
    assert "p_re_lu/alpha" in AGRUCell(3, activation="prelu", input_dim=2).monolith_variables()
    assert "p_re_lu/alpha" in KerasGRUCell(3, activation="prelu", input_dim=2).monolith_variables()


def test_activation_identity_keeps_both_names():
    for name in ("linear", "identity", "Identity"):
        assert type(ml.activations.get(name)) is ml.activations.Identity
    assert ml.activations.name_of(ml.activations.Identity()) == "linear"


# ------------------------------------------------------- constructor capture
def test_binding_errors_name_the_layer():
    with pytest.raises(TypeError, match=r"DIN\(\): missing a required argument: 'embed_dim'"):
        DIN([8, 1])
    with pytest.raises(TypeError, match=r"MLP\(\): got an unexpected keyword argument 'units'"):
        MLP([1], units=3, input_dim=2)


def test_variadic_subclass_must_declare_its_config():
    with pytest.raises(TypeError, match=r"Wrapped: Layer subclasses record .* \*args/\*\*kwargs"):

        class Wrapped(DIN):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)

    class Scaled(DIN):  # names its arguments: round-trips
        def __init__(self, hidden_units, scale: float = 2.0, *, embed_dim: int):
            super().__init__(hidden_units, embed_dim=embed_dim)
            self.scale = scale

    layer = Scaled([4, 1], 3.0, embed_dim=2)
    assert layer.get_config() == {"hidden_units": [4, 1], "scale": 3.0, "embed_dim": 2}
    assert Scaled.from_config(layer.get_config()).scale == 3.0

    class Custom(DIN):  # variadic, but says how to serialise itself
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

        def get_config(self):
            return {"hidden_units": [4, 1], "embed_dim": self.embed_dim}

    assert Custom.from_config(Custom([4, 1], embed_dim=3).get_config()).embed_dim == 3


def test_params_raise_on_unset_required_arguments():
    p = DIN.params()
    with pytest.raises(AttributeError, match="required parameter 'embed_dim' is not set"):
        _ = p.embed_dim
    with pytest.raises(ValueError, match=r"required parameters \['hidden_units', 'embed_dim'\]"):
        p.instantiate()
    p.hidden_units, p.embed_dim = [4, 1], 3
    assert p.embed_dim == 3 and p.instantiate().embed_dim == 3


# ------------------------------------------------------------ fast-path switch
def test_set_fused_switches_every_fast_path(monkeypatch):
    din = DIN([4, 1], embed_dim=E)
    monkeypatch.setattr(din, "attention_logits_reference", lambda *a: 1 / 0)
    cell = AGRUCell(3, input_dim=E)
    previous = ml.set_fused(False)
    try:
        assert not ml.fused_enabled()
        with ml.which_paths() as ran:
            dynamic_rnn_with_attention(cell, torch.randn(2, 3, E), torch.rand(2, 3))
            gru_sequence(KerasGRUCell(3, input_dim=E), torch.randn(2, 3, E))
            with pytest.raises(ZeroDivisionError):  # the reference concat path ran
                din(torch.randn(2, E), torch.randn(2, 3, E))
    finally:
        ml.set_fused(previous)
    assert [op for op, _ in ran] == ["agru", "gru", "din_attention"]
    assert all(path.startswith("reference: switched off") for _, path in ran)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        ml.set_fused("no")


def test_environment_variable_turns_the_fast_paths_off():
    code = "import monolith_layers as m; print(m.fused_enabled())"
    env = dict(os.environ, MONOLITH_LAYERS_FUSED="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_fast_and_reference_din_agree():
    din = DIN([8, 4, 1], activation="relu", embed_dim=E)
    args = (torch.randn(B, E), torch.randn(B, T, E), MASK)
    with ml.fused(False):
        want = din(*args)
    torch.testing.assert_close(din(*args), want)


def test_double_backward_raises_a_clear_error():
    cell = AGRUCell(3, input_dim=E)
    x = torch.randn(2, 4, E, requires_grad=True)
    out, _ = dynamic_rnn_with_attention(cell, x, torch.rand(2, 4))
    with pytest.raises(RuntimeError, match="not twice differentiable.*set_fused\\(False\\)"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    with ml.fused(False):  # the reference loop supports it
        out, _ = dynamic_rnn_with_attention(cell, x, torch.rand(2, 4))
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        g.sum().backward()
    assert x.grad is not None


# ------------------------------------------------------------ dtypes and names
def test_dtype_mismatch_is_a_named_error_on_every_path():
    cell = AGRUCell(3, input_dim=E)
    x64 = torch.randn(2, 4, E, dtype=torch.float64)
    for fast in (True, False):
        with ml.fused(fast):
            with pytest.raises(TypeError, match="inputs has dtype torch.float64 but the layer's"):
                dynamic_rnn_with_attention(cell, x64, torch.rand(2, 4))
            with pytest.raises(TypeError, match="att_scores has dtype torch.float64"):
                dynamic_rnn_with_attention(cell, x64.float(), torch.rand(2, 4).double())
            with pytest.raises(TypeError, match=r"DIN\(din\): keys has dtype torch.float64"):
                DIN([4, 1], embed_dim=E)(torch.randn(2, E), x64)
    with pytest.raises(TypeError, match="keys must be a floating-point tensor, got torch.int64"):
        DIEN(E, input_dim=E)(torch.randn(2, E), torch.ones(2, 4, E, dtype=torch.long))
    with pytest.raises(TypeError, match="embeds must be a floating-point tensor"):
        AutoInt()(torch.ones(2, 3, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"Dense\(dense\): x has dtype torch.float16"):
        Dense(3, input_dim=2)(torch.randn(1, 2, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"gru_sequence: init_state has dtype torch.float64"):
        gru_sequence(KerasGRUCell(3, input_dim=E), torch.randn(2, 4, E), torch.zeros(2, 3).double())


def test_unknown_names_name_the_layer_and_argument():
    cases = [
        (
            lambda: DIN([4, 1], activation="swoosh", embed_dim=2),
            r"DIN\(din\): activation: unknown activation 'swoosh'",
        ),
        (
            lambda: DIEN(2, initializer="he_unifrom", input_dim=2),
            r"DIEN\(dien\): initializer: unknown initializer",
        ),
        (
            lambda: MLP([4, 1], activations=["relu", "rleu"], input_dim=2),
            r"MLP\(mlp\): activations\[1\]: unknown",
        ),
        (
            lambda: MLP([4, 1], initializers=["zeros", "x"], input_dim=2),
            r"initializers\[1\]: unknown initializer 'x'",
        ),
        (
            lambda: Dense(2, kernel_regularizer="l3", input_dim=2),
            r"Dense\(dense\): kernel_regularizer: unknown",
        ),
        (
            lambda: AGRUCell(2, regularizer="l3", input_dim=2),
            r"AGRUCell\(agru_cell\): regularizer: unknown",
        ),
        (lambda: SeNet(3, 2, initializer="nope"), r"SeNet\(se_net\): initializer: unknown"),
        (
            lambda: DIN([4, 1], mode="max", embed_dim=2),
            r"mode must be one of \['sum', 'elementwise'\]",
        ),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()


def test_numeric_arguments_are_validated():
    with pytest.raises(ValueError, match=r"BatchNorm\(batch_norm\): epsilon must be > 0, got -0.1"):
        BatchNorm(3, epsilon=-0.1)
    with pytest.raises(ValueError, match="momentum must be a finite number, got nan"):
        BatchNorm(3, momentum=float("nan"))
    with pytest.raises(ValueError, match="num_feature must be a positive int or None, got 0"):
        merge_tensor_list(torch.randn(2, 6), "stack", num_feature=0)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        DIN([4, 1], embed_dim=2, dtype=torch.int64)


# ---------------------------------------------------------- summaries, plots
class _Writer:
    def __init__(self):
        self.tags = []

    def add_histogram(self, tag, values, global_step=None):
        self.tags.append(tag)


def test_deepcopy_and_pickle_after_enable_summaries():
    din = DIN([4, 1], embed_dim=E)
    writer = _Writer()
    ml.enable_summaries(din, writer=writer)
    clone = copy.deepcopy(din)
    torch.save(din.state_dict(), os.devnull)
    clone(torch.randn(2, E), torch.randn(2, 3, E))
    assert writer.tags == []  # a copy starts with summaries off
    din(torch.randn(2, E), torch.randn(2, 3, E))
    assert writer.tags == ["din/din_attention_outputs"]
    ml.disable_summaries(din)
    din(torch.randn(2, E), torch.randn(2, 3, E))
    assert len(writer.tags) == 1


def test_plotting_leaves_the_matplotlib_backend_alone(tmp_path):
    before = matplotlib.get_backend()
    layer = iRazor([0, 1, 3], num_feature=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = ml.plotting.plot_dimension_selection(layer, path=tmp_path / "sel.png")
    assert matplotlib.get_backend() == before
    assert (tmp_path / "sel.png").stat().st_size > 0 and fig.axes


def test_no_layer_asserts_on_user_input():
    # Every check on user input is an exception, so `python -O` keeps them.
    import ast
    import pathlib

    root = pathlib.Path(ml.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Assert)], path


def test_numpy_feature_weight_and_tensor_feature_weight_agree():
    a = iRazor([0, 2], feature_weight=np.array([1.0, 2.0]), num_feature=2)
    b = iRazor([0, 2], feature_weight=torch.tensor([1.0, 2.0]), num_feature=2)
    torch.testing.assert_close(a.feature_weight, b.feature_weight)


# ------------------------------------------------- bad inputs reaching users raw
@pytest.mark.parametrize(
    "tensors, kwargs, message",
    [
        (
            [torch.zeros(2, 3), torch.zeros(2, 4, 3)],
            {},
            "'concat' needs tensors of one rank; tensor_list[0] has shape (2, 3), "
            "tensor_list[1] has shape (2, 4, 3)",
        ),
        (
            [torch.zeros(2, 3), torch.zeros(3, 3)],
            {},
            "'concat' along axis 1 needs equal sizes elsewhere",
        ),
        (
            [torch.zeros(2, 3), torch.zeros(2, 3)],
            {"axis": 5},
            "axis must be in [-2, 1] for tensors of rank 2, got 5",
        ),
        (
            [torch.zeros(2, 3), torch.zeros(2, 3)],
            {"merge_type": "stack", "axis": -4},
            "axis must be in [-3, 2] for tensors of rank 3, got -4",
        ),
        ([torch.zeros(2, 3, 4)], {"merge_type": None, "axis": 3}, "axis must be in [-3, 2]"),
    ],
)
def test_merge_tensor_list_names_bad_shapes_and_axes(tensors, kwargs, message):
    with pytest.raises(ValueError) as caught:
        merge_tensor_list(tensors, **kwargs)
    assert str(caught.value).startswith("merge_tensor_list: ")
    assert message in str(caught.value)


def test_merge_tensor_list_still_takes_every_valid_axis():
    pair = [torch.randn(2, 3), torch.randn(2, 3)]
    for axis in (-2, -1, 0, 1):
        assert torch.equal(merge_tensor_list(pair, axis=axis), torch.cat(pair, dim=axis))
    for axis in (-3, 2):
        stacked = merge_tensor_list(pair, merge_type="stack", axis=axis)
        assert torch.equal(stacked, torch.stack(pair, dim=axis))


def test_from_monolith_names_a_missing_config_and_a_bad_input_shape():
    from monolith_layers import from_monolith

    with pytest.raises(TypeError, match=r"from_monolith: config must be the dict .* got NoneType"):
        from_monolith("DIN", None, input_shape=[(None, 8), (None, 5, 8)])
    config = MLP([4, 1], input_dim=3).get_config()
    with pytest.raises(TypeError, match=r"input_shape must be a shape .* got int 5"):
        from_monolith("MLP", config, input_shape=5)


@pytest.mark.parametrize("name", ["din", "dien_agru", "dmr"])
def test_a_float_mask_holding_nan_is_a_named_error(name):
    layer, query = _sequence_cases()[name]
    keys = torch.randn(B, T, E)
    mask = MASK.float()
    mask[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"mask holds NaN at 1 positions"):
        layer(query, keys, mask)
    # The same float mask without the NaN means what the bool mask means.
    assert torch.equal(layer(query, keys, MASK.float()), layer(query, keys, MASK))
