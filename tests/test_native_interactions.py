"""AutoInt's and SeNet's native kernels against the tensor ops they replace."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_helpers import (
    assert_within_float32_rounding,
    counting_native_calls,
    kernel_and_reference,
    needs_kernels,
)

from monolith_layers import AutoInt, SeNet, fused, set_fused

pytestmark = needs_kernels


def _assert_all_close(got, want, rtol=1e-10, atol=1e-12):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def _fields_mask(kind, batch, fields, generator):
    if kind == "none":
        return None
    if kind == "all":
        return torch.ones(batch, fields, dtype=torch.bool)
    mask = torch.rand(batch, fields, generator=generator) < 0.6
    if kind == "with_empty_rows" and batch:
        mask[0] = False
    return mask


def _autoint_case(seed, batch, fields, width, rounds, scale, mask_kind, dtype=torch.float64):
    """Outputs and gradients of one case; drawn in float64 and then cast, so that
    the same case in float32 has the same values to float32 rounding."""
    g = torch.Generator().manual_seed(seed)
    layer = AutoInt(layer_num=rounds, out_type="stack", scale=scale)
    embeds = torch.randn(batch, fields, width, generator=g, dtype=torch.float64)
    embeds = embeds.to(dtype).requires_grad_()
    mask = _fields_mask(mask_kind, batch, fields, g)
    out = layer(embeds, mask)
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    (d_embeds,) = torch.autograd.grad((out * weights).sum(), [embeds])
    return [out, d_embeds]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 6),
    fields=st.integers(1, 21),  # around the 8- and 16-lane blocks
    width=st.integers(1, 20),
    rounds=st.integers(1, 3),
    scale=st.booleans(),
    mask_kind=st.sampled_from(["none", "all", "random", "with_empty_rows"]),
)
def test_autoint_kernel_equals_the_tensor_ops(**case):
    _assert_all_close(*kernel_and_reference(_autoint_case, **case))


def test_autoint_kernel_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 7, generator=g) < 0.7
    layer = AutoInt(layer_num=2, out_type="stack", scale=True)
    with counting_native_calls() as calls:
        assert torch.autograd.gradcheck(lambda x: layer(x, mask), (x,))
        assert torch.autograd.gradcheck(lambda x: layer(x), (x,))
    assert calls and all(calls)


def test_autoint_kernel_propagates_nan_like_the_tensor_ops():
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    x[0, 2, 1] = float("nan")
    native, reference = kernel_and_reference(lambda: [AutoInt(out_type="stack")(x)])
    assert torch.equal(native[0].isnan(), reference[0].isnan())
    assert native[0][0].isnan().all() and not native[0][1].isnan().any()


def test_autoint_kernel_saves_nothing_without_grad():
    x = torch.randn(4, 6, 3, requires_grad=True)
    with torch.no_grad():
        out = AutoInt(layer_num=2)(x)
    assert out.grad_fn is None


def test_autoint_kernel_refuses_double_backward_and_points_to_set_fused():
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    out = AutoInt(out_type="stack")(x)
    with pytest.raises(RuntimeError, match="AutoInt: .*not twice differentiable.*set_fused"):
        torch.autograd.grad(out.square().sum(), [x], create_graph=True)
    previous = set_fused(False)
    try:  # the reference path is twice differentiable
        out = AutoInt(out_type="stack")(x)
        (d_x,) = torch.autograd.grad(out.square().sum(), [x], create_graph=True)
        d_x.sum().backward()
    finally:
        set_fused(previous)
    assert x.grad is not None and x.grad.abs().sum() > 0


def _senet_case(seed, batch, fields, width, cmp_dim, upstream, x_grad, dtype=torch.float64):
    """Outputs and gradients of one case; drawn in float64 and then cast."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = SeNet(fields, cmp_dim, out_type="stack", dtype=torch.float64)
    with torch.no_grad():  # biases away from zero, so that relu's kink is exercised
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    layer = layer.to(dtype)
    embeds = torch.randn(batch, fields, width, generator=g, dtype=torch.float64)
    embeds = embeds.to(dtype).requires_grad_(x_grad)
    out = layer(embeds)
    # 'sum' hands the backward a broadcast (stride 0) gradient, 'dense' a full one.
    if upstream == "sum":
        loss = out.sum()
    else:
        loss = (out * torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)).sum()
    leaves = [*([embeds] if x_grad else []), *layer.parameters()]
    return [out, *(torch.autograd.grad(loss, leaves) if leaves else [])]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.sampled_from([1, 5, 63, 64, 65, 130]),  # around the 64-sample blocks
    fields=st.integers(1, 20),
    width=st.sampled_from([1, 3, 4, 8, 16, 20, 32]),  # the unrolled widths and others
    cmp_dim=st.sampled_from([None, 1, 3, 8]),
    upstream=st.sampled_from(["sum", "dense"]),
    x_grad=st.booleans(),
)
def test_senet_kernel_equals_the_tensor_ops(**case):
    _assert_all_close(*kernel_and_reference(_senet_case, **case))


