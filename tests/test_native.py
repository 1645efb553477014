"""The native (C++) time loops against the Python loops they replace."""

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_helpers import counting_native_calls, needs_kernels

import monolith_layers._native as native_module
import monolith_layers._packing as packing_module
from monolith_layers import AGRUCell, KerasGRUCell, dynamic_rnn_with_attention, gru_sequence
from monolith_layers._agru_scan import _AGRUScan
from monolith_layers._gru_scan import _GRUScan


@needs_kernels
def test_kernels_build_where_a_compiler_exists():
    assert native_module.kernels() is not None


def _mask(kind, batch, steps, generator):
    if kind == "none":
        return None
    if kind == "holes":  # not left-aligned
        mask = torch.rand(batch, steps, generator=generator) < 0.85
        mask[:, 0] = True
        return mask
    low = 0 if kind == "ragged" else steps - 1  # any lengths (empty rows too), or nearly full
    lengths = torch.randint(low, steps + 1, (batch,), generator=generator)
    return torch.arange(steps) < lengths.unsqueeze(1)


def _agru_case(seed, batch, steps, units, mode, act, mask_kind, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = AGRUCell(units, input_dim=3, att_type=mode or "AGRU", activation=act, dtype=dtype)
    x = torch.randn(batch, steps, 3, generator=g, dtype=dtype, requires_grad=True)
    att = torch.rand(batch, steps, generator=g, dtype=dtype, requires_grad=True) if mode else None
    h0 = torch.randn(batch, units, generator=g, dtype=dtype, requires_grad=True)
    mask = _mask(mask_kind, batch, steps, g)
    weights = torch.randn(batch, steps, units, generator=g, dtype=dtype)
    out, final = dynamic_rnn_with_attention(cell, x, att, h0, mask)
    loss = (out * weights).sum() + final.square().sum()
    leaves = [x, h0, *([att] if mode else []), *cell.parameters()]
    return [out, final, *torch.autograd.grad(loss, leaves)]


def _gru_case(seed, batch, steps, units, act, mask_kind, final_only, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = KerasGRUCell(units, activation=act, input_dim=3, dtype=dtype)
    with torch.no_grad():
        cell.bias.normal_(generator=g)
    x = torch.randn(batch, steps, 3, generator=g, dtype=dtype, requires_grad=True)
    h0 = torch.randn(batch, units, generator=g, dtype=dtype, requires_grad=True)
    mask = _mask(mask_kind, batch, steps, g)
    out, final = gru_sequence(cell, x, h0, mask)
    if final_only:  # DIEN's use: the outputs' gradient arrives as None
        loss = final.square().sum()
    else:
        loss = (out * torch.randn(out.shape, generator=g, dtype=dtype)).sum()
    return [out, final, *torch.autograd.grad(loss, [x, h0, *cell.parameters()])]


@contextlib.contextmanager
def _route(route):
    """Every scan takes ``route``: 'dense' (time-major, masked steps) or 'packed' (real steps)."""
    names = ("PACKED_FILL", "PACKED_FILL_TRAINING")
    saved = [getattr(packing_module, name) for name in names]
    for name in names:
        setattr(packing_module, name, 0.0 if route == "dense" else 2.0)
    try:
        yield
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(packing_module, name, value)


def _native_and_python(case_fn, route, **case):
    """The case on the native loops (checked to be used) and on the Python loops."""
    with _route(route):
        with counting_native_calls() as calls:
            native = case_fn(**case)
        assert calls and all(calls), "the native loops were not used"
        with native_module.native(False):
            python = case_fn(**case)
    return native, python


def _assert_all_close(got, want):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


SHAPES = dict(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 13),
    steps=st.integers(1, 7),
    units=st.sampled_from([1, 3, 8, 17, 20]),  # around the 8-row / 8-16-column blocks
    act=st.sampled_from(["tanh", "sigmoid", "relu", "linear"]),
    mask_kind=st.sampled_from(["none", "holes", "full", "ragged"]),
)


@needs_kernels
@settings(max_examples=60, deadline=None)
@given(
    route=st.sampled_from(["dense", "packed"]),
    mode=st.sampled_from([None, "AGRU", "AUGRU"]),
    **SHAPES,
)
def test_native_attention_gru_equals_the_python_loop(route, mode, **case):
    _assert_all_close(*_native_and_python(_agru_case, route, mode=mode, **case))


@needs_kernels
@settings(max_examples=60, deadline=None)
@given(route=st.sampled_from(["dense", "packed"]), final_only=st.booleans(), **SHAPES)
def test_native_keras_gru_equals_the_python_loop(route, final_only, **case):
    _assert_all_close(*_native_and_python(_gru_case, route, final_only=final_only, **case))


@needs_kernels
@pytest.mark.parametrize("mode", ["none", "AGRU", "AUGRU"])
def test_native_attention_gru_gradcheck(mode):
    g = torch.Generator().manual_seed(3)
    steps, batch, units = 4, 9, 5  # 9 rows: one 8-row block and a tail row
    xp = torch.randn(steps, batch, 3 * units, generator=g, dtype=torch.float64)
    w_gh = torch.randn(units, 2 * units, generator=g, dtype=torch.float64) * 0.5
    w_ch = torch.randn(units, units, generator=g, dtype=torch.float64) * 0.5
    h0 = torch.randn(batch, units, generator=g, dtype=torch.float64)
    att = None if mode == "none" else torch.rand(batch, steps, generator=g, dtype=torch.float64)
    mask = torch.rand(batch, steps, generator=g) < 0.8
    leaves = [
        t.requires_grad_() for t in (xp, w_gh, w_ch, h0) + ((att,) if att is not None else ())
    ]

    def f(*args):
        att_arg = args[4] if att is not None else None
        return _AGRUScan.apply(*args[:4], att_arg, mask, mode, "tanh")

    assert native_module.kernels() is not None
    assert torch.autograd.gradcheck(f, leaves)


@needs_kernels
def test_native_keras_gru_gradcheck():
    g = torch.Generator().manual_seed(4)
    steps, batch, units = 4, 9, 5
    gi = torch.randn(steps, batch, 3 * units, generator=g, dtype=torch.float64)
    w_r = torch.randn(units, 3 * units, generator=g, dtype=torch.float64) * 0.5
    b_r = torch.randn(3 * units, generator=g, dtype=torch.float64)
    h0 = torch.randn(batch, units, generator=g, dtype=torch.float64)
    mask = torch.rand(batch, steps, generator=g) < 0.8
    leaves = [t.requires_grad_() for t in (gi, w_r, b_r, h0)]
    assert native_module.kernels() is not None
    assert torch.autograd.gradcheck(lambda *a: _GRUScan.apply(*a, mask, "tanh"), leaves)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ["dense", "packed"])
