"""The recurrences' operators (C++ time loops) against the plain step loops."""

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_helpers import kernel_and_reference, needs_kernels

import monolith_layers as ml
from monolith_layers import AGRUCell, KerasGRUCell, dynamic_rnn_with_attention, fused, gru_sequence
from monolith_layers._ops import build, registry

OPS = torch.ops.monolith_layers


@needs_kernels
def test_kernels_build_where_a_compiler_exists():
    assert build.kernels() is not None


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
@given(mode=st.sampled_from([None, "AGRU", "AUGRU"]), **SHAPES)
def test_attention_gru_operator_equals_the_step_loop(mode, **case):
    _assert_all_close(*kernel_and_reference(_agru_case, mode=mode, **case))


@needs_kernels
@settings(max_examples=60, deadline=None)
@given(final_only=st.booleans(), **SHAPES)
def test_keras_gru_operator_equals_the_step_loop(final_only, **case):
    _assert_all_close(*kernel_and_reference(_gru_case, final_only=final_only, **case))


# 9 rows: one 8-row block and a tail row (batch, steps, units, dim)
GRADCHECK_SHAPE = (9, 4, 5, 3)


def _agru_args(mode, mask_kind="holes", seed=3, shape=GRADCHECK_SHAPE):
    g = torch.Generator().manual_seed(seed)
    batch, steps, units, dim = shape
    f64 = dict(generator=g, dtype=torch.float64)
    x = torch.randn(batch, steps, dim, **f64)
    att = None if mode == "none" else torch.rand(batch, steps, **f64)
    h0 = torch.randn(batch, units, **f64)
    gates_kernel = torch.randn(dim + units, 2 * units, **f64) * 0.5
    gates_bias = torch.randn(2 * units, **f64)
    cand_kernel = torch.randn(dim + units, units, **f64) * 0.5
    cand_bias = torch.randn(units, **f64)
    mask = _mask(mask_kind, batch, steps, g)
    tensors = [x, att, h0, gates_kernel, gates_bias, cand_kernel, cand_bias]
    tensors = [None if t is None else t.requires_grad_() for t in tensors]
    return (*tensors, mask, mode, "tanh")


def _gru_args(mask_kind="holes", seed=4, shape=GRADCHECK_SHAPE):
    g = torch.Generator().manual_seed(seed)
    batch, steps, units, dim = shape
    f64 = dict(generator=g, dtype=torch.float64)
    tensors = [
        torch.randn(batch, steps, dim, **f64),
        torch.randn(batch, units, **f64),
        torch.randn(dim, 3 * units, **f64) * 0.5,
        torch.randn(units, 3 * units, **f64) * 0.5,
        torch.randn(2, 3 * units, **f64),
    ]
    return (*(t.requires_grad_() for t in tensors), _mask(mask_kind, batch, steps, g), "tanh")


@needs_kernels
@pytest.mark.parametrize("mode", ["none", "AGRU", "AUGRU"])
@pytest.mark.parametrize("mask_kind", ["none", "holes", "ragged"])
def test_attention_gru_operator_gradcheck(mode, mask_kind, shape=GRADCHECK_SHAPE):
    args = _agru_args(mode, mask_kind, shape=shape)
    leaves = [i for i, t in enumerate(args[:7]) if t is not None]

    def f(*values):
        full = list(args)
        for i, v in zip(leaves, values, strict=True):
            full[i] = v
        return OPS.agru(*full)

    assert torch.autograd.gradcheck(f, [args[i] for i in leaves])


@needs_kernels
@pytest.mark.parametrize("mask_kind", ["none", "holes", "ragged"])
def test_keras_gru_operator_gradcheck(mask_kind, shape=GRADCHECK_SHAPE):
    args = _gru_args(mask_kind, shape=shape)
    assert torch.autograd.gradcheck(lambda *a: OPS.gru(*a, *args[5:]), args[:5])


@needs_kernels
@pytest.mark.parametrize(
    "op, args",
    [
        ("gru", _gru_args()),
        ("gru", _gru_args("none")),
        ("agru", _agru_args("AUGRU")),
        ("agru", _agru_args("none", "ragged")),
    ],
)
def test_recurrence_operators_pass_torch_library_opcheck(op, args):
    # Schema, fake (meta) implementation, autograd registration and the
    # compiler's view of the operator, as torch checks a custom operator.
    torch.library.opcheck(getattr(OPS, op), args)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturated_gates_give_the_step_loops_results(dtype):
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
        with fused(on):
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
def test_a_nan_in_a_real_input_propagates_as_in_the_step_loop():
    cell = AGRUCell(4, input_dim=3, att_type="AUGRU")
    x = torch.randn(2, 5, 3)
    x[0, 2, 1] = float("nan")
    att = torch.rand(2, 5)
    operator_out = dynamic_rnn_with_attention(cell, x, att)[0]
    with fused(False):
        reference_out = dynamic_rnn_with_attention(cell, x, att)[0]
    assert operator_out[0, 2:].isnan().all() and not operator_out[0, :2].isnan().any()
    torch.testing.assert_close(operator_out, reference_out, equal_nan=True)


@needs_kernels
def test_operators_from_several_python_threads_give_the_serial_results():
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

    serial = [run(i) for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(run, range(4)))
    for got, want in zip(threaded, serial, strict=True):
        _assert_all_close(got, want)


