"""Reading TensorFlow checkpoints without TensorFlow: a SavedModel built here byte by byte, then the real one.

The hand-built files follow the documented formats (LevelDB table, BundleEntryProto, TrackableObjectGraph,
SavedObjectGraph), so each test reads like a small specification of what the reader relies on.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from models.tfbundle import (
    OBJECT_GRAPH_KEY,
    BundleError,
    crc32c,
    fields,
    masked_crc32c,
    read_bundle,
    read_savedmodel_variables,
    read_table,
    snappy_decompress,
)

# --- a minimal protobuf / table writer (the inverse of what the reader does) --------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: int | bytes | str) -> bytes:
    """A varint field for ints, a length-delimited one for bytes and strings."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<I", value)


def shape_proto(shape: tuple[int, ...]) -> bytes:
    return b"".join(field(2, field(1, d)) for d in shape)


def block(entries: list[tuple[bytes, bytes]], *, share_prefixes: bool = True) -> bytes:
    """A table block with prefix-compressed keys, one restart point, and its 5-byte trailer (uncompressed)."""
    out, previous = bytearray(), b""
    for key, value in entries:
        shared = 0
        if share_prefixes:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        previous = key
    out += struct.pack("<II", 0, 1)
    return bytes(out) + b"\x00" + struct.pack("<I", masked_crc32c(bytes(out) + b"\x00"))


