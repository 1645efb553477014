import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import Case

from monolith_layers import AutoInt, SeNet, enable_summaries, iRazor, monolith_variables
from monolith_layers.feature_trans import rigid_masks, select_dims_from_probs


# ------------------------------------------------------------------ parity
def test_autoint_parity():
    case = Case("autoint_concat")
    inputs = case.inputs
    layer = case.build("AutoInt", case.meta["ctor_kwargs"], tuple(inputs["embeds"].shape))
    case.check(layer, inputs, {"outputs": layer(inputs["embeds"])})


def test_senet_parity():
    case = Case("senet_tensor")
    inputs = case.inputs
    layer = case.build("SeNet", case.meta["ctor_kwargs"], tuple(inputs["embeds"].shape))
    case.check(layer, inputs, {"outputs": layer(inputs["embeds"])})


def _irazor_case():
    case = Case("irazor_feature_weight")
    inputs = case.inputs
    kwargs = dict(case.meta["ctor_kwargs"])
    kwargs["feature_weight"] = kwargs["feature_weight"][
        "tf.constant"
    ]  # a tf.constant in the original
    layer = case.build("iRazor", kwargs, tuple(inputs["embeds"].shape))
    return case, inputs, layer


def test_irazor_parity_outputs_and_gradients():
    case, inputs, layer = _irazor_case()
    case.check(layer, inputs, {"outputs": layer(inputs["embeds"])})


def test_irazor_feature_weight_loss_value_and_gradient():
    case, inputs, layer = _irazor_case()
    layer(inputs["embeds"])
    (loss,) = layer.losses
    np.testing.assert_allclose(loss.item(), case.data["loss/i_razor"], rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(loss, [layer.nas_weight])
    want = case.data["grad_loss/i_razor/weight/i_razor/nas_weight:0"]
    np.testing.assert_allclose(grad.numpy(), want, rtol=1e-5, atol=1e-6)


def test_irazor_loss_is_replaced_each_forward_not_accumulated():
    layer = iRazor([0, 1, 2], feature_weight=[1.0, 2.0], num_feature=2)
    x = torch.randn(3, 2, 2)
    layer(x)
    layer(x)
    assert len(layer.losses) == 1
    assert iRazor([0, 1, 2], num_feature=2).losses == []


# ------------------------------------------------------------------ AutoInt
def test_autoint_formula_and_out_types():
    x = torch.randn(3, 4, 5)
    once = torch.softmax(x @ x.transpose(1, 2), dim=-1) @ x
    twice = torch.softmax(once @ once.transpose(1, 2), dim=-1) @ once
    torch.testing.assert_close(AutoInt(2, out_type="stack")(x), twice)
    assert AutoInt()(x).shape == (3, 20)
    parts = AutoInt(out_type=None)(x)
    assert isinstance(parts, list) and len(parts) == 4 and parts[0].shape == (3, 5)
    assert AutoInt(keep_list=True)(x)[0].shape == (3, 20)
    scaled = AutoInt(out_type="stack", scale=True)(x)
    torch.testing.assert_close(scaled, torch.softmax(x @ x.transpose(1, 2) / 5**0.5, dim=-1) @ x)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    fields=st.integers(1, 6),
    layers=st.integers(1, 3),
    seed=st.integers(0, 9999),
)
def test_autoint_absent_fields_change_nothing(batch, fields, layers, seed):
    torch.manual_seed(seed)
    x = torch.randn(batch, fields, 4)
    mask = torch.rand(batch, fields) > 0.4
    layer = AutoInt(layers, out_type="stack")
    out = layer(x, mask)
    assert torch.isfinite(out).all()
    for b in range(batch):
        keep = mask[b]
        assert not out[b, ~keep].any()
        if keep.any():
            alone = layer(x[b : b + 1, keep])[0]
            torch.testing.assert_close(out[b, keep], alone)