def test_unbuildable_kernels_fall_back_to_the_step_loops_with_one_warning(monkeypatch):
    from torch.utils import cpp_extension

    with fused(False):
        want = _agru_case(1, 4, 5, 3, "AUGRU", "tanh", "holes")

    def no_compiler(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(build, "_module", None)
    monkeypatch.setattr(build, "_failed", False)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with pytest.warns(
        RuntimeWarning, match="could not be built .no compiler here.*plain tensor ops"
    ):
        assert build.kernels() is None
    assert build.kernels() is None  # tried once, then quietly off
    with ml.which_paths() as ran:
        got = _agru_case(1, 4, 5, 3, "AUGRU", "tanh", "holes")
    assert ran == [("agru", "reference: the C++ kernels could not be built")]
    _assert_all_close(got, want)


def test_operators_take_only_cpu_float32_or_float64(monkeypatch):
    monkeypatch.setattr(registry, "blocked", lambda: None)
    f32, f64 = torch.ones(2), torch.ones(2, dtype=torch.float64)
    assert registry.use_kernel("x", f32, None, f32)
    assert registry.use_kernel("x", f64)
    assert not registry.use_kernel("x", f32, f64)  # mixed precisions
    assert not registry.use_kernel("x", torch.ones(2, dtype=torch.bfloat16))
    assert not registry.use_kernel("x", torch.ones(2, device="meta"))
    assert not registry.use_kernel("x", f32, unsupported="a reason")


def test_set_fused_checks_its_argument_and_returns_the_old_default():
    previous = ml.set_fused(False)
    try:
        assert not ml.fused_enabled()
        with pytest.raises(TypeError, match="set_fused: enabled must be a bool, got 1"):
            ml.set_fused(1)
        with pytest.raises(TypeError, match="fused: enabled must be a bool, got 'no'"):
            ml.fused("no").__enter__()
    finally:
        assert ml.set_fused(previous) is False


def test_a_fused_block_is_local_to_its_thread():
    seen = {}

    def other_thread():
        seen["other"] = ml.fused_enabled()

    default = ml.fused_enabled()
    with fused(not default):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        seen["here"] = ml.fused_enabled()
    assert seen == {"other": default, "here": not default}
    assert ml.fused_enabled() == default


def test_set_native_and_native_are_deprecated_names_of_the_one_switch():
    with pytest.warns(DeprecationWarning, match="use monolith_layers.set_fused"):
        previous = ml.set_native(False)
    try:
        assert not ml.fused_enabled()
    finally:
        ml.set_fused(previous)
    with pytest.warns(DeprecationWarning, match="use monolith_layers.fused"):
        with ml.native(False):
            assert not ml.fused_enabled()


def test_which_paths_names_the_reason_for_the_reference():
    cell = AGRUCell(3, input_dim=2)
    x = torch.randn(2, 4, 2)
    with ml.which_paths() as ran, fused(False):
        dynamic_rnn_with_attention(cell, x, None)
    assert ran == [("agru", "reference: switched off (set_fused / fused / MONOLITH_LAYERS_FUSED)")]
    with ml.which_paths() as ran:
        gru = KerasGRUCell(3, input_dim=2, dtype=torch.bfloat16)
        gru_sequence(gru, x.to(torch.bfloat16))
    assert ran == [("gru", "reference: not one float32 / float64 dtype")]


def _din_args(activation_codes, mask_kind="holes"):
    g = torch.Generator().manual_seed(5)
    f64 = dict(generator=g, dtype=torch.float64)
    batch, steps, width = 3, 5, 4
    widths = [4 * width, 6, *([3] if len(activation_codes) > 1 else []), 1]
    tower = []
    for fan_in, fan_out in zip(widths, widths[1:], strict=False):
        tower += [torch.randn(fan_in, fan_out, **f64), torch.rand(fan_out, **f64) + 0.5]
        tower.append(torch.randn(fan_out, **f64))
    slopes = [
        torch.randn(widths[i + 1], **f64) if code == 4 else torch.empty(0, dtype=torch.float64)
        for i, code in enumerate(activation_codes)
    ]
    queries, keys = torch.randn(batch, width, **f64), torch.randn(batch, steps, width, **f64)
    mask = _mask(mask_kind, batch, steps, g)
    for t in (queries, keys, *tower, *(s for s in slopes if s.numel())):
        t.requires_grad_()
    return (queries, keys, mask, tower, list(activation_codes), slopes, True, 2.0, 1e-6, True)


@needs_kernels
@pytest.mark.parametrize(
    "op, args",
    [
        ("din_attention", _din_args([2])),
        ("din_attention", _din_args([4, 0], "none")),
        (
            "autoint",
            (torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True), None, 2, 2.0, True),
        ),
        (
            "senet",
            (
                torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True),
                [
                    torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                    for shape in ((4, 2), (2,), (2,), (2, 4), (4,), (4,))
                ],
                1e-6,
            ),
        ),
        ("senet", (torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True), [], 1e-6)),
    ],
)
def test_layer_operators_pass_torch_library_opcheck(op, args):
    torch.library.opcheck(getattr(OPS, op), args)