def table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A whole LevelDB-format table: one data block, an empty metaindex, the index, the footer."""
    data = block(entries)
    meta = block([])
    index = block([(entries[-1][0], varint(0) + varint(len(data) - 5))])
    handles = varint(len(data)) + varint(len(meta) - 5) + varint(len(data) + len(meta)) + varint(len(index) - 5)
    footer = handles.ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    return data + meta + index + footer


def string_tensor(value: bytes) -> tuple[bytes, int]:
    """A scalar DT_STRING as a bundle stores it, and its entry checksum (lengths summed as uint32)."""
    length_crc = masked_crc32c(struct.pack("<I", len(value)))
    raw = varint(len(value)) + struct.pack("<I", length_crc) + value
    crc = crc32c(value, crc32c(struct.pack("<I", length_crc), crc32c(struct.pack("<I", len(value)))))
    return raw, (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_savedmodel(folder: Path, variables: dict[str, np.ndarray], declared: dict[str, tuple[int, ...]] | None = None) -> None:
    """A TF2 SavedModel whose root has a child ``variables`` listing every variable as ``0``, ``1``, ...:
    the checkpoint keys ``variables/<i>/.ATTRIBUTES/VARIABLE_VALUE`` carry no names; saved_model.pb does."""
    declared = declared or {name: a.shape for name, a in variables.items()}
    names = list(variables)
    children = field(1, field(1, 1) + field(2, "variables"))
    listing = b"".join(field(1, field(1, 2 + i) + field(2, str(i))) for i in range(len(names)))
    keys = [f"variables/{i}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(len(names))]
    object_graph = field(1, children) + field(1, listing) + b"".join(
        field(1, field(2, field(1, "VARIABLE_VALUE") + field(3, key))) for key in keys
    )
    saved_nodes = field(1, children) + field(1, listing) + b"".join(
        field(1, field(7, field(1, 1) + field(2, shape_proto(declared[name])) + field(6, name))) for name in names
    )
    (folder / "saved_model.pb").write_bytes(field(1, 1) + field(2, field(7, saved_nodes)))

    data, entries = bytearray(), []
    graph_raw, graph_crc = string_tensor(object_graph)
    tensors = [(OBJECT_GRAPH_KEY, graph_raw, 7, (), graph_crc)]
    for key, name in zip(keys, names):
        raw = variables[name].astype("<f4").tobytes()
        tensors.append((key, raw, 1, variables[name].shape, masked_crc32c(raw)))
    for key, raw, dtype, shape, crc in tensors:
        entry = field(1, dtype) + field(2, shape_proto(shape)) + field(4, len(data)) + field(5, len(raw)) + fixed32(6, crc)
        entries.append((key.encode(), entry))
        data += raw
    header = field(1, 1) + field(3, field(1, 1))  # num_shards 1, version {producer 1}
    (folder / "variables").mkdir()
    (folder / "variables" / "variables.index").write_bytes(table([(b"", header), *sorted(entries)]))
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(data))


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    variables = {"dense/kernel": np.array([[1.5, -2.0], [3.25, 4.0]], np.float32), "dense/bias": np.array([0.5, -0.5], np.float32)}
    write_savedmodel(tmp_path, variables)
    return tmp_path, variables


# --- building blocks ----------------------------------------------------------------------------------


def test_crc32c_is_the_castagnoli_checksum():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(b"") == 0


def test_protobuf_fields_decode_varints_strings_and_fixed32():
    message = field(1, 300) + field(2, "conv2d/kernel") + fixed32(6, 0xDEADBEEF) + field(1, 7)
    assert fields(message) == {1: [300, 7], 2: [b"conv2d/kernel"], 6: [0xDEADBEEF]}
    with pytest.raises(BundleError, match="truncated"):
        fields(field(2, "conv2d/kernel")[:-1])


def test_snappy_literals_and_overlapping_copies():
    # 12 bytes: the literal "abc", then a copy of 9 bytes from 3 back, which overlaps what it writes.
    assert snappy_decompress(b"\x0c" + b"\x08abc" + b"\x15\x03") == b"abcabcabcabc"
    with pytest.raises(BundleError, match="corrupt snappy"):
        snappy_decompress(b"\x0c" + b"\x08abc" + b"\x15\x09")  # reaches before the start


# --- a hand-built SavedModel --------------------------------------------------------------------------


def test_the_table_keeps_every_key_and_value_with_shared_prefixes(tiny):
    folder, _ = tiny
    keys = list(read_table(folder / "variables" / "variables.index"))
    assert keys == [b"", OBJECT_GRAPH_KEY.encode(), b"variables/0/.ATTRIBUTES/VARIABLE_VALUE", b"variables/1/.ATTRIBUTES/VARIABLE_VALUE"]


def test_bundle_tensors_come_back_with_dtype_and_shape(tiny):
    folder, variables = tiny
    tensors = read_bundle(folder / "variables" / "variables.index")
    np.testing.assert_array_equal(tensors["variables/0/.ATTRIBUTES/VARIABLE_VALUE"], variables["dense/kernel"])
    assert tensors["variables/0/.ATTRIBUTES/VARIABLE_VALUE"].dtype == np.float32
    assert tensors[OBJECT_GRAPH_KEY].shape == ()  # the serialized object graph, a scalar string


def test_checkpoint_keys_are_named_through_the_object_graph_and_saved_model(tiny):
    folder, variables = tiny
    found = read_savedmodel_variables(folder)
    assert sorted(found) == ["dense/bias", "dense/kernel"]
    for name, array in variables.items():
        np.testing.assert_array_equal(found[name], array)


def test_a_damaged_tensor_is_refused_by_its_checksum(tiny):
    folder, _ = tiny
    data = folder / "variables" / "variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01  # one bit of the last tensor (dense/bias)
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"variables/1/.* is damaged") as err:
        read_savedmodel_variables(folder)
    assert "\n" not in str(err.value)


def test_a_shape_that_disagrees_with_saved_model_pb_is_refused(tmp_path):
    write_savedmodel(tmp_path, {"dense/kernel": np.zeros((2, 3), np.float32)}, declared={"dense/kernel": (3, 2)})
    with pytest.raises(BundleError, match=r"dense/kernel.*\(2, 3\).*\(3, 2\)"):
        read_savedmodel_variables(tmp_path)


def test_a_folder_without_a_savedmodel_says_what_is_missing(tmp_path):
    with pytest.raises(BundleError, match="saved_model.pb is missing"):
        read_savedmodel_variables(tmp_path)


# --- the real Dynamic World SavedModel ----------------------------------------------------------------


@pytest.fixture(scope="module")
def forward(realdata) -> Path:
    return realdata / "models" / "dynamicworld" / "model" / "forward"


def test_the_real_bundle_holds_146_variables_and_231209_numbers(forward):
    variables = read_savedmodel_variables(forward)  # its index blocks are snappy-compressed
    assert len(variables) == 146
    assert sum(a.size for a in variables.values()) == 231_209
    assert variables["conv2d/kernel"].shape == (3, 3, 9, 64)  # HWIO, the first layer: 9 bands -> 64
    assert variables["conv2d_14/kernel"].shape == (1, 1, 144, 9)  # the last: 144 -> 9 classes
    assert variables["batch_normalization/moving_mean"].shape == (64,)
    assert all(a.dtype == np.float32 for a in variables.values())


def test_a_damaged_real_data_file_names_the_tensor(forward, tmp_path):
    copy = tmp_path / "forward"
    shutil.copytree(forward, copy)
    data = copy / "variables" / "variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x80
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"checkpoint tensor variables/\d+/\.ATTRIBUTES/VARIABLE_VALUE is damaged"):
        read_savedmodel_variables(copy)
