"""Read a TensorFlow 2 checkpoint (tensor bundle) in pure Python: no TensorFlow, no protobuf package.

A SavedModel keeps its variables in ``variables/variables.index`` + ``variables.data-00000-of-00001``.
The index is a LevelDB-format table (sorted key -> value blocks, snappy-compressed, a 48-byte footer)
whose values are ``BundleEntryProto`` records (dtype, shape, shard, offset, size, masked crc32c)
pointing into the data file; the empty key holds the ``BundleHeaderProto``. TF2 object-based
checkpoints name tensors by object path (``variables/7/.ATTRIBUTES/VARIABLE_VALUE``); the serialized
``TrackableObjectGraph`` stored under ``_CHECKPOINTABLE_OBJECT_GRAPH`` gives each one its variable's
``full_name`` (``conv2d/kernel``), which is what the layers call it.

Formats: tensorflow/core/util/tensor_bundle (tensor_bundle.proto, tensor_bundle.cc),
tensorflow/core/lib/io/format.cc (tables), tensorflow/core/protobuf/trackable_object_graph.proto,
google/snappy format_description.txt. Every tensor's checksum is verified, so a damaged file is an
error, never silently wrong weights. The protobuf subset needed here is decoded by :func:`fields`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.errors import LandcoverError

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_NO_COMPRESSION, _SNAPPY = 0, 1
# tensorflow/core/framework/types.proto: DataType -> NumPy dtype (little-endian, as TF writes it).
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
_DT_STRING = 7

Fields = dict[int, list[int | bytes]]


class BundleError(LandcoverError):
    """A TensorFlow checkpoint that cannot be read as a tensor bundle."""


# --- protobuf wire format (varints, length-delimited fields, fixed32/64) -----------------------

def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated varint in a TensorFlow checkpoint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Fields:
    """Decode one protobuf message into {field number: [values]}: ints for varint and fixed fields,
    bytes for length-delimited ones (strings, sub-messages and packed arrays, decoded by the caller
    who knows the schema)."""
    out: Fields = {}
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = varint(buf, pos)
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise BundleError(f"unsupported protobuf wire type {wire} in a TensorFlow checkpoint")
        out.setdefault(number, []).append(value)
    if pos != len(buf):
        raise BundleError("truncated protobuf message in a TensorFlow checkpoint")
    return out


def first(message: Fields, number: int, default: int | bytes = 0) -> int | bytes:
    """A singular field (the last occurrence wins, as in protobuf)."""
    values = message.get(number)
    return values[-1] if values else default


# --- checksums and compression ---------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), the checksum of LevelDB tables and tensor bundles."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    """The stored form of a CRC: rotated and offset, so a CRC of data holding CRCs is not degenerate."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data``, as tables and bundles store it."""
    return _mask(crc32c(data))


def snappy_decompress(buf: bytes) -> bytes:
    """Raw snappy (the block format LevelDB tables use): literals and back-references."""
    size, pos = varint(buf, 0)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths above 60 follow in 1-4 little-endian bytes
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(buf[pos:pos + extra], "little")
                pos += extra
            out += buf[pos:pos + length + 1]
            pos += length + 1
            continue
        if kind == 1:
            length, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            length, offset = (tag >> 2) + 1, int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise BundleError("corrupt snappy block in a TensorFlow checkpoint index")
        start = len(out) - offset
        for i in range(length):  # byte by byte: a copy may overlap what it is writing
            out.append(out[start + i])
    if len(out) != size:
        raise BundleError("corrupt snappy block in a TensorFlow checkpoint index")
    return bytes(out)


# --- LevelDB table -------------------------------------------------------------------------------

