"""Read a frozen TensorFlow GraphDef (.pb) without TensorFlow: node list and float32 constants.

A GraphDef is a protobuf message; the few fields we need are read straight from the wire format
(https://protobuf.dev/programming-guides/encoding/), so converting weights needs neither TensorFlow
nor a protobuf schema package. Field numbers come from tensorflow/core/framework/*.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# GraphDef.node = 1; NodeDef.{name, op, input, attr} = 1, 2, 3, 5; map entry {key, value} = 1, 2.
# AttrValue.{type, tensor} = 6, 8; TensorProto.{dtype, tensor_shape, tensor_content, float_val} = 1, 2, 4, 5.
# TensorShapeProto.dim = 2; Dim.size = 1. DataType DT_FLOAT = 1.
_DT_FLOAT = 1


class GraphFormatError(ValueError):
    """The bytes are not a GraphDef this reader understands."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    constants: dict[str, np.ndarray]  # Const nodes of dtype float32, by node name


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GraphFormatError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) for each field of one message: ints for varint/fixed, views for bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise GraphFormatError(f"field {number} runs past the end of its message")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (_I32, _I64):
            width = 4 if wire == _I32 else 8
            if pos + width > len(buf):
                raise GraphFormatError(f"field {number} runs past the end of its message")
            # Kept as raw bits; float_val reinterprets them below.
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        else:  # 3/4 are proto2 groups, absent from GraphDef; anything else is corruption
            raise GraphFormatError(f"unsupported wire type {wire} for field {number}")
        yield number, wire, value


def _text(value: int | memoryview) -> str:
    if not isinstance(value, memoryview):
        raise GraphFormatError("expected a string field")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GraphFormatError("a string field is not UTF-8") from exc


def _shape(buf: memoryview) -> tuple[int, ...]:
    dims: list[int] = []
    for number, _, dim in _fields(buf):
        if number == 2 and isinstance(dim, memoryview):
            size = next((v for n, _, v in _fields(dim) if n == 1 and isinstance(v, int)), 0)
            dims.append(size)
    return tuple(dims)


def _float_tensor(buf: memoryview) -> np.ndarray | None:
    """A TensorProto as a float32 array, or None when its dtype is not float32."""
    dtype, content = 0, None
    shape: tuple[int, ...] = ()
    floats: list[float] = []
    for number, wire, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            dtype = value
        elif number == 2 and isinstance(value, memoryview):
            shape = _shape(value)
        elif number == 4 and isinstance(value, memoryview):
            content = bytes(value)
        elif number == 5:  # float_val: packed (one LEN field) or one I32 field per value
            if isinstance(value, memoryview):
                floats.extend(np.frombuffer(value, dtype="<f4").tolist())
            elif wire == _I32 and isinstance(value, int):
                floats.append(struct.unpack("<f", value.to_bytes(4, "little"))[0])
    if dtype != _DT_FLOAT:
        return None
    count = int(np.prod(shape, dtype=np.int64))
    if content is not None:
        array = np.frombuffer(content, dtype="<f4").astype(np.float32)
        if array.size != count:
            raise GraphFormatError(f"tensor_content holds {array.size} floats for shape {shape}")
        return array.reshape(shape)
    if not floats and count:
        raise GraphFormatError(f"float tensor of shape {shape} has no values")
    # TensorFlow repeats the last float_val to fill the shape (a splat constant stores one value).
    values = np.asarray(floats + floats[-1:] * (count - len(floats)), dtype=np.float32)
    if values.size != count:
        raise GraphFormatError(f"{len(floats)} float_val entries for shape {shape}")
    return values.reshape(shape)


def _node(buf: memoryview) -> tuple[Node, np.ndarray | None]:
    name = op = ""
    inputs: list[str] = []
    tensor: np.ndarray | None = None
    for number, _, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 2:
            op = _text(value)
        elif number == 3:
            inputs.append(_text(value))
        elif number == 5 and isinstance(value, memoryview):
            entry = {n: v for n, _, v in _fields(value)}
            attr_value = entry.get(2)
            if entry.get(1) is not None and _text(entry[1]) == "value" and isinstance(attr_value, memoryview):
                tensor_field = next((v for n, _, v in _fields(attr_value) if n == 8), None)
                if isinstance(tensor_field, memoryview):
                    tensor = _float_tensor(tensor_field)
    if not name or not op:
        raise GraphFormatError("a node without a name or op")
    return Node(name, op, tuple(inputs)), tensor if op == "Const" else None


def read_graph(data: bytes) -> Graph:
    """Parse GraphDef bytes; raises GraphFormatError when they are not a GraphDef."""
    nodes: list[Node] = []
    constants: dict[str, np.ndarray] = {}
    for number, _, value in _fields(memoryview(data)):
        if number == 1 and isinstance(value, memoryview):
            node, tensor = _node(value)
            nodes.append(node)
            if tensor is not None:
                constants[node.name] = tensor
    if not nodes:
        raise GraphFormatError("no nodes: not a GraphDef")
    return Graph(nodes, constants)