# ------------------------------------------------------------------ iRazor
def test_rigid_masks_layout():
    masks = rigid_masks([0, 1, 3, 4])
    want = torch.tensor(
        [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.float32
    )
    assert torch.equal(masks, want)


def test_irazor_formula():
    layer = iRazor([0, 2, 3], t=0.5, out_type="stack", num_feature=2)
    x = torch.randn(4, 2, 3)
    p = torch.softmax(layer.nas_weight / 0.5, dim=1)
    soft = torch.stack([p[:, 1], p[:, 1], p[:, 2]], dim=1)
    torch.testing.assert_close(layer(x), x * soft)
    assert monolith_variables(layer)["nas_weight"].shape == (2, 3)


def test_irazor_summary(tmp_path):
    layer = iRazor([0, 1, 2], num_feature=2)
    recorder = enable_summaries(layer, log_dir=str(tmp_path))
    layer(torch.randn(1, 2, 2))
    assert recorder.tags_written == {"i_razor/nas_weight"}
    recorder.close()


def test_irazor_bad_input():
    for space in ([1, 2], [0, 2, 2], [0], "0,1", [0, 1.5]):
        with pytest.raises(ValueError, match="nas_space must be a list of ints starting at 0"):
            iRazor(space, num_feature=2)
    with pytest.raises(ValueError, match="t must be > 0, got 0"):
        iRazor([0, 1], t=0, num_feature=2)
    with pytest.raises(ValueError, match="t must be a finite number, got nan"):
        iRazor([0, 1], t=float("nan"), num_feature=2)
    with pytest.raises(ValueError, match="feature_weight must be finite"):
        iRazor([0, 1], feature_weight=[1.0, float("inf")], num_feature=2)
    with pytest.raises(ValueError, match="feature_weight must have num_feature=2 entries, got 3"):
        iRazor([0, 1], feature_weight=[1, 2, 3], num_feature=2)
    layer = iRazor([0, 1, 4], num_feature=2)
    with pytest.raises(
        ValueError, match=r"iRazor\(i_razor\): embeds must have shape \(\*, 2, 4\), got \(3, 2, 5\)"
    ):
        layer(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match=r"embeds must have shape \(\*, 2, 4\), got \(3, 8\)"):
        layer(torch.randn(3, 8))


# ------------------------------------------------- dimension selection (CPT)
SPACE = [0, 2, 4, 8]  # drop, [0,2), [2,4), [4,8)


def test_select_dims_known_answers():
    # widths: drop 0, [0,2) 2, [2,4) 2, [4,8) 4
    probs = torch.tensor(
        [
            [0.05, 0.70, 0.20, 0.05],  # .70, .90 (not > .9), then drop .95: regions 1, 2, 0 -> 4
            [0.95, 0.03, 0.01, 0.01],  # the drop region alone exceeds .9 -> removed
            [0.10, 0.15, 0.05, 0.70],  # [4,8) .70, [0,2) .85, drop .95 -> 4 + 2 = 6
            [0.00, 0.95, 0.05, 0.00],  # [0,2) alone -> 2
        ],
        dtype=torch.float64,
    )
    sel = select_dims_from_probs(probs, SPACE, threshold=0.9)
    assert sel.dims == [4, 0, 6, 2]
    assert [f.regions for f in sel.features] == [(1, 2, 0), (0,), (3, 1, 0), (1,)]
    assert sel.kept_features == [0, 2, 3]
    assert sel.features[1].kept is False and sel.features[1].kept_dims == []
    assert sel.features[0].kept_dims == [0, 1, 2, 3]
    # Not a prefix: the regions taken need not be adjacent.
    assert sel.features[2].kept_dims == [0, 1, 4, 5, 6, 7]
    assert sel.total_dims == 12 and sel.saved_dims == 4 * 8 - 12
    # A lower threshold keeps less.
    assert select_dims_from_probs(probs, SPACE, threshold=0.6).dims == [2, 0, 4, 2]
    with pytest.raises(ValueError, match="threshold must be in"):
        select_dims_from_probs(probs, SPACE, threshold=0.0)
    with pytest.raises(ValueError, match=r"probs must have shape \(F, 4\)"):
        select_dims_from_probs(probs[:, :3], SPACE, threshold=0.5)


def test_select_dims_sums_widths_of_the_regions_taken():
    # The example: regions [0,2) and [14,30) taken -> 2 + 16 = 18, not the
    # largest boundary 30.
    space = [0, 2, 6, 14, 30]
    probs = torch.tensor([[0.05, 0.50, 0.0, 0.0, 0.45]], dtype=torch.float64)
    sel = select_dims_from_probs(probs, space, threshold=0.9)
    assert sel.dims == [18] and sel.features[0].regions == (1, 4)
    assert sel.features[0].kept_dims == [0, 1] + list(range(14, 30))


def test_select_dims_threshold_is_strict():
    # 0.5 does not exceed 0.5: the next region is taken as well.
    probs = torch.tensor([[0.0, 0.5, 0.5, 0.0]], dtype=torch.float64)
    assert select_dims_from_probs(probs, SPACE, threshold=0.5).dims == [4]
    assert select_dims_from_probs(probs, SPACE, threshold=0.49).dims == [2]
    # A threshold of 1 is never strictly exceeded: every region is taken.
    assert select_dims_from_probs(probs, SPACE, threshold=1.0).dims == [8]


def test_select_dims_uses_the_layers_probabilities():
    layer = iRazor(SPACE, t=1.0, num_feature=2)
    with torch.no_grad():
        layer.nas_weight.copy_(
            torch.log(torch.tensor([[0.05, 0.70, 0.20, 0.05], [0.90, 0.05, 0.03, 0.02]]))
        )
    assert layer.select_dims(0.85).dims == [4, 0]  # .70 + .20 > .85; drop .90 > .85


def test_plot_dimension_selection(tmp_path):
    pytest.importorskip("matplotlib")
    from monolith_layers.plotting import plot_dimension_selection

    layer = iRazor(SPACE, num_feature=3)
    path = tmp_path / "selection.png"
    fig = plot_dimension_selection(
        layer, 0.9, feature_names=["user", "item", "ctx"], path=str(path)
    )
    assert path.stat().st_size > 1000
    assert "dims kept" in fig.axes[0].get_title()


# ------------------------------------------------------------------ SeNet
def test_senet_list_and_tensor_inputs_agree():
    torch.manual_seed(0)
    layer = SeNet(4, 2)
    x = torch.randn(3, 4, 5, requires_grad=True)
    from_tensor = layer(x)
    parts = [x[:, i] for i in range(4)]
    from_list = layer(parts)
    torch.testing.assert_close(from_list, from_tensor)
    g1 = torch.autograd.grad(from_tensor.sum(), x)[0]
    g2 = torch.autograd.grad(layer(parts).sum(), x)[0]
    torch.testing.assert_close(g1, g2)
    gpu_flavour = SeNet.from_config({**layer.get_config(), "on_gpu": True})
    gpu_flavour.load_state_dict(layer.state_dict())
    torch.testing.assert_close(gpu_flavour(parts), from_list)


def test_senet_list_of_different_widths():
    layer = SeNet(3, None)  # no tower: the weights are the means themselves
    parts = [
        torch.full((2, 1), 2.0),
        torch.full((2, 3), 3.0),
        torch.tensor([[1.0, 3.0], [0.0, 0.0]]),
    ]
    out = layer(parts)
    want = torch.cat(
        [parts[0] * 2.0, parts[1] * 3.0, parts[2] * torch.tensor([[2.0], [0.0]])], dim=1
    )
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="'stack' needs tensors of one shape"):
        SeNet(3, None, out_type="stack")(parts)


