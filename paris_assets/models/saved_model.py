"""A TensorFlow SavedModel read without TensorFlow: its files (a .zip or the extracted folder), the protobuf wire
format, the variables tensor bundle (a LevelDB-format index plus one data shard) and the lookup tables its graph
fills from constants. Only as much as the LAION NSFW detector needs (models/heads.py): uncompressed index blocks,
numeric tensors, string -> int64 tables.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np


def is_saved_model_zip(path: Path) -> bool:
    """Whether the zip at `path` holds a SavedModel (torch.save writes zips too)."""
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("saved_model.pb") for n in z.namelist())


def saved_model_files(path: Path) -> dict[str, bytes]:
    """Every file of a SavedModel .zip or folder, by its path inside it."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if not n.endswith("/")}


def _varint(b: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _fields(b: bytes) -> list[tuple[int, object]]:
    """A protobuf message as (field number, int or bytes) pairs, in order."""
    i, out = 0, []
    while i < len(b):
        key, i = _varint(b, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(b, i)
        elif wire == 2:
            n, i = _varint(b, i)
            value, i = b[i:i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = b[i:i + n], i + n
        else:
            raise ValueError(f"protobuf wire type {wire} not supported")
        out.append((key >> 3, value))
    return out


def _field(b: bytes, number: int) -> list:
    return [v for f, v in _fields(b) if f == number]


def _table_block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """One uncompressed block of a LevelDB-format table (what TensorFlow writes variables.index in)."""
    if data[offset + size] != 0:
        raise ValueError("compressed variables.index blocks are not supported")
    block = data[offset:offset + size]
    restarts = struct.unpack("<I", block[-4:])[0]
    end, i, key, out = len(block) - 4 - 4 * restarts, 0, b"", []
    while i < end:
        shared, i = _varint(block, i)
        unshared, i = _varint(block, i)
        length, i = _varint(block, i)
        key = key[:shared] + block[i:i + unshared]
        i += unshared
        out.append((key, block[i:i + length]))
        i += length
    return out


def read_tensor_bundle(index: bytes, data: bytes) -> dict[str, np.ndarray]:
    """Numeric tensors of a TensorFlow checkpoint (variables.index + its one data shard) by name."""
    footer = index[-48:]
    _, i = _varint(footer, 0)
    _, i = _varint(footer, i)  # the metaindex block, unused
    offset, i = _varint(footer, i)
    size, _ = _varint(footer, i)
    dtypes = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}
    out = {}
    for _, handle in _table_block(index, offset, size):
        block_offset, j = _varint(handle, 0)
        block_size, _ = _varint(handle, j)
        for key, entry in _table_block(index, block_offset, block_size):
            fields = dict(_fields(entry))  # BundleEntryProto: 1 dtype, 2 shape, 4 offset, 5 size
            if not key or fields.get(1) not in dtypes:
                continue
            shape = [dict(_fields(d)).get(1, 0) for d in _field(fields.get(2, b""), 2)]
            start = fields.get(4, 0)
            raw = data[start:start + fields.get(5, 0)]
            out[key.decode()] = np.frombuffer(raw, dtype=dtypes[fields[1]]).reshape(shape)
    return out


def _graph(saved_model: bytes) -> tuple[dict[str, bytes], list[list[str]]]:
    """The Const tensors (TensorProto bytes) by node name, and every node's inputs, in graph order."""
    graph = _field(_field(_field(saved_model, 2)[0], 2)[0], 1)  # SavedModel.meta_graphs[0].graph_def.node
    consts, calls = {}, []
    for node in graph:
        fields = {}
        for f, v in _fields(node):
            fields.setdefault(f, []).append(v)
        name, op, inputs = fields[1][0].decode(), fields[2][0], [x.decode() for x in fields.get(3, [])]
        if op == b"Const":
            for attr in fields.get(5, []):
                entry = dict(_fields(attr))
                if entry.get(1) == b"value":
                    consts[name] = _field(entry[2], 8)[0]  # AttrValue.tensor
        calls.append(inputs)
    return consts, calls


def call_inputs(saved_model: bytes, name: str) -> list[str] | None:
    """The inputs of the first node of the saved graph that takes `name`, in order; None if no node does."""
    return next((c for c in _graph(saved_model)[1] if name in c), None)


def lookup_tables(saved_model: bytes) -> dict[str, tuple[list[bytes], np.ndarray]]:
    """Table name -> (string keys, int64 values) of every table the saved graph fills with a call (table, keys
    Const, values Const) whose keys are strings, in graph order."""
    consts, calls = _graph(saved_model)
    fills = {c[0]: c[1:] for c in calls if len(c) == 3 and c[1] in consts and _field(consts[c[1]], 1) == [7]}
    return {table: (_field(consts[keys], 8),  # TensorProto.string_val
                    np.frombuffer(_field(consts[values], 4)[0], dtype=np.int64))  # tensor_content
            for table, (keys, values) in fills.items()}
