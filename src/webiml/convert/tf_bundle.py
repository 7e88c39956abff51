"""Read (and, for tests, write) TensorFlow checkpoints in the *tensor bundle* format, without TensorFlow.

A TF1/TF2 checkpoint ``PREFIX`` (e.g. ``nets/net_jpg75/model``) is two kinds of file:

``PREFIX.index``
    An SSTable (the LevelDB table format that TensorFlow's ``tensorflow/core/lib/io/table`` writes) of
    sorted ``key -> value`` pairs. The empty key holds a serialised ``BundleHeaderProto`` (number of
    data shards, endianness, format version); every other key is a tensor name whose value is a
    serialised ``BundleEntryProto``: dtype, shape, shard id, byte offset and size in the shard, and the
    masked CRC32-C of the bytes.

    Table layout: data blocks, a meta-index block, an index block, then a 48-byte footer (the meta-index
    and index ``BlockHandle`` s as varints ``offset, size``, zero padding to 40 bytes, the magic number
    ``0xdb4775248b80fb57`` little-endian). Every block is followed by a 5-byte trailer: a compression byte
    (0 = none, the only kind TensorFlow's bundle writer uses; others are refused) and the masked CRC32-C
    of the block plus that byte. A block is a run of entries ``varint shared, varint non_shared, varint
    value_len, key[shared:] bytes, value bytes`` (keys prefix-compressed against the previous key), then
    ``uint32`` restart offsets and their ``uint32`` count. The index block maps the last key of each data
    block to that block's handle.

``PREFIX.data-SSSSS-of-NNNNN``
    The tensors' raw bytes, concatenated, little-endian, C order (row-major, TensorFlow's ``HWIO`` for
    convolution kernels). Strings, variants and resources use other encodings and are refused.

Everything is parsed by this module's own code (protobuf wire format included); nothing in the files is
executed, and every offset and size is checked against the file sizes and every checksum verified.
Partitioned variables (``slices``) are refused.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webiml.convert._common import ConversionError

__all__ = ["TensorEntry", "crc32c", "list_tensors", "read_tensor_bundle", "write_tensor_bundle"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
CRC_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto DataType -> numpy little-endian dtype (plain numeric types only)
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}


# -- CRC32-C (Castagnoli), as TensorFlow's crc32c::Value / Mask -----------------------------------------------

def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()
_CRC_TABLE_LIST = [int(v) for v in _CRC_TABLE]


def _crc_shift_tables(nbytes: int) -> list[list[int]]:
    """Tables of the linear map 'append ``nbytes`` zero bytes' on a raw CRC register, one per register byte."""
    basis = []
    for bit in range(32):  # the map of each register bit, then xor-combined per byte value
        c = 1 << bit
        for _ in range(nbytes):
            c = (c >> 8) ^ _CRC_TABLE_LIST[c & 0xFF]
        basis.append(c)
    tables = []
    for byte in range(4):
        row = [0] * 256
        for v in range(1, 256):
            low = v & -v
            row[v] = row[v ^ low] ^ basis[8 * byte + low.bit_length() - 1]
        tables.append(row)
    return tables


_SHIFT: dict[int, list[list[int]]] = {}


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32-C of ``data``. Inputs over 256 bytes are split into equal chunks (a power of two near the
    square root of the length) whose CRC registers are computed side by side with numpy and then chained:
    the register update is linear in GF(2), so the register after a chunk is the register before it carried
    over the chunk's length (a table look-up) xor the chunk's own register from zero."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    reg = 0xFFFFFFFF
    if buf.size > 256:
        chunk = 1 << min(12, max(6, round(math.log2(math.sqrt(buf.size)))))
        n_chunks = buf.size // chunk
        chunks = buf[: n_chunks * chunk].reshape(n_chunks, chunk)
        regs = np.zeros(n_chunks, dtype=np.uint32)
        for j in range(chunk):
            regs = (regs >> np.uint32(8)) ^ _CRC_TABLE[(regs ^ chunks[:, j]) & np.uint32(0xFF)]
        if chunk not in _SHIFT:
            _SHIFT[chunk] = _crc_shift_tables(chunk)
        s0, s1, s2, s3 = _SHIFT[chunk]
        for r in regs.tolist():
            reg = s0[reg & 0xFF] ^ s1[(reg >> 8) & 0xFF] ^ s2[(reg >> 16) & 0xFF] ^ s3[reg >> 24] ^ r
        buf = buf[n_chunks * chunk :]
    t = _CRC_TABLE_LIST
    for b in buf.tolist():
        reg = (reg >> 8) ^ t[(reg ^ b) & 0xFF]
    return reg ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + CRC_MASK_DELTA) & 0xFFFFFFFF


# -- protobuf wire format (only what the two messages use) --------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ConversionError("truncated or malformed varint in a TensorFlow checkpoint index")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a serialised message: varints as ints, fixed32/64 as ints, others as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((field, value))
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise ConversionError("truncated protobuf field in a TensorFlow checkpoint index")
            out.append((field, int.from_bytes(buf[pos : pos + size], "little")))
            pos += size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ConversionError("truncated protobuf field in a TensorFlow checkpoint index")
            out.append((field, buf[pos : pos + size]))
            pos += size
        else:
            raise ConversionError(f"unsupported protobuf wire type {wire} in a TensorFlow checkpoint index")
    return out


@dataclass(frozen=True)
class TensorEntry:
    """One ``BundleEntryProto``."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


