import json

import numpy as np
import pytest
import torch
from parity import Case

from monolith_layers import (
    MLP,
    BatchNorm,
    Dense,
    layer_losses,
    monolith_variables,
    total_layer_loss,
)


def test_mlp_weightnorm_parity():
    case = Case("mlp_weightnorm")
    inputs = case.inputs
    layer = case.build("MLP", case.meta["ctor_kwargs"], tuple(inputs["x"].shape))
    case.check(layer, inputs, {"outputs": layer(inputs["x"])})


def test_mlp_defaults_match_monolith():
    mlp = MLP([8, 4, 1], input_dim=10)
    assert [type(mlp.get_layer(i)).__name__ for i in range(5)] == [
        "Dense",
        "ReLU",
        "Dense",
        "ReLU",
        "Dense",
    ]
    dense = mlp.dense_0
    assert dense.allow_kernel_norm and dense.kernel_norm_trainable
    # g starts at the column norms of V, so the initial kernel is V itself.
    torch.testing.assert_close(dense.effective_kernel(), dense.kernel, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dense.bias, torch.zeros(8))


def test_mlp_activation_forms():
    one = MLP([4, 3, 2], activations="tanh", input_dim=5)
    assert [type(one.get_layer(i)).__name__ for i in range(5)] == [
        "Dense",
        "Tanh",
        "Dense",
        "Tanh",
        "Dense",
    ]
    each = MLP([4, 2], activations=["sigmoid", "sigmoid2"], input_dim=5)
    x = torch.randn(3, 5)
    h = torch.sigmoid(
        torch.nn.functional.linear(x, each.dense_0.effective_kernel().t(), each.dense_0.bias)
    )
    want = 2 * torch.sigmoid(
        torch.nn.functional.linear(h, each.dense_1.effective_kernel().t(), each.dense_1.bias)
    )
    torch.testing.assert_close(each(x), want)
    with pytest.raises(ValueError, match="one entry per layer"):
        MLP([4, 2], activations=["relu"], input_dim=5)


def test_mlp_batch_norm_order_names_and_keras_momentum():
    mlp = MLP(
        [6, 4, 1], enable_batch_normalization=True, batch_normalization_momentum=0.9, input_dim=5
    )
    names = list(monolith_variables(mlp))
    assert "BatchNorm/in/gamma" in names and "BatchNorm/out/moving_mean" in names
    assert "BatchNorm/out_1/moving_variance" in names and "BatchNorm/out_2/gamma" not in names
    kinds = [type(mlp.get_layer(i)).__name__ for i in range(8)]
    assert kinds == [
        "BatchNorm",
        "Dense",
        "BatchNorm",
        "ReLU",
        "Dense",
        "BatchNorm",
        "ReLU",
        "Dense",
    ]
    x = torch.randn(32, 5) * 3 + 1
    mlp.train()
    mlp(x)
    bn = mlp.BatchNorm_in
    want_mean = 0.9 * 0 + 0.1 * x.mean(0)
    want_var = 0.9 * 1 + 0.1 * x.var(0, unbiased=False)
    torch.testing.assert_close(bn.moving_mean, want_mean)
    torch.testing.assert_close(bn.moving_variance, want_var)
    mlp.eval()
    out_eval = bn(x)
    torch.testing.assert_close(out_eval, (x - want_mean) / torch.sqrt(want_var + 1e-3))


def test_batch_norm_3d_input_reduces_all_but_last_axis():
    bn = BatchNorm(4)
    x = torch.randn(3, 5, 4)
    y = bn(x)
    torch.testing.assert_close(y.mean((0, 1)), torch.zeros(4), atol=1e-5, rtol=0)


def test_dense_weight_norm_formula_and_epsilon():
    dense = Dense(3, allow_kernel_norm=True, input_dim=4)
    assert dense.trainable_kernel_norm is None
    with torch.no_grad():
        dense.kernel.zero_()
        dense.kernel[:, 0] = torch.tensor([3.0, 4.0, 0.0, 0.0])
    k = dense.effective_kernel()
    torch.testing.assert_close(k[:, 0], torch.tensor([0.6, 0.8, 0.0, 0.0]))
    # A zero column divides by sqrt(1e-6), not by zero.
    assert torch.isfinite(k).all()
    small = Dense(1, allow_kernel_norm=True, input_dim=2)
    with torch.no_grad():
        small.kernel.copy_(torch.tensor([[1e-4], [0.0]]))
    # sum(V^2) = 1e-8 < 1e-6: divide by sqrt(1e-6), as tf.nn.l2_normalize does.
    torch.testing.assert_close(small.effective_kernel(), torch.tensor([[1e-4], [0.0]]) / 1e-3)


def test_dense_3d_input_and_errors():
    dense = Dense(2, activation="relu", input_dim=3)
    assert dense(torch.randn(4, 5, 3)).shape == (4, 5, 2)
    with pytest.raises(
        ValueError, match=r"Dense\(dense\): x must have shape \(\.\.\., 3\), got \(4, 2\)"
    ):
        dense(torch.randn(4, 2))
    with pytest.raises(ValueError, match="units must be a positive int"):
        Dense(0, input_dim=3)
    with pytest.raises(ValueError, match="output_dims must be a non-empty list"):
        MLP([], input_dim=3)
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        MLP([2], activations=["nope"], input_dim=3)


def test_regularizer_losses_recursive_and_on_raw_kernel():
    mlp = MLP(
        [3, 1],
        kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}},
        bias_regularizer="l1",
        input_dim=4,
    )
    with torch.no_grad():
        mlp.dense_0.bias.fill_(1.0)
    losses = mlp.losses
    assert len(losses) == 4
    want = sum(0.01 * d.kernel.square().sum() for d in (mlp.dense_0, mlp.dense_1)) + 0.01 * 3
    torch.testing.assert_close(total_layer_loss(mlp), want)
    outer = torch.nn.Sequential(mlp, torch.nn.ReLU())
    assert len(layer_losses(outer)) == 4
    total_layer_loss(outer).backward()
    assert mlp.dense_0.kernel.grad is not None


def test_mlp_config_round_trip_and_params():
    mlp = MLP(
        [4, 2],
        activations=["relu", "sigmoid"],
        initializers="he_normal",
        kernel_regularizer="l2",
        input_dim=3,
        name="tower",
    )
    config = mlp.get_config()
    text = json.dumps(config)
    again = MLP.from_config(json.loads(text))
    assert again.get_config() == config
    assert again.name == "tower"
    p = MLP.params()
    p.output_dims = [5, 1]
    p.input_dim = 7
    built = p.instantiate()
    assert built(torch.randn(2, 7)).shape == (2, 1)
    with pytest.raises(AttributeError, match="unknown parameter 'hidden'"):
        p.hidden = 3
    q = p.copy()
    q.output_dims.append(9)
    assert p.output_dims == [5, 1]
    with pytest.raises(ValueError, match=r"required parameters \['output_dims', 'input_dim'\]"):
        MLP.params().instantiate()


def test_state_dict_layout_is_tf_layout():
    mlp = MLP([4, 2], input_dim=3)
    shapes = {k: tuple(v.shape) for k, v in mlp.state_dict().items()}
    assert shapes["dense_0.kernel"] == (3, 4)
    assert shapes["dense_1.trainable_kernel_norm"] == (2,)
    np.testing.assert_equal(len(shapes), 6)