@pytest.mark.parametrize(
    "case_fn, case",
    [
        (
            _autoint_case,
            dict(seed=3, batch=64, fields=39, width=16, rounds=3, scale=False, mask_kind="none"),
        ),
        (
            _autoint_case,
            dict(seed=3, batch=64, fields=39, width=16, rounds=3, scale=False, mask_kind="random"),
        ),
        (
            _senet_case,
            dict(seed=4, batch=130, fields=39, width=16, cmp_dim=8, upstream="dense", x_grad=True),
        ),
    ],
    ids=["autoint", "autoint-masked", "senet"],
)
def test_kernel_in_float32_is_within_rounding(case_fn, case):
    native, reference = kernel_and_reference(case_fn, dtype=torch.float32, **case)
    with fused(False):  # the float64 reference, not the kernel under test
        exact = case_fn(dtype=torch.float64, **case)
    assert_within_float32_rounding(native, reference, exact)


def test_senet_kernel_gradcheck_through_the_weight_norm():
    g = torch.Generator().manual_seed(1)
    layer = SeNet(5, 3, out_type="stack", dtype=torch.float64)
    x = torch.randn(4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weights = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    names = [name for name, _ in layer.named_parameters()]

    def run(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x,))

    with counting_native_calls() as calls:
        assert torch.autograd.gradcheck(run, (x, *weights))
    assert calls and all(calls)


def test_senet_kernel_zero_kernel_column_matches_the_clamped_norm():
    # A column whose squared norm is under the epsilon: the clamp stops the
    # gradient through the norm, on both paths alike.
    def case():
        layer = SeNet(4, 2, out_type="stack", dtype=torch.float64)
        with torch.no_grad():
            layer.cmp_tower.dense_0.kernel[:, 1] = 0.0
        x = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        out = layer(x)
        return [out, *torch.autograd.grad((out * out).sum(), list(layer.parameters()))]

    torch.manual_seed(0)
    native = None
    with counting_native_calls() as calls:
        native = case()
    assert all(calls)
    torch.manual_seed(0)
    with fused(False):
        reference = case()
    _assert_all_close(native, reference)


def test_senet_with_a_changed_tower_runs_the_tensor_ops():
    layer = SeNet(4, 2, dtype=torch.float64)
    layer.cmp_tower.dense_1.allow_kernel_norm = False  # not the tower the kernel knows
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    with counting_native_calls() as calls:
        out = layer(x)
    assert calls == [False]
    with fused(False):
        torch.testing.assert_close(out, layer(x), rtol=0, atol=0)


def test_senet_kernel_refuses_double_backward():
    layer = SeNet(3, 2, dtype=torch.float64)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="SeNet: .*not twice differentiable.*set_fused"):
        torch.autograd.grad(layer(x).square().sum(), [x], create_graph=True)
