"""DIN's native kernel against the plain reference computation."""

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_helpers import assert_within_float32_rounding, counting_native_calls, needs_kernels

from monolith_layers import DIN, fused

pytestmark = needs_kernels


@contextlib.contextmanager
def _counting_kernel_calls():
    """One entry per DIN call in the block that ran the operator."""
    kernel_calls = []
    with counting_native_calls("din_attention") as calls:
        yield kernel_calls
    kernel_calls.extend(c for c in calls if c)


def _mask(kind, batch, steps, generator):
    if kind == "none":
        return None
    if kind == "holes":
        return torch.rand(batch, steps, generator=generator) < 0.6
    lengths = torch.randint(0, steps + 1, (batch,), generator=generator)  # empty rows too
    return torch.arange(steps) < lengths.unsqueeze(1)


def _din_case(
    seed,
    batch,
    steps,
    width,
    units,
    activation,
    mode,
    decay,
    mask_kind,
    input_grads,
    dtype=torch.float64,
):
    """Outputs and gradients of one case; drawn in float64 and then cast, so that
    the same case in float32 has the same values to float32 rounding."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = DIN(units, activation=activation, embed_dim=width, mode=mode, decay=decay)
    layer = layer.to(torch.float64)
    with torch.no_grad():  # biases away from zero, so that relu's kink is exercised
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    layer = layer.to(dtype)

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    queries = draw(batch, width).requires_grad_(input_grads)
    keys = draw(batch, steps, width).requires_grad_(input_grads)
    mask = _mask(mask_kind, batch, steps, g)
    out = layer(queries, keys, mask)
    loss = (out * draw(*out.shape)).sum()
    leaves = [*([queries, keys] if input_grads else []), *layer.parameters()]
    return [out, *torch.autograd.grad(loss, leaves)]


def _native_and_reference(**case):
    with _counting_kernel_calls() as calls:
        native = _din_case(**case)
    assert calls, "the native kernel was not used"
    with fused(False):
        reference = _din_case(**case)
    return native, reference


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 6),
    steps=st.integers(1, 11),
    width=st.integers(1, 9),
    # widths around the 16 / 8 / 4-column blocks and the single-column tail
    units=st.sampled_from([[1], [4, 1], [17, 9, 1], [5, 3, 1], [24, 1]]),
    activation=st.sampled_from(["relu", "sigmoid", "tanh", "prelu", None]),
    mode=st.sampled_from(["sum", "elementwise"]),
    decay=st.booleans(),
    mask_kind=st.sampled_from(["none", "holes", "ragged"]),
    input_grads=st.booleans(),
)
def test_din_kernel_equals_the_reference(**case):
    native, reference = _native_and_reference(**case)
    for got, want in zip(native, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_din_kernel_in_float32_is_within_rounding(activation):
    case = dict(
        seed=5,
        batch=64,
        steps=50,
        width=32,
        units=[80, 40, 1],
        activation=activation,
        mode="sum",
        decay=False,
        mask_kind="ragged",
        input_grads=True,
    )
    native, reference = _native_and_reference(dtype=torch.float32, **case)
    with fused(False):  # the float64 reference, not the kernel under test
        exact = _din_case(dtype=torch.float64, **case)
    assert_within_float32_rounding(native, reference, exact)


@pytest.mark.parametrize("activation", ["tanh", "prelu"])
def test_din_kernel_gradcheck(activation):
    g = torch.Generator().manual_seed(0)
    layer = DIN([5, 3, 1], activation=activation, embed_dim=4, dtype=torch.float64)
    with torch.no_grad():  # PReLU slopes of both signs (they start at zero)
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    names = [name for name, _ in layer.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    queries = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(3, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 6, generator=g) < 0.7

    def run(queries, keys, *params):
        state = dict(zip(names, params, strict=True))
        return torch.func.functional_call(layer, state, (queries, keys, mask))

    with _counting_kernel_calls() as calls:
        assert torch.autograd.gradcheck(run, (queries, keys, *weights))
    assert calls


def test_din_kernel_never_reads_padded_keys():
    g = torch.Generator().manual_seed(1)
    layer = DIN([6, 1], activation="relu", embed_dim=3, mode="elementwise")
    queries = torch.randn(4, 3, generator=g)
    keys = torch.randn(4, 5, 3, generator=g, requires_grad=True)
    mask = torch.arange(5) < torch.tensor([[2], [5], [0], [3]])
    results = []
    for fill in (0.0, float("nan"), float("inf")):
        poisoned = torch.where(mask.unsqueeze(-1), keys, fill)
        out = layer(queries, poisoned, mask)
        (d_keys,) = torch.autograd.grad(out.square().sum(), [keys])
        results.append((out, d_keys))
    for out, d_keys in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(d_keys, results[0][1])


@pytest.mark.parametrize(
    "change",
    [
        lambda layer: setattr(layer.compress_tower.dense_0, "allow_kernel_norm", False),
        lambda layer: setattr(layer.compress_tower.dense_1, "trainable_kernel_norm", None),
    ],
)
def test_din_with_a_tower_the_kernel_does_not_know_runs_the_tensor_ops(change):
    layer = DIN([4, 1], activation="relu", embed_dim=3, dtype=torch.float64)
    change(layer)
    queries, keys = (
        torch.randn(2, 3, dtype=torch.float64),
        torch.randn(2, 5, 3, dtype=torch.float64),
    )
    with _counting_kernel_calls() as calls:
        out = layer(queries, keys)
    assert not calls
    with fused(False):
        torch.testing.assert_close(out, layer(queries, keys), rtol=1e-12, atol=1e-12)


def test_din_prelu_tower_runs_the_kernel():
    # The CTR model's DIN tower: PReLU with zero slopes at first, where the
    # slopes' gradient needs the pre-activations (the outputs are all zero there).
    layer = DIN([4, 1], activation="prelu", embed_dim=3, dtype=torch.float64)
    queries, keys = (
        torch.randn(2, 3, dtype=torch.float64),
        torch.randn(2, 5, 3, dtype=torch.float64),
    )
    with _counting_kernel_calls() as calls:
        out = layer(queries, keys)
        (got,) = torch.autograd.grad(out.sum(), [layer.compress_tower.activation_0.alpha])
    assert calls
    with fused(False):
        want_out = layer(queries, keys)
        (want,) = torch.autograd.grad(want_out.sum(), [layer.compress_tower.activation_0.alpha])
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert got.abs().sum() > 0


def test_din_kernel_refuses_double_backward():
    layer = DIN([4, 1], activation="tanh", embed_dim=3, dtype=torch.float64)
    keys = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    out = layer(torch.randn(2, 3, dtype=torch.float64), keys)
    with pytest.raises(RuntimeError, match="DIN: .*not twice differentiable.*set_fused"):
        torch.autograd.grad(out.square().sum(), [keys], create_graph=True)
