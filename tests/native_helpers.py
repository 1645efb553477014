"""What the native-kernel tests share: the build check and a spy on kernel look-ups."""

import contextlib
import shutil

import pytest

import monolith_layers._native as native_module

CAN_BUILD = shutil.which("c++") is not None and shutil.which("ninja") is not None
needs_kernels = pytest.mark.skipif(not CAN_BUILD, reason="no C++ compiler / ninja here")


@contextlib.contextmanager
def counting_native_calls():
    """Records each kernel look-up in the block (True where the kernels were
    available), so that a test of a native path fails on a silent fallback."""
    calls = []
    usable = native_module.usable

    def spy(*tensors):
        kernels = usable(*tensors)
        calls.append(kernels is not None)
        return kernels

    native_module.usable = spy
    try:
        yield calls
    finally:
        native_module.usable = usable


def assert_within_float32_rounding(native, reference, exact):
    """Each float32 result of a kernel is within a few times the float32 error
    of the reference path's, both measured against the float64 reference."""
    for got, want, exact_value in zip(native, reference, exact, strict=True):
        bound = 4 * (want.double() - exact_value).abs().max() + 1e-6 * exact_value.abs().max()
        assert (got.double() - exact_value).abs().max() <= bound