def test_saturated_gates_give_the_python_loops_results(dtype, route):
    # Pre-activations far past exp's range (|x| in the thousands): the native
    # sigmoid / tanh must saturate as torch's do, not turn into NaN.
    torch.manual_seed(0)
    agru = AGRUCell(4, input_dim=3, att_type="AUGRU", dtype=dtype)
    gru = KerasGRUCell(4, input_dim=3, dtype=dtype)
    x = (torch.randn(9, 5, 3, dtype=dtype) * 1000).requires_grad_()
    att = torch.rand(9, 5, dtype=dtype)
    lengths = torch.tensor([5, 4, 3, 2, 1, 5, 1, 2, 3])
    results = []
    for on in (True, False):
        with _route(route), native_module.native(on):
            out, _ = dynamic_rnn_with_attention(agru, x, att, lengths=lengths)
            seq, _ = gru_sequence(gru, x, lengths=lengths)
            loss = out.sum() + seq.sum()
            results.append(
                [out, seq, *torch.autograd.grad(loss, [x, *agru.parameters(), *gru.parameters()])]
            )
    assert all(t.isfinite().all() for t in results[0])
    # In float32 a saturated gate's slope, recovered from an output that rounds
    # to 1, is rounding noise on both sides (times inputs of 1000): only the
    # outputs are compared there; float64 compares every gradient too.
    compared = (
        zip(*results, strict=True)
        if dtype == torch.float64
        else zip(*(r[:2] for r in results), strict=True)
    )
    for got, want in compared:
        torch.testing.assert_close(got, want)