def _block(data: bytes, handle: bytes) -> bytes:
    """The contents of the block a handle (varint offset, varint size) points at, checked and
    decompressed; the 5-byte trailer is the compression type and a masked crc32c."""
    offset, pos = varint(handle, 0)
    size, _ = varint(handle, pos)
    raw = data[offset:offset + size + 5]
    if len(raw) != size + 5:
        raise BundleError("truncated TensorFlow checkpoint index")
    kind, stored = raw[size], struct.unpack("<I", raw[size + 1:])[0]
    if masked_crc32c(raw[:size + 1]) != stored:
        raise BundleError("checksum mismatch in a TensorFlow checkpoint index block")
    if kind == _SNAPPY:
        return snappy_decompress(raw[:size])
    if kind == _NO_COMPRESSION:
        return raw[:size]
    raise BundleError(f"unknown compression type {kind} in a TensorFlow checkpoint index")


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Key/value pairs of a block: keys share a prefix with the previous key; a restart array of
    uint32 offsets (count last) ends the block and is not needed for a full scan."""
    restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 * (restarts + 1)
    pos, key = 0, b""
    while pos < end:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        length, pos = varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


def read_table(path: str | os.PathLike[str]) -> dict[bytes, bytes]:
    """Every key -> value of a LevelDB-format table, in key order."""
    data = Path(path).read_bytes()
    if len(data) < _FOOTER_SIZE or struct.unpack("<Q", data[-8:])[0] != _TABLE_MAGIC:
        raise BundleError(f"{path} is not a TensorFlow checkpoint index (no table footer)")
    footer = data[-_FOOTER_SIZE:]
    _, pos = varint(footer, varint(footer, 0)[1])  # skip the metaindex handle (unused by bundles)
    index = _block(data, footer[pos:])
    return {key: value for _, handle in _entries(index) for key, value in _entries(_block(data, handle))}


# --- tensor bundle -------------------------------------------------------------------------------

def _shape(shape_proto: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim (field 2) of size (field 1)."""
    return tuple(int(first(fields(dim), 1)) for dim in fields(shape_proto).get(2, []))  # type: ignore[arg-type]


def _strings(raw: bytes, count: int, name: str) -> tuple[np.ndarray, int]:
    """A DT_STRING tensor and its masked checksum. On disk: ``count`` varint lengths, the masked
    crc32c of those lengths, then the bytes; the entry's checksum covers each length as a
    little-endian uint32 (not as written), the length checksum, then the bytes."""
    lengths, pos, crc = [], 0, 0
    for _ in range(count):
        length, pos = varint(raw, pos)
        lengths.append(length)
        crc = crc32c(struct.pack("<I", length), crc)
    if raw[pos:pos + 4] != struct.pack("<I", _mask(crc)):
        raise BundleError(f"checkpoint tensor {name} is damaged (checksum mismatch in its string lengths)")
    crc = crc32c(raw[pos:pos + 4], crc)
    pos += 4
    items = []
    for length in lengths:
        items.append(raw[pos:pos + length])
        crc = crc32c(raw[pos:pos + length], crc)
        pos += length
    return np.array(items, dtype=object), _mask(crc)


def read_bundle(index: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """{checkpoint key: array} of a tensor bundle, given its ``.index`` file (data shards beside it);
    each tensor's checksum is verified. String tensors come back as object arrays of bytes."""
    index = Path(index)
    table = read_table(index)
    header = fields(table.pop(b"", b""))
    shards = int(first(header, 1, 1))  # type: ignore[arg-type]
    prefix = str(index)[: -len(".index")] if index.name.endswith(".index") else str(index)
    data = [Path(f"{prefix}.data-{i:05d}-of-{shards:05d}") for i in range(shards)]
    for path in data:
        if not path.is_file():
            raise BundleError(f"TensorFlow checkpoint data file missing: {path}")
    blobs = [path.read_bytes() for path in data]
    out: dict[str, np.ndarray] = {}
    for key, value in table.items():
        name = key.decode("utf-8")
        entry = fields(value)
        if entry.get(7):
            raise BundleError(f"checkpoint tensor {name} is stored in slices, which this reader does not support")
        dtype, shard = int(first(entry, 1)), int(first(entry, 3))  # type: ignore[arg-type]
        offset, size = int(first(entry, 4)), int(first(entry, 5))  # type: ignore[arg-type]
        shape = _shape(first(entry, 2, b""))  # type: ignore[arg-type]
        raw = blobs[shard][offset:offset + size] if shard < len(blobs) else b""
        if len(raw) != size:
            raise BundleError(f"checkpoint tensor {name} is truncated in {prefix}.data-*")
        if dtype == _DT_STRING:
            array, crc = _strings(raw, int(np.prod(shape, dtype=np.int64)), name)
            array = array.reshape(shape)
        elif dtype in _DTYPES:
            if size != int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize:
                raise BundleError(f"checkpoint tensor {name} holds {size} bytes, not a {_DTYPES[dtype]} array of shape {shape}")
            array, crc = np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape).copy(), masked_crc32c(raw)
        else:
            raise BundleError(f"checkpoint tensor {name} has TensorFlow dtype {dtype}, which this reader does not support")
        if crc != first(entry, 6):
            raise BundleError(f"checkpoint tensor {name} is damaged (checksum mismatch in {data[shard].name})")
        out[name] = array
    return out


