import pytest
import torch
import torch.nn.functional as F

from monolith_layers import activations, regularizers

X = torch.linspace(-3, 3, 25)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("relu", torch.relu),
        ("ReLU", torch.relu),
        ("sigmoid", torch.sigmoid),
        ("sigmoid2", lambda x: 2 * torch.sigmoid(x)),
        ("tanh", torch.tanh),
        ("linear", lambda x: x),
        ("elu", F.elu),
        ("selu", F.selu),
        ("gelu", F.gelu),
        ("swish", lambda x: x * torch.sigmoid(x)),
        ("softplus", F.softplus),
        ("softsign", F.softsign),
        ("exponential", torch.exp),
        ("hard_sigmoid", lambda x: torch.clamp(0.2 * x + 0.5, 0, 1)),
        ("HardSigmoid", lambda x: torch.clamp(0.2 * x + 0.5, 0, 1)),
        ("leakyrelu", lambda x: torch.where(x > 0, x, 0.3 * x)),
        ("softmax", lambda x: torch.softmax(x, -1)),
        ("thresholdedrelu", lambda x: torch.where(x > 1, x, torch.zeros_like(x))),
    ],
)
def test_activation_formulas(name, fn):
    torch.testing.assert_close(activations.get(name)(X), fn(X))


def test_prelu_is_learnable_per_unit_and_starts_linear_part_zero():
    act = activations.get("PReLU", units=4)
    assert act.alpha.shape == (4,) and torch.equal(act.alpha, torch.zeros(4))
    with torch.no_grad():
        act.alpha.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = -torch.ones(2, 4)
    torch.testing.assert_close(act(x), -torch.tensor([0.1, 0.2, 0.3, 0.4]).expand(2, 4))
    with pytest.raises(ValueError, match="needs the number of units"):
        activations.get("prelu")


def test_monolith_serialised_forms():
    relu = activations.get(
        "{'name': 'ReLU', 'max_value': None, 'negative_slope': 0.0, 'threshold': 0.0}"
    )
    assert isinstance(relu, activations.ReLU)
    capped = activations.get(
        {"name": "ReLU", "max_value": 1.0, "negative_slope": 0.1, "threshold": 0.0}
    )
    torch.testing.assert_close(
        capped(torch.tensor([-2.0, 0.5, 3.0])), torch.tensor([-0.2, 0.5, 1.0])
    )
    leaky = activations.get({"class_name": "LeakyReLU", "config": {"alpha": 0.1, "name": "x"}})
    assert leaky.alpha == 0.1
    assert activations.get(None) is None


def test_callables_and_modules_pass_through():
    assert isinstance(activations.get(torch.tanh), activations.Tanh)
    custom = activations.get(lambda x: x * 3)
    torch.testing.assert_close(custom(torch.ones(1)), torch.full((1,), 3.0))
    module = torch.nn.Hardtanh()
    assert activations.get(module) is module


def test_unknown_activation_lists_names():
    with pytest.raises(
        ValueError, match="unknown activation 'rellu'; known activations are: .*relu"
    ):
        activations.get("rellu")


def test_regularizer_formulas_and_forms():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    l1 = w.abs().sum()
    l2 = w.square().sum()
    torch.testing.assert_close(regularizers.get("l1")(w), 0.01 * l1)
    torch.testing.assert_close(regularizers.get("l2")(w), 0.01 * l2)
    torch.testing.assert_close(regularizers.get("l1_l2")(w), 0.01 * l1 + 0.01 * l2)
    reg = regularizers.get({"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.5}})
    torch.testing.assert_close(reg(w), 0.5 * l2)
    assert regularizers.get(regularizers.serialize(reg)).get_config() == {"l1": 0.0, "l2": 0.5}
    with pytest.raises(ValueError, match="unknown regularizer 'l3'"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="must be >= 0"):
        regularizers.L1L2(l1=-1)
