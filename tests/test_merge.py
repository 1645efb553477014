import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monolith_layers import merge_tensor_list


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 4), f=st.integers(1, 5), e=st.integers(1, 4), keep=st.booleans())
def test_single_3d_tensor(b, f, e, keep):
    x = torch.randn(b, f, e)
    concat = merge_tensor_list(x, "concat", keep_list=keep)
    stack = merge_tensor_list(x, "stack", keep_list=keep)
    if keep:
        assert isinstance(concat, list) and isinstance(stack, list)
        concat, stack = concat[0], stack[0]
    assert torch.equal(concat, x.reshape(b, f * e))
    assert stack is x
    parts = merge_tensor_list(x, None)
    assert len(parts) == f and all(torch.equal(p, x[:, i]) for i, p in enumerate(parts))


def test_single_2d_tensor_with_num_feature():
    x = torch.arange(12.0).reshape(2, 6)
    assert merge_tensor_list(x, "stack", num_feature=3).shape == (2, 3, 2)
    assert merge_tensor_list(x, "concat", num_feature=3) is x
    parts = merge_tensor_list(x, None, num_feature=3)
    assert len(parts) == 3 and torch.equal(parts[1], x[:, 2:4])
    assert merge_tensor_list(x, "stack") is x
    assert merge_tensor_list(x, "stack", num_feature=1) is x
    with pytest.raises(ValueError, match="cannot be split into num_feature=4"):
        merge_tensor_list(x, "stack", num_feature=4)


def test_lists():
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    assert merge_tensor_list([a, b], "stack").shape == (2, 2, 3)
    assert merge_tensor_list([a, b], "concat").shape == (2, 6)
    assert merge_tensor_list([a, b], "concat", keep_list=True)[0].shape == (2, 6)
    assert merge_tensor_list([a, b], None) == [a, b]


def test_errors():
    with pytest.raises(ValueError, match="merge_type must be one of"):
        merge_tensor_list(torch.randn(2, 3), "add")
    with pytest.raises(ValueError, match=r"must be \(B, F, E\) or \(B, E\), got shape \(2,\)"):
        merge_tensor_list(torch.randn(2))
    with pytest.raises(TypeError, match=r"tensor_list\[1\] must be a torch.Tensor"):
        merge_tensor_list([torch.randn(2, 3), [1, 2]])
    with pytest.raises(ValueError, match="empty"):
        merge_tensor_list([])