def _children(node: bytes) -> dict[str, int]:
    """{local name: node id} of an object-graph node (field 1: ObjectReference {node_id 1, local_name 2});
    TrackableObjectGraph and SavedObjectGraph nodes both keep their children in field 1."""
    out = {}
    for ref in fields(node).get(1, []):
        r = fields(ref)  # type: ignore[arg-type]
        out[first(r, 2, b"").decode("utf-8")] = int(first(r, 1))  # type: ignore[union-attr,arg-type]
    return out


def _paths(nodes: list[bytes]) -> dict[int, tuple[str, ...]]:
    """The shortest child-name path from the root (node 0) to every reachable node."""
    paths: dict[int, tuple[str, ...]] = {0: ()}
    queue = [0]
    for node_id in queue:  # breadth first: the list grows while it is walked
        for name, child in _children(nodes[node_id]).items():
            if child not in paths and child < len(nodes):
                paths[child] = paths[node_id] + (name,)
                queue.append(child)
    return paths


def checkpoint_keys(object_graph: bytes) -> dict[str, tuple[str, ...]]:
    """{checkpoint key: object path from the root} of a serialized TrackableObjectGraph
    (nodes 1 -> attributes 2 -> SerializedTensor {name 1, full_name 2, checkpoint_key 3})."""
    nodes: list[bytes] = fields(object_graph).get(1, [])  # type: ignore[assignment]
    paths = _paths(nodes)
    keys = {}
    for node_id, node in enumerate(nodes):
        for attribute in fields(node).get(2, []):
            key = first(fields(attribute), 3, b"").decode("utf-8")  # type: ignore[arg-type,union-attr]
            if key and node_id in paths:
                keys[key] = paths[node_id]
    return keys


def saved_variables(saved_model: bytes) -> dict[tuple[str, ...], tuple[str, tuple[int, ...]]]:
    """{object path: (variable name, shape)} of every variable in a ``saved_model.pb``: SavedModel
    meta_graphs (2) -> MetaGraphDef object_graph_def (7) -> SavedObjectGraph nodes (1) ->
    SavedObject variable (7) -> SavedVariable {shape 2, name 6}. The name is the one the layer gave
    its variable (``conv2d/kernel``); TF2 checkpoints do not store it themselves."""
    meta_graphs = fields(saved_model).get(2, [])
    if len(meta_graphs) != 1:
        raise BundleError(f"saved_model.pb holds {len(meta_graphs)} meta graphs; expected one")
    graph = first(fields(meta_graphs[0]), 7, b"")  # type: ignore[arg-type]
    nodes: list[bytes] = fields(graph).get(1, [])  # type: ignore[arg-type,assignment]
    out = {}
    for node_id, path in _paths(nodes).items():
        variable = first(fields(nodes[node_id]), 7, b"")
        if variable:
            v = fields(variable)  # type: ignore[arg-type]
            name = first(v, 6, b"").decode("utf-8").removesuffix(":0")  # type: ignore[union-attr]
            out[path] = (name, _shape(first(v, 2, b"")))  # type: ignore[arg-type]
    return out


def read_savedmodel_variables(folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """{variable name (``conv2d/kernel``): array} of a SavedModel folder (the one holding
    ``saved_model.pb`` and ``variables/``). A checkpoint key (``variables/0/.ATTRIBUTES/...``) is
    tied to its variable by the object path both graphs share; each shape is checked against the
    one ``saved_model.pb`` declares."""
    folder = Path(folder)
    index, pb = folder / "variables" / "variables.index", folder / "saved_model.pb"
    for path in (pb, index):
        if not path.is_file():
            raise BundleError(f"not a TensorFlow SavedModel: {path} is missing")
    tensors = read_bundle(index)
    graph = tensors.pop(OBJECT_GRAPH_KEY, None)
    if graph is None:
        raise BundleError(f"{index} has no {OBJECT_GRAPH_KEY}: not a TF2 object-based checkpoint")
    keys = checkpoint_keys(bytes(graph.reshape(()).item()))
    declared = saved_variables(pb.read_bytes())
    out: dict[str, np.ndarray] = {}
    for key, array in tensors.items():
        if keys.get(key) not in declared:
            raise BundleError(f"checkpoint tensor {key} is no variable of {pb}")
        name, shape = declared[keys[key]]
        if tuple(array.shape) != shape:
            raise BundleError(f"checkpoint tensor {key} ({name}) has shape {tuple(array.shape)}; {pb.name} declares {shape}")
        if name in out:
            raise BundleError(f"two checkpoint tensors claim the variable {name}")
        out[name] = array
    return out