def test_senet_tower_and_errors():
    layer = SeNet(5, 3, regularizer="l2")
    assert sorted(monolith_variables(layer))[:3] == [
        "cmp_tower/dense_0/bias",
        "cmp_tower/dense_0/kernel",
        "cmp_tower/dense_0/trainable_kernel_norm",
    ]
    assert len(layer.losses) == 2
    assert layer(torch.randn(2, 5, 4)).shape == (2, 20)
    assert layer(torch.randn(2, 5, 4)).shape == (2, 20)
    with pytest.raises(
        ValueError, match=r"SeNet\(se_net\): embeds must have shape \(\*, 5, \*\), got \(2, 4, 4\)"
    ):
        layer(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="embeds must be a list of num_feature=5 tensors, got 2"):
        layer([torch.randn(2, 4)] * 2)


# ------------------------------------------------------------------ config
def test_configs_round_trip():
    layers = [
        AutoInt(3, out_type="stack", scale=True),
        iRazor([0, 1, 3], t=0.1, feature_weight=torch.tensor([1.0, 0.5]), num_feature=2),
        SeNet(4, 2, initializer="he_normal"),
        SeNet(4, None, out_type=None),
    ]
    for layer in layers:
        config = json.loads(json.dumps(layer.get_config()))
        assert type(layer).from_config(config).get_config() == config
    p = iRazor.params()
    p.nas_space, p.num_feature = [0, 2], 3
    assert p.instantiate()(torch.randn(1, 3, 2)).shape == (1, 6)
