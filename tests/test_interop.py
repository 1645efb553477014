import warnings

import numpy as np
import pytest
import torch

from monolith_layers import MLP, Dense, from_monolith, load_monolith_weights, monolith_variables

# What Monolith's MLP.get_config() returns (activations as repr strings,
# initializers as Keras dicts, Keras base keys included).
MONOLITH_MLP_CONFIG = {
    "name": "tower",
    "trainable": True,
    "dtype": "float32",
    "output_dims": [4, 1],
    "activations": [
        "{'name': 'ReLU', 'max_value': None, 'negative_slope': 0.0, 'threshold': 0.0}",
        None,
    ],
    "initializers": [
        {"class_name": "GlorotNormal", "config": {"seed": None}},
        {"class_name": "HeUniform", "config": {"seed": None}},
    ],
    "use_weight_norm": True,
    "use_learnable_weight_norm": False,
    "enable_batch_normalization": False,
    "batch_normalization_momentum": 0.99,
    "use_bias": True,
    "kernel_regularizer": {"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}},
    "bias_regularizer": None,
    "batch_normalization_renorm": False,
    "batch_normalization_renorm_clipping": None,
    "batch_normalization_renorm_momentum": 0.99,
}


def test_from_monolith_mlp_config():
    mlp = from_monolith("MLP", MONOLITH_MLP_CONFIG, (None, 6))
    assert isinstance(mlp, MLP) and mlp.name == "tower"
    assert sorted(monolith_variables(mlp)) == [
        "dense_0/bias",
        "dense_0/kernel",
        "dense_1/bias",
        "dense_1/kernel",
    ]
    assert len(mlp.losses) == 2
    assert mlp(torch.randn(3, 6)).shape == (3, 1)


def test_from_monolith_dense_drops_partitioner_and_warns_on_monitor():
    config = {
        "units": 3,
        "activation": "relu",
        "use_bias": True,
        "partitioner": None,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "allow_kernel_norm": True,
        "kernel_norm_trainable": True,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dense = from_monolith("Dense", config, (2, 4))
    assert isinstance(dense, Dense) and dense.trainable_kernel_norm.shape == (3,)
    with pytest.warns(UserWarning, match="inactive_relu_monitor"):
        from_monolith("Dense", {**config, "inactive_relu_monitor": True}, (2, 4))


def test_from_monolith_errors():
    with pytest.raises(ValueError, match="unknown class 'Nope'"):
        from_monolith("Nope", {}, (1,))
    with pytest.raises(ValueError, match="input_shape must end in a known size"):
        from_monolith("MLP", {"output_dims": [1]}, (None, None))


def test_load_names_relative_full_and_scoped():
    mlp = MLP([2, 1], input_dim=3)
    values = {
        name: np.full(t.shape, i + 1.0, np.float32)
        for i, (name, t) in enumerate(monolith_variables(mlp).items())
    }
    load_monolith_weights(mlp, values)
    assert torch.all(mlp.dense_0.kernel == 1.0)
    full = {f"model/mlp/{k}:0": v * 2 for k, v in values.items()}
    load_monolith_weights(mlp, full)
    assert torch.all(mlp.dense_1.bias == 12.0)
    two_layers = {**full, **{f"model/mlp_1/{k}:0": v * 3 for k, v in values.items()}}
    with pytest.raises(ValueError, match="pass scope="):
        load_monolith_weights(mlp, two_layers)
    report = load_monolith_weights(mlp, two_layers, scope="model/mlp_1", strict=False)
    assert torch.all(mlp.dense_1.bias == 18.0)
    assert len(report["unexpected"]) == len(values) and report["missing"] == []


def test_load_strict_lists_everything_and_checks_shapes():
    mlp = MLP([2, 1], input_dim=3)
    with pytest.raises(
        ValueError, match=r"missing variables \['dense_0/bias'.*unexpected names \['global_step'\]"
    ):
        load_monolith_weights(mlp, {"global_step": np.int64(3), "dense_0/kernel": np.zeros((3, 2))})
    with pytest.raises(
        ValueError,
        match=r"'dense_0/kernel' has shape \(3, 2\), the given 'dense_0/kernel' has shape \(2, 3\)",
    ):
        load_monolith_weights(mlp, {"dense_0/kernel": np.zeros((2, 3))}, strict=False)
