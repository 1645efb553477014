"""Read TensorFlow name-based checkpoints (what Monolith's ``Saver`` writes)
without TensorFlow.

A checkpoint ``<prefix>`` is two files:

* ``<prefix>.index``: a LevelDB-format table (sorted string -> bytes). The
  key ``""`` holds a ``BundleHeaderProto``; every other key is a variable
  name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset,
  size, masked CRC32C of the bytes).
* ``<prefix>.data-SSSSS-of-NNNNN``: the raw little-endian tensor bytes.

Only what those two formats need is implemented here: protobuf varint /
length-delimited fields, uncompressed table blocks (TF writes bundles
uncompressed), and CRC32C to check every tensor.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .monolith import load_monolith_weights

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48

# tensorflow/core/framework/types.proto -> numpy
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}


class CheckpointError(ValueError):
    """The files are not a readable TF checkpoint (or hold a dtype we do not read)."""


# ------------------------------------------------------------- protobuf wire
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, list]:
    """Field number -> values (ints for varint / fixed, bytes for length-delimited)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


# ------------------------------------------------------------------ CRC32C
def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    # TF stores CRCs "masked" so that a CRC of data holding CRCs stays sound.
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------- table
def _block(data: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    compression = data[offset + size]
    if compression != 0:
        raise CheckpointError(f"compressed table blocks (type {compression}) are not supported")
    return data[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _table_entries(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_SIZE:
        raise CheckpointError("index file too short for a table footer")
    footer = data[-_FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_SIZE - 8)
    if magic != _TABLE_MAGIC:
        raise CheckpointError("index file is not a TF/LevelDB table (bad magic)")
    _, pos = _varint(footer, 0)  # metaindex handle: offset
    _, pos = _varint(footer, pos)  # metaindex handle: size
    index_handle = footer[pos:]
    for _, data_handle in _block_entries(_block(data, index_handle)):
        yield from _block_entries(_block(data, data_handle))


# -------------------------------------------------------------- checkpoint
def _resolve_prefix(path: str | os.PathLike) -> Path:
    """A checkpoint prefix from a prefix, an ``.index`` file or a directory."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if not state.exists():
            raise CheckpointError(f"{path} has no 'checkpoint' file naming the latest checkpoint")
        for line in state.read_text().splitlines():
            if line.startswith("model_checkpoint_path:"):
                name = line.split(":", 1)[1].strip().strip('"')
                return Path(name) if Path(name).is_absolute() else path / name
        raise CheckpointError(f"{state} names no model_checkpoint_path")
    if path.suffix == ".index":
        return path.with_suffix("")
    return path


def _entry(name: str, value: bytes) -> dict:
    fields = _fields(value)
    if 7 in fields:
        raise CheckpointError(f"variable {name!r} is stored in slices, which is not supported")
    shape = []
    for shape_proto in fields.get(2, []):
        for dim in _fields(shape_proto).get(2, []):
            shape.append(_fields(dim).get(1, [0])[0])
    return {
        "dtype": fields.get(1, [0])[0],
        "shape": tuple(shape),
        "shard": fields.get(3, [0])[0],
        "offset": fields.get(4, [0])[0],
        "size": fields.get(5, [0])[0],
        "crc": fields.get(6, [None])[0],
    }


def read_tf_checkpoint(path: str | os.PathLike, verify: bool = True) -> dict[str, np.ndarray]:
    """All variables of a TF name-based checkpoint, by name (without ``:0``).

    Args:
        path: the checkpoint prefix (``.../model.ckpt``), its ``.index`` file,
            or a directory whose ``checkpoint`` file names the latest one.
        verify: check every tensor's CRC32C against the index.

    Raises:
        CheckpointError: unreadable files, compressed or sliced entries,
            string tensors, or a CRC mismatch.
    """
    prefix = _resolve_prefix(path)
    index_path = Path(f"{prefix}.index")
    if not index_path.exists():
        raise CheckpointError(f"no checkpoint index at {index_path}")
    entries = list(_table_entries(index_path.read_bytes()))
    header = dict(entries).get(b"")
    if header is None:
        raise CheckpointError(f"{index_path} has no bundle header")
    header_fields = _fields(header)
    num_shards = header_fields.get(1, [1])[0]
    if header_fields.get(2, [0])[0] != 0:
        raise CheckpointError("big-endian checkpoints are not supported")
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for key, value in entries:
        if key == b"":
            continue
        name = key.decode()
        entry = _entry(name, value)
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"variable {name!r} has TF dtype {entry['dtype']}, not supported")
        shard = entry["shard"]
        if shard not in shards:
            shards[shard] = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}").read_bytes()
        raw = shards[shard][entry["offset"] : entry["offset"] + entry["size"]]
        if len(raw) != entry["size"]:
            raise CheckpointError(f"variable {name!r}: data file is truncated")
        if verify and entry["crc"] is not None and _masked_crc32c(raw) != entry["crc"]:
            raise CheckpointError(f"variable {name!r}: CRC32C mismatch, the data file is corrupt")
        tensors[name] = (
            np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            .reshape(entry["shape"])
            .copy()
        )
    return tensors


def load_monolith_checkpoint(
    module, path: str | os.PathLike, scope: str | None = None, strict: bool = True
) -> dict[str, list[str]]:
    """Fill a layer from a TF checkpoint written by Monolith.

    A checkpoint holds more than one layer (``global_step``, optimiser slots,
    other layers), so unused entries are fine; with ``strict`` every variable
    of ``module`` must be found. ``scope`` restricts the search to one layer's
    names when several layers of the same kind are in the checkpoint.
    Returns :func:`load_monolith_weights`'s report.
    """
    report = load_monolith_weights(module, read_tf_checkpoint(path), strict=False, scope=scope)
    if strict and report["missing"]:
        raise ValueError(
            f"load_monolith_checkpoint({type(module).__name__}): variables {report['missing']} "
            f"are not in the checkpoint {path}"
        )
    return report