def _entry(name: str, value: bytes) -> TensorEntry:
    dtype, shard, offset, size, crc, sliced = 0, 0, 0, 0, None, False
    shape: list[int] = []
    for field, v in _fields(value):
        if field == 1 and isinstance(v, int):
            dtype = v
        elif field == 2 and isinstance(v, bytes):  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}
            for f2, dim in _fields(v):
                if f2 == 2 and isinstance(dim, bytes):
                    shape.append(next((int(s) for f3, s in _fields(dim) if f3 == 1 and isinstance(s, int)), 0))
                elif f2 == 3 and dim:
                    raise ConversionError(f"tensor {name!r} has an unknown rank")
        elif field == 3 and isinstance(v, int):
            shard = v
        elif field == 4 and isinstance(v, int):
            offset = v
        elif field == 5 and isinstance(v, int):
            size = v
        elif field == 6 and isinstance(v, int):
            crc = v
        elif field == 7:
            sliced = True
    return TensorEntry(name, dtype, tuple(shape), shard, offset, size, crc, sliced)


# -- SSTable --------------------------------------------------------------------------------------------

def _block(data: bytes, offset: int, size: int, where: Path) -> bytes:
    if offset < 0 or size < 0 or offset + size + BLOCK_TRAILER_SIZE > len(data):
        raise ConversionError(f"{where} is not a TensorFlow checkpoint index: a block lies outside the file")
    block = data[offset : offset + size]
    kind = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1 : offset + size + 5], "little")
    if _mask(crc32c(data[offset : offset + size + 1])) != stored:
        raise ConversionError(f"{where}: block checksum mismatch at byte {offset} (corrupt file)")
    if kind != 0:
        raise ConversionError(f"{where}: compressed table block (type {kind}); TensorFlow's bundle writer does not compress, "
                              "so this is not a tensor-bundle index webiml reads")
    return block


