"""Every public layer: JSON config round trip, params() -> instantiate(), state_dict."""

import json

import pytest
import torch

import monolith_layers as ml

LAYERS = {
    "Dense": lambda: ml.Dense(
        3, activation="prelu", allow_kernel_norm=True, kernel_norm_trainable=True, input_dim=4
    ),
    "MLP": lambda: ml.MLP([4, 2], enable_batch_normalization=True, input_dim=3),
    "BatchNorm": lambda: ml.BatchNorm(5, momentum=0.9),
    "AGRUCell": lambda: ml.AGRUCell(4, att_type="AUGRU", input_dim=3),
    "KerasGRUCell": lambda: ml.KerasGRUCell(4, activation="relu", input_dim=3),
    "DIN": lambda: ml.DIN([4, 1], mode="elementwise", embed_dim=3),
    "DIEN": lambda: ml.DIEN(
        4, att_type="AUGRU", regularizer={"class_name": "L2", "config": {"l2": 0.1}}, input_dim=3
    ),
    "DMR_U2I": lambda: ml.DMR_U2I(4, seq_len=5, user_dim=3, item_dim=2),
    "AutoInt": lambda: ml.AutoInt(2, out_type=None),
    "iRazor": lambda: ml.iRazor([0, 1, 3], feature_weight=[0.5, 1.0], num_feature=2),
    "SeNet": lambda: ml.SeNet(3, 2, regularizer="l1"),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip(name):
    layer = LAYERS[name]()
    config = layer.get_config()
    text = json.dumps(config)
    rebuilt = type(layer).from_config(json.loads(text))
    assert rebuilt.get_config() == config
    assert rebuilt.state_dict().keys() == layer.state_dict().keys()
    rebuilt.load_state_dict(layer.state_dict())


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_params_instantiate_equal_layer(name):
    layer = LAYERS[name]()
    p = type(layer).params()
    for key, value in layer.get_config().items():
        setattr(p, key, value)
    assert p.instantiate().get_config() == layer.get_config()
    with pytest.raises(AttributeError, match="unknown parameter"):
        p.not_an_argument = 1


def test_every_public_layer_is_covered():
    public = {
        n
        for n in ml.__all__
        if isinstance(getattr(ml, n), type) and issubclass(getattr(ml, n), ml.Layer)
    }
    assert public - {"Layer"} == set(LAYERS)


def test_monolith_variables_are_parameters_or_buffers_of_the_module():
    for name, make in LAYERS.items():
        layer = make()
        tensors = {id(t) for t in layer.state_dict(keep_vars=True).values()}
        for tf_name, tensor in ml.monolith_variables(layer).items():
            assert id(tensor) in tensors, (name, tf_name)


def test_autoint_rejects_2d():
    with pytest.raises(
        ValueError,
        match=r"AutoInt\(auto_int\): embeds must have shape \(\*, \*, \*\), got \(2, 3\)",
    ):
        ml.AutoInt()(torch.randn(2, 3))
