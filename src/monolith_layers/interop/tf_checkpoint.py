"""Read (and write) TensorFlow name-based checkpoints, what Monolith's ``Saver``
writes, without TensorFlow.

A checkpoint ``<prefix>`` is two kinds of file:

* ``<prefix>.index``: a LevelDB-format table (sorted string -> bytes). The
  key ``""`` holds a ``BundleHeaderProto``; every other key is a variable
  name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset,
  size, masked CRC32C of the bytes).
* ``<prefix>.data-SSSSS-of-NNNNN``: the raw little-endian tensor bytes.

Nothing is trusted before it is checked. The index is verified whole before
any entry is used: the footer's magic, every block's masked CRC32C (which
covers the block and its compression byte), the block layout (restart
array, key prefixes, lengths in bounds, keys strictly increasing), the
header (shard count, endianness, format version) and every entry (a dtype
and shape whose byte size is the stored size, a shard that exists, a byte
range inside its shard). Tensor bytes are then read only for the entries a
caller asks for, by seeking into the shards, and each is checked against its
CRC32C. Anything wrong raises :class:`CheckpointError` naming the file and
what is wrong; a checkpoint never loads different numbers silently.

CRC32C uses ``google-crc32c`` (compiled) when it is installed, and a
pure-Python table otherwise (fine for small checkpoints; install
``google-crc32c`` for large ones, see ``docs``/README figures).
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .monolith import _resolve_names, load_monolith_weights, monolith_variables

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
_BLOCK_TRAILER = 5  # compression type (1 byte) + masked CRC32C (4 bytes)
_MAX_SHARDS = 1 << 20
_BUNDLE_VERSION = 1  # TF's kTensorBundleVersion; we read what a consumer of v1 may

# tensorflow/core/framework/types.proto -> numpy. bfloat16 (14) is read as
# float32, exactly (a bfloat16 is the top half of a float32).
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    8: np.complex64,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    18: np.complex128,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
_DT_BFLOAT16 = 14
_DTYPE_NAMES = {7: "DT_STRING", 14: "DT_BFLOAT16", 20: "DT_RESOURCE", 21: "DT_VARIANT"}
_NUMPY_TO_TF = {np.dtype(v): k for k, v in _DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, corrupt, or holds what we cannot read."""


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


def _crc32c_python(data: bytes | memoryview) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # a compiled CRC32C, ~1000x the pure-Python table
    import google_crc32c as _google_crc32c

    def _crc32c(data: bytes | memoryview) -> int:
        return _google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)

    CRC32C_BACKEND = "google-crc32c"
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c = _crc32c_python
    CRC32C_BACKEND = "python"


def _mask(crc: int) -> int:
    # TF stores CRCs "masked" so that a CRC of data holding CRCs stays sound.
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _masked_crc32c(data: bytes | memoryview) -> int:
    return _mask(_crc32c(data))


# ------------------------------------------------------------- protobuf wire
class _Malformed(Exception):
    """Raised by the parsers below; turned into a CheckpointError naming the file."""


