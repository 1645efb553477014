import shutil

import numpy as np
import pytest
import torch
from parity import Case, fixture_dir

from monolith_layers import (
    MLP,
    load_monolith_checkpoint,
    load_monolith_weights,
    read_tf_checkpoint,
    write_tf_checkpoint,
)
from monolith_layers.interop import CheckpointError, TFCheckpoint
from monolith_layers.interop.tf_checkpoint import (
    _crc32c_python,
    _masked_crc32c,
    _write_bundle,
)

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


# ------------------------------------------------------------ hostile files
def _same(a, b):
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k])
        for k in a
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_single_bit_flip_of_the_index_loads_other_weights(name, tmp_path):
    source = _checkpoint_dir(name)
    original = read_tf_checkpoint(source)
    index = (source / "model.ckpt.index").read_bytes()
    shutil.copy(source / "model.ckpt.data-00000-of-00001", tmp_path)
    target = tmp_path / "model.ckpt.index"
    errors = 0
    for bit in range(len(index) * 8):
        flipped = bytearray(index)
        flipped[bit // 8] ^= 1 << (bit % 8)
        target.write_bytes(bytes(flipped))
        try:
            loaded = read_tf_checkpoint(tmp_path / "model.ckpt")
        except CheckpointError as err:
            assert "model.ckpt.index" in str(err)  # the error names the file
            errors += 1
            continue
        assert _same(loaded, original), f"bit {bit} loaded different weights without an error"
    # Only the footer's padding may change without an error (it carries nothing).
    assert errors >= len(index) * 8 - 8 * 40


@pytest.mark.parametrize("name", ["dien", "mlp_weightnorm"])
def test_every_corrupt_byte_of_the_data_shard_is_caught(name, tmp_path):
    source = _checkpoint_dir(name)
    original = read_tf_checkpoint(source)
    data = (source / "model.ckpt.data-00000-of-00001").read_bytes()
    shutil.copy(source / "model.ckpt.index", tmp_path)
    target = tmp_path / "model.ckpt.data-00000-of-00001"
    for i in range(len(data)):
        for pattern in (0x01, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[i] ^= pattern
            target.write_bytes(bytes(flipped))
            with pytest.raises(CheckpointError, match="CRC32C mismatch"):
                read_tf_checkpoint(tmp_path / "model.ckpt")
    target.write_bytes(data)
    assert _same(read_tf_checkpoint(tmp_path / "model.ckpt"), original)


def test_truncated_and_missing_files_raise_checkpoint_error(tmp_path):
    source = _checkpoint_dir("din_sum")
    index = (source / "model.ckpt.index").read_bytes()
    data = (source / "model.ckpt.data-00000-of-00001").read_bytes()
    shard = tmp_path / "model.ckpt.data-00000-of-00001"
    shard.write_bytes(data)
    for length in range(len(index)):
        (tmp_path / "model.ckpt.index").write_bytes(index[:length])
        with pytest.raises(CheckpointError, match="model.ckpt.index"):
            read_tf_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt.index").write_bytes(index)
    for length in (0, 1, len(data) // 2, len(data) - 1):
        shard.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match=r"data-00000-of-00001.*truncated"):
            read_tf_checkpoint(tmp_path / "model.ckpt")
    shard.unlink()
    with pytest.raises(CheckpointError, match="missing data shard .*data-00000-of-00001"):
        read_tf_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "checkpoint").write_text("garbage\n")
    with pytest.raises(CheckpointError, match="names no model_checkpoint_path"):
        read_tf_checkpoint(tmp_path)


def test_writer_reproduces_tensorflows_files_byte_for_byte(tmp_path):
    for name in sorted(CASES):
        source = _checkpoint_dir(name)
        prefix = write_tf_checkpoint(tmp_path / name / "model.ckpt", read_tf_checkpoint(source))
        for suffix in (".index", ".data-00000-of-00001"):
            written = (tmp_path / name / f"model.ckpt{suffix}").read_bytes()
            assert written == (source / f"model.ckpt{suffix}").read_bytes(), (name, suffix)
        assert _same(read_tf_checkpoint(prefix), read_tf_checkpoint(source))


def test_entries_of_unread_dtypes_do_not_stop_a_load(tmp_path):
    layer = MLP([2, 1], input_dim=3)
    weights = {k: v.detach().numpy() * 0 + 0.5 for k, v in layer.monolith_variables().items()}
    records = [(k, 1, w.shape, w.astype("<f4").tobytes()) for k, w in weights.items()]
    records.append(("vocab", 7, (2,), b"\x01a\x01b"))  # DT_STRING
    bf16 = np.array([1.5, -2.0], dtype=np.float32).view(np.uint32) >> 16
    records.append(("half_precision", 14, (2,), bf16.astype("<u2").tobytes()))
    prefix = _write_bundle(tmp_path / "model.ckpt", records)
    report = load_monolith_checkpoint(layer, prefix)
    assert set(report["unexpected"]) == {"vocab", "half_precision"}
    assert all(bool((p == 0.5).all()) for p in layer.monolith_variables().values())
    with pytest.warns(UserWarning, match=r"skipping entries of dtypes we do not read: \['vocab'\]"):
        everything = read_tf_checkpoint(prefix)
    np.testing.assert_array_equal(everything["half_precision"], [1.5, -2.0])  # bfloat16, exactly
    with pytest.raises(CheckpointError, match="'vocab' has dtype DT_STRING"):
        read_tf_checkpoint(prefix, names=["vocab"])


def test_a_load_reads_and_checks_only_the_entries_it_needs(tmp_path):
    layer = MLP([2, 1], input_dim=3)
    weights = {k: v.detach().numpy() for k, v in layer.monolith_variables().items()}
    weights["optimizer/slot"] = np.arange(1000, dtype=np.float32)
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", weights)
    entry = TFCheckpoint(prefix).entries["optimizer/slot"]
    shard = tmp_path / "model.ckpt.data-00000-of-00001"
    raw = bytearray(shard.read_bytes())
    raw[entry.offset + 10] ^= 0xFF  # corrupt a tensor the layer does not need
    shard.write_bytes(bytes(raw))
    fresh = MLP([2, 1], input_dim=3)
    load_monolith_checkpoint(fresh, prefix)
    for key, value in fresh.monolith_variables().items():
        np.testing.assert_array_equal(value.detach().numpy(), weights[key])
    with pytest.raises(CheckpointError, match="'optimizer/slot': CRC32C mismatch"):
        read_tf_checkpoint(prefix)


def test_python_and_compiled_crc32c_agree():
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 100, 4097):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert (
            _masked_crc32c(data)
            == (((_crc32c_python(data) >> 15) | (_crc32c_python(data) << 17)) + 0xA282EAD8)
            & 0xFFFFFFFF
        )


