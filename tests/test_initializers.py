import math

import pytest
import torch

from monolith_layers import initializers

SHAPE = (400, 600)  # fan_in 400, fan_out 600, fan_avg 500


@pytest.mark.parametrize(
    "name, variance, kind",
    [
        ("glorot_uniform", 1 / 500, "uniform"),
        ("GlorotNormal", 1 / 500, "truncated"),
        ("he_normal", 2 / 400, "truncated"),
        ("HeUniform", 2 / 400, "uniform"),
        ("lecun_normal", 1 / 400, "truncated"),
        ("LecunUniform", 1 / 400, "uniform"),
    ],
)
def test_variance_scaling_presets_follow_keras(name, variance, kind):
    w = initializers.get(name)(SHAPE)
    # The standard error of the mean is sigma / sqrt(n); five of them bound an
    # unbiased draw (a false alarm once in ~1.7 million runs) and catch a bias
    # of 0.011 sigma.
    assert abs(w.mean().item()) < 5 * math.sqrt(variance / w.numel())
    # Keras rescales the truncated normal so the draw keeps the target variance.
    assert w.var().item() == pytest.approx(variance, rel=0.03)
    if kind == "uniform":
        limit = math.sqrt(3 * variance)
        assert w.abs().max().item() <= limit
        assert w.abs().max().item() > 0.99 * limit
    else:
        stddev = math.sqrt(variance) / 0.87962566103423978
        assert w.abs().max().item() <= 2 * stddev + 1e-7
        assert w.abs().max().item() > 1.9 * stddev


def test_fans_for_vectors_and_higher_rank():
    assert initializers.compute_fans((7,)) == (7.0, 7.0)
    assert initializers.compute_fans((3, 5, 4, 6)) == (5 * 4 * 3, 5 * 6 * 3)
    assert initializers.compute_fans(()) == (1.0, 1.0)


def test_simple_initializers_and_dict_forms():
    assert torch.equal(initializers.get("zeros")((2, 3)), torch.zeros(2, 3))
    assert torch.equal(initializers.get("Ones")((2,)), torch.ones(2))
    c = initializers.get({"class_name": "Constant", "config": {"value": 0.5}})
    assert torch.equal(c((2,)), torch.full((2,), 0.5))
    n = initializers.get(
        {"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 0.1, "seed": None}}
    )((20000,))
    assert n.mean().item() == pytest.approx(1.0, abs=0.01) and n.std().item() == pytest.approx(
        0.1, rel=0.03
    )
    u = initializers.get("random_uniform")((20000,))
    assert u.min().item() >= -0.05 and u.max().item() <= 0.05
    t = initializers.get("truncated_normal")((20000,))
    assert t.abs().max().item() <= 0.1 + 1e-7
    vs = initializers.get(
        {
            "class_name": "VarianceScaling",
            "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform", "seed": 3},
        }
    )
    w = vs(SHAPE)
    assert w.abs().max().item() <= math.sqrt(3 * 2 / 600)
    assert torch.equal(w, vs(SHAPE)), "a seeded initializer repeats its draw"


def test_orthogonal_is_orthonormal():
    q = initializers.get("orthogonal")((6, 4))
    torch.testing.assert_close(q.t() @ q, torch.eye(4), atol=1e-5, rtol=0)
    wide = initializers.Orthogonal(gain=2.0)((3, 5))
    torch.testing.assert_close(wide @ wide.t(), 4 * torch.eye(3), atol=1e-5, rtol=0)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown initializer 'glorot'.*GlorotNormal"):
        initializers.get("glorot")


def test_serialize_round_trip_and_class_passthrough():
    he = initializers.HeNormal(seed=4)
    again = initializers.get(initializers.serialize(he))
    assert type(again) is initializers.HeNormal and again.seed == 4
    assert isinstance(initializers.get(initializers.GlorotUniform), initializers.GlorotUniform)
    with pytest.raises(TypeError):
        initializers.get(3)