@needs_kernels
def test_a_nan_in_a_real_input_propagates_as_in_the_python_loop():
    cell = AGRUCell(4, input_dim=3, att_type="AUGRU")
    x = torch.randn(2, 5, 3)
    x[0, 2, 1] = float("nan")
    att = torch.rand(2, 5)
    with _route("dense"):
        native_out = dynamic_rnn_with_attention(cell, x, att)[0]
        with native_module.native(False):
            python_out = dynamic_rnn_with_attention(cell, x, att)[0]
    assert native_out[0, 2:].isnan().all() and not native_out[0, :2].isnan().any()
    torch.testing.assert_close(native_out, python_out, equal_nan=True)


@needs_kernels
def test_native_loops_from_several_python_threads_give_the_serial_results():
    # The kernels let go of the GIL while they run; calls from threads must not
    # share any state. (Inputs are made first: torch's global seed is not per thread.)
    from concurrent.futures import ThreadPoolExecutor

    g = torch.Generator().manual_seed(0)
    cells = [AGRUCell(8, input_dim=3, att_type="AUGRU", dtype=torch.float64) for _ in range(4)]
    inputs = [
        (
            torch.randn(9, 6, 3, generator=g, dtype=torch.float64),
            torch.rand(9, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 7, (9,), generator=g),
        )
        for _ in cells
    ]

    def run(i):
        x, att, lengths = inputs[i]
        out, _ = dynamic_rnn_with_attention(cells[i], x, att, lengths=lengths)
        return [out, *torch.autograd.grad(out.square().sum(), list(cells[i].parameters()))]

    with _route("packed"):
        serial = [run(i) for i in range(4)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            threaded = list(pool.map(run, range(4)))
    for got, want in zip(threaded, serial, strict=True):
        _assert_all_close(got, want)


def test_unbuildable_kernels_fall_back_to_the_python_loops_with_one_warning(monkeypatch):
    from torch.utils import cpp_extension

    want = _agru_case(1, 4, 5, 3, "AUGRU", "tanh", "holes")

    def no_compiler(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(native_module, "_module", None)
    monkeypatch.setattr(native_module, "_failed", False)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with pytest.warns(
        RuntimeWarning, match="could not be built .no compiler here.*plain tensor ops"
    ):
        assert native_module.kernels() is None
    assert native_module.kernels() is None  # tried once, then quietly off
    _assert_all_close(_agru_case(1, 4, 5, 3, "AUGRU", "tanh", "holes"), want)


def test_native_kernels_take_only_cpu_float32_or_float64(monkeypatch):
    monkeypatch.setattr(native_module, "kernels", lambda: "kernels")
    f32, f64 = torch.ones(2), torch.ones(2, dtype=torch.float64)
    assert native_module.usable(f32, None, f32) == "kernels"
    assert native_module.usable(f64) == "kernels"
    assert native_module.usable(f32, f64) is None  # mixed precisions
    assert native_module.usable(torch.ones(2, dtype=torch.bfloat16)) is None
    assert native_module.usable(torch.ones(2, device="meta")) is None


def test_set_native_switches_and_checks_its_argument():
    previous = native_module.set_native(False)
    try:
        assert native_module.kernels() is None
        with pytest.raises(TypeError, match="set_native: enabled must be a bool, got 1"):
            native_module.set_native(1)
    finally:
        native_module.set_native(previous)