# ------------------------------------------------------- all-or-nothing load
def _snapshot(layer):
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


def test_load_monolith_weights_is_all_or_nothing():
    layer = MLP([2, 1], input_dim=3)
    before = _snapshot(layer)
    good = {k: np.ones(tuple(v.shape), np.float32) for k, v in layer.monolith_variables().items()}
    bad_shape = dict(good, **{"dense_1/kernel": np.ones((3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"'dense_1/kernel' has shape \(2, 1\).*\(3, 3\)"):
        load_monolith_weights(layer, bad_shape)
    for bad_value, what in (
        (None, "is None"),
        (np.ones((2, 1), np.complex64), "complex"),
        (np.array([["a"], ["b"]]), "non-numeric"),
        (np.ones((2, 1), bool), "boolean"),
        ([[1.0], [1.0, 2.0]], "not an array of numbers"),
    ):
        with pytest.raises(TypeError, match=what):
            load_monolith_weights(layer, dict(good, **{"dense_1/kernel": bad_value}))
    with pytest.raises(TypeError, match="weights must be a mapping"):
        load_monolith_weights(layer, [("dense_1/kernel", 1.0)])
    with pytest.raises(TypeError, match="weight names must be str"):
        load_monolith_weights(layer, {1: 1.0})
    after = _snapshot(layer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    load_monolith_weights(layer, good)
    assert all(bool((v == 1).all()) for v in layer.monolith_variables().values())
