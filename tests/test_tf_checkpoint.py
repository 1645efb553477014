import shutil

import numpy as np
import pytest
import torch
from parity import Case, fixture_dir

from monolith_layers import load_monolith_checkpoint, read_tf_checkpoint
from monolith_layers.interop import CheckpointError
from monolith_layers.interop.tf_checkpoint import _masked_crc32c

CASES = {
    "mlp_weightnorm": ("MLP", lambda i: tuple(i["x"].shape), ("x",)),
    "din_sum": (
        "DIN",
        lambda i: [tuple(i["queries"].shape), tuple(i["keys"].shape)],
        ("queries", "keys"),
    ),
    "dien": (
        "DIEN",
        lambda i: [tuple(i["queries"].shape), tuple(i["keys"].shape)],
        ("queries", "keys"),
    ),
    "dmr_u2i": (
        "DMR_U2I",
        lambda i: [tuple(i["items"].shape), tuple(i["user_seq"].shape)],
        ("items", "user_seq"),
    ),
}


def _checkpoint_dir(name):
    return fixture_dir() / "checkpoints" / name


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_holds_the_fixture_weights(name):
    tensors = read_tf_checkpoint(_checkpoint_dir(name))
    case = Case(name)
    weights = {k[: -len(":0")]: v for k, v in case.section("weight/").items()}
    assert set(tensors) == set(weights) | {"global_step", "ema_decay"}
    for key, value in weights.items():
        assert tensors[key].dtype == np.float32
        np.testing.assert_array_equal(tensors[key], value)
    assert tensors["global_step"].dtype == np.int64 and tensors["global_step"].shape == ()
    assert tensors["ema_decay"].dtype == np.float64


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_loaded_from_checkpoint_reproduces_the_original(name):
    class_name, shapes, order = CASES[name]
    case = Case(name)
    inputs = case.inputs
    from monolith_layers import from_monolith

    layer = from_monolith(class_name, case.meta["ctor_kwargs"], shapes(inputs))
    report = load_monolith_checkpoint(layer, _checkpoint_dir(name))
    assert report["missing"] == [] and set(report["unexpected"]) == {"global_step", "ema_decay"}
    with torch.no_grad():
        out = layer(*(inputs[k] for k in order))
    np.testing.assert_allclose(out.numpy(), case.data["output/outputs"], rtol=1e-5, atol=1e-6)


def test_prefix_index_and_directory_paths_agree():
    directory = _checkpoint_dir("mlp_weightnorm")
    by_dir = read_tf_checkpoint(directory)
    by_prefix = read_tf_checkpoint(directory / "model.ckpt")
    by_index = read_tf_checkpoint(directory / "model.ckpt.index")
    assert by_dir.keys() == by_prefix.keys() == by_index.keys()


def test_missing_variables_are_reported():
    from monolith_layers import MLP

    with pytest.raises(ValueError, match=r"variables \['dense_3/bias'"):
        load_monolith_checkpoint(MLP([8, 4, 1, 1], input_dim=10), _checkpoint_dir("mlp_weightnorm"))


def test_corruption_is_detected(tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(_checkpoint_dir("mlp_weightnorm"), copy)
    data = copy / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[20] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="CRC32C mismatch"):
        read_tf_checkpoint(copy)
    assert len(read_tf_checkpoint(copy, verify=False)) == 11
    index = copy / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CheckpointError, match="bad magic"):
        read_tf_checkpoint(copy)
    with pytest.raises(CheckpointError, match="no checkpoint index"):
        read_tf_checkpoint(tmp_path / "nothing")


def test_masked_crc32c_known_value():
    # CRC32C("123456789") = 0xE3069283 (the standard check value), then TF's mask.
    crc = 0xE3069283
    assert _masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_repo_fixture_copies_match_the_shared_ones():
    from parity import HERE, SHARED

    if not (SHARED / "MANIFEST.json").exists():
        pytest.skip("../shared/parity is not beside this checkout")
    for shared in sorted(SHARED.rglob("*")):
        if shared.is_file() and shared.name != "README.md":
            copy = HERE / "fixtures" / shared.relative_to(SHARED)
            assert copy.exists() and copy.read_bytes() == shared.read_bytes(), copy
