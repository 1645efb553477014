"""What the kernel tests share: the build check and a record of the paths taken."""

import contextlib
import shutil

import pytest

import monolith_layers as ml

CAN_BUILD = shutil.which("c++") is not None and shutil.which("ninja") is not None
needs_kernels = pytest.mark.skipif(not CAN_BUILD, reason="no C++ compiler / ninja here")


def kernel_path() -> str:
    """What :func:`monolith_layers.which_paths` records for a kernel call on CPU
    tensors here: the C++ kernels, or the Triton ones under the Triton backend."""
    return "kernel (triton)" if ml.cpu_backend_in_use() == "triton" else "kernel"


@contextlib.contextmanager
def counting_native_calls(op=None):
    """After the block, one entry per layer call in it (True where the call ran
    its operator on this backend's kernels, False where it ran anything else),
    so that a test of the kernel path fails on a silent fallback. ``op`` keeps
    one operator's calls."""
    calls = []
    with ml.which_paths() as ran:
        yield calls
    expected = kernel_path()
    calls.extend(path == expected for name, path in ran if op is None or name == op)


def kernel_and_reference(case_fn, **case):
    """``case_fn(**case)`` through the operators (checked to be used) and with
    the fast path switched off."""
    with counting_native_calls() as calls:
        kernel = case_fn(**case)
    assert calls and all(calls), "the operator was not used"
    with ml.fused(False):
        reference = case_fn(**case)
    return kernel, reference


def assert_within_float32_rounding(native, reference, exact):
    """Each float32 result of a kernel is within a few times the float32 error
    of the reference path's, both measured against the float64 reference."""
    for got, want, exact_value in zip(native, reference, exact, strict=True):
        bound = 4 * (want.double() - exact_value).abs().max() + 1e-6 * exact_value.abs().max()
        assert (got.double() - exact_value).abs().max() <= bound