def _block_entries(block: bytes, where: Path) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ConversionError(f"{where}: table block too short")
    n_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise ConversionError(f"{where}: malformed table block (restart array)")
    out: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > end:
            raise ConversionError(f"{where}: malformed table block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        out.append((key, block[pos : pos + value_len]))
        pos += value_len
    return out


def _handle(value: bytes) -> tuple[int, int]:
    offset, pos = _varint(value, 0)
    size, _ = _varint(value, pos)
    return offset, size


def _index_path(prefix: str | Path) -> Path:
    p = Path(prefix)
    if p.is_dir():
        candidates = sorted(p.glob("*.index"))
        if len(candidates) != 1:
            raise ConversionError(f"{p} should hold exactly one TensorFlow checkpoint (*.index), found {len(candidates)}")
        return candidates[0]
    if p.suffix == ".index":
        return p
    return p.with_name(p.name + ".index")


def list_tensors(prefix: str | Path) -> tuple[dict[str, TensorEntry], int]:
    """The entries of a checkpoint's index (``PREFIX``, ``PREFIX.index`` or a folder with one ``*.index``)
    and its number of data shards."""
    path = _index_path(prefix)
    if not path.is_file():
        raise ConversionError(f"TensorFlow checkpoint index not found: {path}")
    data = path.read_bytes()
    if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise ConversionError(f"{path} is not a TensorFlow checkpoint index (no SSTable footer magic)")
    footer = data[-FOOTER_SIZE:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # skip the meta-index handle
    idx_off, pos = _varint(footer, pos)
    idx_size, _ = _varint(footer, pos)
    entries: dict[str, TensorEntry] = {}
    num_shards = None
    for _, handle in _block_entries(_block(data, idx_off, idx_size, path), path):
        for key, value in _block_entries(_block(data, *_handle(handle), path), path):
            if key == b"":
                fields = dict(_fields(value))
                num_shards = int(fields.get(1, 0))  # type: ignore[arg-type]
                if int(fields.get(2, 0)) != 0:  # type: ignore[arg-type]
                    raise ConversionError(f"{path}: big-endian checkpoints are not supported")
                continue
            name = key.decode("utf-8", errors="replace")
            entries[name] = _entry(name, value)
    if num_shards is None:
        raise ConversionError(f"{path} has no bundle header: not a TensorFlow tensor-bundle checkpoint")
    return entries, num_shards


def read_tensor_bundle(prefix: str | Path, names: list[str] | None = None, verify: bool = True) -> dict[str, np.ndarray]:
    """The tensors (numpy, their own dtype and shape) of a tensor-bundle checkpoint; ``names`` limits
    which are read (all readable ones by default). ``verify`` checks each tensor's CRC32-C."""
    index = _index_path(prefix)
    entries, num_shards = list_tensors(index)
    stem = index.with_suffix("")
    wanted = list(entries) if names is None else names
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise ConversionError(f"{index}: no tensors named {', '.join(missing[:5])}")
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        e = entries[name]
        if e.sliced:
            raise ConversionError(f"{index}: tensor {name!r} is partitioned (slices), which webiml does not read")
        if e.dtype not in DTYPES:
            if names is None:
                continue  # strings, resources, ...: not weights
            raise ConversionError(f"{index}: tensor {name!r} has TensorFlow dtype {e.dtype}, not a plain numeric type")
        if not 0 <= e.shard_id < max(num_shards, 1):
            raise ConversionError(f"{index}: tensor {name!r} is in shard {e.shard_id} of {num_shards}")
        if e.shard_id not in shards:
            shard = stem.with_name(f"{stem.name}.data-{e.shard_id:05d}-of-{num_shards:05d}")
            if not shard.is_file():
                raise ConversionError(f"TensorFlow checkpoint data file not found: {shard}")
            shards[e.shard_id] = shard.read_bytes()
        blob = shards[e.shard_id]
        dt = DTYPES[e.dtype]
        count = int(np.prod(e.shape, dtype=np.int64))
        if e.size != count * dt.itemsize or e.offset < 0 or e.offset + e.size > len(blob):
            raise ConversionError(f"{index}: tensor {name!r} ({dt}, shape {e.shape}) does not fit its data "
                                  f"(offset {e.offset}, {e.size} bytes, shard of {len(blob)} bytes)")
        raw = blob[e.offset : e.offset + e.size]
        if verify and e.crc32c is not None and _mask(crc32c(raw)) != e.crc32c:
            raise ConversionError(f"{index}: checksum mismatch for tensor {name!r} (corrupt data file)")
        out[name] = np.frombuffer(raw, dtype=dt).reshape(e.shape).copy()
    return out


# -- writer (tests and fixtures: a bundle TensorFlow itself can read) -------------------------------------

def _put_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _put_varint(number << 3 | wire) + payload


def _message_bytes(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _put_varint(len(payload)) + payload)


def write_tensor_bundle(prefix: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` as a one-shard tensor-bundle checkpoint ``PREFIX.index`` + ``PREFIX.data-00000-of-00001``
    (one data block, no compression, version 1 header), the layout TensorFlow's ``tf.train.Saver`` writes."""
    prefix = Path(prefix)
    if not all(re.fullmatch(r"[\x20-\x7e]+", n) for n in tensors):
        raise ValueError("tensor names must be non-empty printable ASCII")
    data = bytearray()
    records: list[tuple[bytes, bytes]] = [(b"", _field(1, 0, _put_varint(1)) + _message_bytes(3, _field(1, 0, _put_varint(1))))]
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])  # (ascontiguousarray would make scalars 1-d); tobytes() is C order
        dt = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        if dt not in DTYPE_CODES:
            raise ValueError(f"unsupported dtype {arr.dtype} for {name!r}")
        raw = arr.astype(dt, copy=False).tobytes()
        shape = b"".join(_message_bytes(2, _field(1, 0, _put_varint(int(d)))) for d in arr.shape)
        entry = (_field(1, 0, _put_varint(DTYPE_CODES[dt])) + _message_bytes(2, shape)
                 + (_field(4, 0, _put_varint(len(data))) if data else b"") + _field(5, 0, _put_varint(len(raw)))
                 + _field(6, 5, struct.pack("<I", _mask(crc32c(raw)))))
        records.append((name.encode(), entry))
        data += raw
    table = bytearray()

    def block(items: list[tuple[bytes, bytes]]) -> bytes:
        body, prev = bytearray(), b""
        for key, value in items:
            shared = 0
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
            body += _put_varint(shared) + _put_varint(len(key) - shared) + _put_varint(len(value)) + key[shared:] + value
            prev = key
        body += struct.pack("<II", 0, 1)  # one restart point at offset 0
        offset = len(table)
        table.extend(body + b"\x00" + struct.pack("<I", _mask(crc32c(bytes(body) + b"\x00"))))
        return _put_varint(offset) + _put_varint(len(body))

    data_handle = block(records)
    meta_handle = block([])
    index_handle = block([(records[-1][0] + b"\x00", data_handle)])
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", TABLE_MAGIC)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.index").write_bytes(bytes(table) + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