def _varint(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    end = len(buf) if end is None else end
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, list[tuple[int, int | bytes]]]:
    """Field number -> [(wire type, value)], values ints or bytes."""
    fields: dict[int, list[tuple[int, int | bytes]]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("protobuf field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Malformed("truncated fixed64 field")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Malformed("length-delimited field runs past its message")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Malformed("truncated fixed32 field")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append((wire, value))
    return fields


def _scalar(fields, number: int, wire: int, default, what: str):
    """The last value of a singular field, checked to have the expected wire type."""
    values = fields.get(number)
    if not values:
        return default
    for got, _ in values:
        if got != wire:
            raise _Malformed(f"{what}: wire type {got}, expected {wire}")
    return values[-1][1]


def _repeated(fields, number: int, wire: int, what: str) -> list:
    values = fields.get(number, [])
    for got, _ in values:
        if got != wire:
            raise _Malformed(f"{what}: wire type {got}, expected {wire}")
    return [v for _, v in values]


# ------------------------------------------------------------------- table
def _handle(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return offset, size, pos


def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    """One table block's contents, after checking its bounds, CRC and compression."""
    limit = len(data) - _FOOTER_SIZE
    if offset + size + _BLOCK_TRAILER > limit:
        raise _Malformed(f"{what} block [{offset}, {offset + size}) runs past the table")
    contents = data[offset : offset + size + 1]  # the block and its compression byte
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if _masked_crc32c(contents) != stored:
        raise _Malformed(f"{what} block at byte {offset}: CRC32C mismatch (the index is corrupt)")
    if contents[-1] != 0:
        raise _Malformed(f"{what} block is compressed (type {contents[-1]}), not supported")
    return contents[:-1]


def _block_entries(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Malformed(f"{what} block too short for its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    if num_restarts == 0 or end < 0:
        raise _Malformed(f"{what} block has an impossible restart count {num_restarts}")
    for i in range(num_restarts):
        (restart,) = struct.unpack_from("<I", block, end + 4 * i)
        if restart > end:
            raise _Malformed(f"{what} block restart point {restart} is past its entries")
    pos, key, first = 0, b"", True
    while pos < end:
        shared, pos = _varint(block, pos, end)
        unshared, pos = _varint(block, pos, end)
        value_len, pos = _varint(block, pos, end)
        if shared > len(key) or (first and shared):
            raise _Malformed(f"{what} block entry shares {shared} bytes of a shorter key")
        if pos + unshared + value_len > end:
            raise _Malformed(f"{what} block entry runs past the block")
        new_key = key[:shared] + block[pos : pos + unshared]
        if not first and new_key <= key:
            raise _Malformed(f"{what} block keys are not strictly increasing")
        key, first = new_key, False
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _table_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB table, all blocks verified."""
    if len(data) < _FOOTER_SIZE:
        raise _Malformed(f"{len(data)} bytes is too short for a table footer")
    footer_start = len(data) - _FOOTER_SIZE
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != _TABLE_MAGIC:
        raise _Malformed("not a TF/LevelDB table (bad magic)")
    meta_offset, meta_size, pos = _handle(data, footer_start, len(data) - 8)
    index_offset, index_size, _ = _handle(data, pos, len(data) - 8)
    list(_block_entries(_block(data, meta_offset, meta_size, "metaindex"), "metaindex"))
    entries: list[tuple[bytes, bytes]] = []
    index = _block(data, index_offset, index_size, "index")
    for separator, handle in _block_entries(index, "index"):
        offset, size, end = _handle(handle, 0, len(handle))
        if end != len(handle):
            raise _Malformed("index block entry is not one block handle")
        block_entries = list(_block_entries(_block(data, offset, size, "data"), "data"))
        if block_entries and (
            block_entries[-1][0] > separator or (entries and block_entries[0][0] <= entries[-1][0])
        ):
            raise _Malformed("data blocks are out of key order")
        entries.extend(block_entries)
    return entries


# -------------------------------------------------------------- checkpoint
@dataclass(frozen=True)
class TensorEntry:
    """What the index says of one variable."""

    name: str
    dtype: int  # TF DataType enum
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int

    @property
    def readable(self) -> bool:
        return self.dtype in _DTYPES or self.dtype == _DT_BFLOAT16

    @property
    def dtype_name(self) -> str:
        if self.dtype in _DTYPES:
            return np.dtype(_DTYPES[self.dtype]).name
        return _DTYPE_NAMES.get(self.dtype, f"TF dtype {self.dtype}")


def _itemsize(dtype: int) -> int | None:
    if dtype == _DT_BFLOAT16:
        return 2
    return np.dtype(_DTYPES[dtype]).itemsize if dtype in _DTYPES else None


def _parse_header(value: bytes) -> int:
    fields = _fields(value)
    num_shards = _scalar(fields, 1, 0, 0, "header num_shards")
    if not 1 <= num_shards <= _MAX_SHARDS:
        raise _Malformed(f"header names {num_shards} shards")
    endianness = _scalar(fields, 2, 0, 0, "header endianness")
    if endianness == 1:
        raise _Malformed("big-endian checkpoints are not supported")
    if endianness != 0:
        raise _Malformed(f"header endianness {endianness} is neither little (0) nor big (1)")
    version = _fields(_scalar(fields, 3, 2, b"", "header version"))
    min_consumer = _scalar(version, 2, 0, 0, "header min_consumer")
    if min_consumer > _BUNDLE_VERSION:
        raise _Malformed(f"written for readers of version >= {min_consumer}; we read version 1")
    if _BUNDLE_VERSION in _repeated(version, 3, 0, "header bad_consumers"):
        raise _Malformed("the writer marked readers of version 1 as unable to read it")
    return num_shards


def _parse_entry(name: str, value: bytes, num_shards: int) -> TensorEntry:
    fields = _fields(value)
    if 7 in fields:
        raise _Malformed(f"variable {name!r} is stored in slices, which is not supported")
    shape: list[int] = []
    shape_proto = _fields(_scalar(fields, 2, 2, b"", f"{name!r} shape"))
    if _scalar(shape_proto, 3, 0, 0, f"{name!r} unknown_rank"):
        raise _Malformed(f"variable {name!r} has an unknown rank")
    for dim in _repeated(shape_proto, 2, 2, f"{name!r} shape dim"):
        size = _scalar(_fields(dim), 1, 0, 0, f"{name!r} dim size")
        if size >= 1 << 62:  # int64 -1 (unknown) or another negative size
            raise _Malformed(f"variable {name!r} has a negative dimension")
        shape.append(size)
    crc = _scalar(fields, 6, 5, None, f"{name!r} crc32c")
    if crc is None:
        raise _Malformed(f"variable {name!r} has no CRC32C")
    entry = TensorEntry(
        name=name,
        dtype=_scalar(fields, 1, 0, 0, f"{name!r} dtype"),
        shape=tuple(shape),
        shard=_scalar(fields, 3, 0, 0, f"{name!r} shard_id"),
        offset=_scalar(fields, 4, 0, 0, f"{name!r} offset"),
        size=_scalar(fields, 5, 0, 0, f"{name!r} size"),
        crc=crc,
    )
    if entry.shard >= num_shards:
        raise _Malformed(f"variable {name!r} is in shard {entry.shard} of {num_shards}")
    itemsize = _itemsize(entry.dtype)
    if itemsize is not None and entry.size != itemsize * math.prod(entry.shape):
        raise _Malformed(
            f"variable {name!r}: {entry.size} bytes do not hold a {entry.dtype_name} "
            f"tensor of shape {entry.shape}"
        )
    return entry


def _resolve_prefix(path: str | os.PathLike) -> Path:
    """A checkpoint prefix from a prefix, an ``.index`` file or a directory."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if not state.is_file():
            raise CheckpointError(f"{path} has no 'checkpoint' file naming the latest checkpoint")
        try:
            text = state.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{state}: cannot be read: {err}") from None
        for line in text.splitlines():
            if line.startswith("model_checkpoint_path:"):
                name = line.split(":", 1)[1].strip().strip('"')
                if not name:
                    break
                return Path(name) if Path(name).is_absolute() else path / name
        raise CheckpointError(f"{state} names no model_checkpoint_path")
    if path.suffix == ".index":
        return path.with_suffix("")
    return path


class TFCheckpoint:
    """An opened checkpoint: the verified index, and reads of single tensors.

    ``TFCheckpoint(path)`` parses and verifies the whole index (see the
    module docstring) and reads no tensor data; :meth:`read` then reads just
    the named tensors from their shards.

    Args:
        path: the prefix (``.../model.ckpt``), its ``.index`` file, or a
            directory whose ``checkpoint`` file names the latest checkpoint.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.prefix = _resolve_prefix(path)
        self.index_path = Path(f"{self.prefix}.index")
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint index at {self.index_path}") from None
        except OSError as err:
            raise CheckpointError(f"{self.index_path}: cannot be read: {err}") from None
        try:
            self.num_shards, self.entries = self._parse_index(data)
        except _Malformed as err:
            raise CheckpointError(f"{self.index_path}: {err}") from None

    @staticmethod
    def _parse_index(data: bytes) -> tuple[int, dict[str, TensorEntry]]:
        table = _table_entries(data)
        if not table or table[0][0] != b"":
            raise _Malformed("no bundle header (the empty key)")
        num_shards = _parse_header(table[0][1])
        entries: dict[str, TensorEntry] = {}
        for key, value in table[1:]:
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed(f"variable name {key!r} is not UTF-8") from None
            entries[name] = _parse_entry(name, value, num_shards)
        return num_shards, entries

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def keys(self) -> list[str]:
        return list(self.entries)

    def read(
        self, names: Iterable[str] | None = None, verify: bool = True
    ) -> dict[str, np.ndarray]:
        """The named tensors (all readable ones when ``names`` is None).

        A named entry of a dtype we cannot read (DT_STRING, ...) raises; with
        ``names=None`` such entries are skipped with a warning that lists them.
        """
        if names is None:
            skipped = [e.name for e in self.entries.values() if not e.readable]
            if skipped:
                warnings.warn(
                    f"{self.index_path}: skipping entries of dtypes we do not read: {skipped}",
                    stacklevel=2,
                )
            wanted = [e for e in self.entries.values() if e.readable]
        else:
            wanted = []
            for name in names:
                if name not in self.entries:
                    raise CheckpointError(f"{self.index_path}: no variable {name!r}")
                entry = self.entries[name]
                if not entry.readable:
                    raise CheckpointError(
                        f"{self.index_path}: variable {name!r} has dtype {entry.dtype_name}, "
                        "which we do not read"
                    )
                wanted.append(entry)
        tensors: dict[str, np.ndarray] = {}
        by_shard: dict[int, list[TensorEntry]] = {}
        for entry in wanted:
            by_shard.setdefault(entry.shard, []).append(entry)
        for shard, entries in sorted(by_shard.items()):
            tensors.update(self._read_shard(shard, entries, verify))
        return {e.name: tensors[e.name] for e in wanted}

    def _read_shard(self, shard: int, entries: list[TensorEntry], verify: bool):
        path = self.shard_path(shard)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise CheckpointError(f"missing data shard {path}") from None
        except OSError as err:
            raise CheckpointError(f"{path}: cannot be read: {err}") from None
        out: dict[str, np.ndarray] = {}
        with handle:
            size = os.fstat(handle.fileno()).st_size
            for entry in sorted(entries, key=lambda e: e.offset):
                if entry.offset + entry.size > size:
                    raise CheckpointError(
                        f"{path}: variable {entry.name!r} needs bytes "
                        f"[{entry.offset}, {entry.offset + entry.size}) but the file has "
                        f"{size} (truncated)"
                    )
                handle.seek(entry.offset)
                raw = np.empty(entry.size, dtype=np.uint8)
                if handle.readinto(memoryview(raw)) != entry.size:
                    raise CheckpointError(f"{path}: short read of variable {entry.name!r}")
                if verify and _masked_crc32c(memoryview(raw)) != entry.crc:
                    raise CheckpointError(
                        f"{path}: variable {entry.name!r}: CRC32C mismatch, the data is corrupt"
                    )
                out[entry.name] = _decode(raw, entry)
        return out


def _decode(raw: np.ndarray, entry: TensorEntry) -> np.ndarray:
    if entry.dtype == _DT_BFLOAT16:
        halves = raw.view("<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(entry.shape)
    dtype = np.dtype(_DTYPES[entry.dtype]).newbyteorder("<")
    values = raw.view(dtype).reshape(entry.shape)
    return values.astype(values.dtype.newbyteorder("="), copy=False)


def read_tf_checkpoint(
    path: str | os.PathLike, verify: bool = True, names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Variables of a TF name-based checkpoint, by name (without ``:0``).

    Args:
        path: the checkpoint prefix (``.../model.ckpt``), its ``.index`` file,
            or a directory whose ``checkpoint`` file names the latest one.
        verify: check each tensor's CRC32C against the index (the index's own
            block checksums are always checked).
        names: read only these variables (default: every readable one).

    Raises:
        CheckpointError: a missing, truncated, malformed or corrupt file,
            compressed or sliced entries, a named entry of a dtype we do not read.
    """
    return TFCheckpoint(path).read(names, verify=verify)


def load_monolith_checkpoint(
    module, path: str | os.PathLike, scope: str | None = None, strict: bool = True
) -> dict[str, list[str]]:
    """Fill a layer from a TF checkpoint written by Monolith.

    Only the entries the layer needs are read (and CRC-checked). A
    checkpoint holds more than one layer (``global_step``, optimiser slots,
    other layers), so unused entries are fine; with ``strict`` every
    variable of ``module`` must be found. ``scope`` restricts the search to
    one layer's names when several layers of the same kind are in the
    checkpoint. All or nothing: on any error the module is left untouched.
    Returns :func:`load_monolith_weights`'s report.
    """
    checkpoint = TFCheckpoint(path)
    matched, unexpected = _resolve_names(list(monolith_variables(module)), checkpoint.keys(), scope)
    missing = sorted(set(monolith_variables(module)) - set(matched))
    if strict and missing:
        raise ValueError(
            f"load_monolith_checkpoint({type(module).__name__}): variables {missing} "
            f"are not in the checkpoint {checkpoint.prefix}"
        )
    tensors = checkpoint.read(matched.values())
    load_monolith_weights(module, tensors, strict=False, scope=scope)
    return {"missing": missing, "unexpected": sorted(unexpected)}


# ------------------------------------------------------------------ writer
def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _put_varint(number << 3 | wire)
    if wire == 0:
        return key + _put_varint(int(payload))
    if wire == 5:
        return key + struct.pack("<I", int(payload))
    return key + _put_varint(len(payload)) + payload


def _finish_block(entries: list[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += _put_varint(shared) + _put_varint(len(key) - shared) + _put_varint(len(value))
        out += key[shared:] + value
        previous = key
    for restart in restarts or [0]:
        out += struct.pack("<I", restart)
    out += struct.pack("<I", len(restarts) or 1)
    return bytes(out)


def _short_successor(key: bytes) -> bytes:
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_tf_checkpoint(prefix: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> Path:
    """Write ``{name: array}`` as a one-shard TF name-based checkpoint at ``prefix``.

    The files are byte for byte what TensorFlow's ``BundleWriter`` writes for
    the same tensors (tested on the parity checkpoints), so TF's ``Saver``
    and :func:`read_tf_checkpoint` read them. Also writes the ``checkpoint``
    state file beside them. Returns the prefix.
    """
    records = []
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")  # ascontiguousarray would make 0-d 1-d
        dtype = _NUMPY_TO_TF.get(array.dtype.newbyteorder("="))
        if dtype is None:
            raise TypeError(f"write_tf_checkpoint: {name!r} has dtype {array.dtype}, not writable")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        records.append((name, dtype, array.shape, raw))
    return _write_bundle(prefix, records)


def _write_bundle(
    prefix: str | os.PathLike, records: list[tuple[str, int, tuple[int, ...], bytes]]
) -> Path:
    """Write ``(name, TF dtype, shape, raw bytes)`` records, sorted by name, as a checkpoint."""
    prefix = Path(prefix)
    data, entries = bytearray(), []
    for name, dtype, shape, raw in sorted(records):
        dims = b"".join(_field(2, 2, _field(1, 0, d) if d else b"") for d in shape)
        proto = _field(1, 0, dtype) + _field(2, 2, dims)
        if data:
            proto += _field(4, 0, len(data))
        if raw:
            proto += _field(5, 0, len(raw))
        proto += _field(6, 5, _masked_crc32c(raw))
        entries.append((name.encode(), proto))
        data += raw
    header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, _BUNDLE_VERSION))
    table = bytearray()

    def add_block(contents: bytes) -> bytes:
        handle = _put_varint(len(table)) + _put_varint(len(contents))
        table.extend(contents + b"\x00")
        table.extend(struct.pack("<I", _masked_crc32c(contents + b"\x00")))
        return handle

    rows = [(b"", header)] + entries
    data_handle = add_block(_finish_block(rows))
    meta_handle = add_block(_finish_block([]))
    index_handle = add_block(_finish_block([(_short_successor(rows[-1][0]), data_handle)]))
    footer = (meta_handle + index_handle).ljust(_FOOTER_SIZE - 8, b"\x00")
    table += footer + struct.pack("<Q", _TABLE_MAGIC)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    Path(f"{prefix}.index").write_bytes(bytes(table))
    (prefix.parent / "checkpoint").write_text(
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'
    )
    return prefix
