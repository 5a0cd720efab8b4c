"""The SparseMLP model file: one buffer, made for boards (docs/model-file.md).

``to_bytes(model)`` lays a ``kernels.nn.SparseMLP`` out as a 32-byte
little-endian header, a 16-byte entry per layer, the class labels and one
block of arrays per layer, 16-byte aligned, with a CRC32 over the whole;
``read(path, build)`` validates a file as untrusted input and builds the
model on views of its memory-mapped bytes (no copy of the weight arrays;
the per-row arrays stored in 2 bytes are widened on load, O(rows)).
``read`` also takes the .npz files of format_version 1
(``kernels._model_npz``).  Neither scipy nor numba is imported.

Every size the file declares is checked against the file's own length
before anything is allocated from it; a layer dimension is at most
``64 * file length + 65536`` (no layer of a smaller file can be wider);
the whole structure is validated (the O(stored entries) checks of the
matrix classes).
"""

import os
import stat
import struct
import zlib

import numpy as np

from kernels._codes import (
    LAYOUT_BITMASK,
    LAYOUT_CSR,
    LAYOUT_DELTA,
    LAYOUT_DENSE,
    VALUES_FLOAT16,
    VALUES_FLOAT32,
    VALUES_INT2,
    VALUES_INT4,
    VALUES_INT8,
)
from kernels.nn import ACTIVATIONS, SparseLinear
from kernels.packed import CODECS, LAYOUTS, PackedMatrix, float_width, pointer_width
from kernels.sparse import BSRMatrix, CSRMatrix, QuantizedCSR

MAGIC = b"EKMF"
VERSION = 2
ALIGN = 16
HEADER = struct.Struct("<4sHHIIIIBBHI")
ENTRY = struct.Struct("<BBBBBBBBII")
assert HEADER.size == 32 and ENTRY.size == 16

# Layer kinds: the class the layer's weight is loaded as.
KIND_PACKED, KIND_CSR, KIND_BSR, KIND_QUANTISED = 0, 1, 2, 3
# Value codes beyond kernels._codes' VALUES_*: float64 CSR / BSR values.
VALUES_FLOAT64 = 5
# Class label kinds.
LABELS_NONE, LABELS_INT, LABELS_FLOAT, LABELS_TEXT = 0, 1, 2, 3
_POINTER_CODES = {0: None, 1: np.uint16, 2: np.int32, 3: np.int64}
_BIAS_CODES = {0: None, 1: np.float16, 2: np.float32, 3: np.float64}
_U32_MAX = 2**32 - 1
_MAX_LAYERS = 4096


# Writing ---------------------------------------------------------------------


class _Block:
    """The bytes of one layer block, arrays appended each at its
    element alignment."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, array):
        array = np.ascontiguousarray(array)
        pad = -self.size % max(1, array.dtype.itemsize)
        if pad:
            self.parts.append(bytes(pad))
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        self.parts.append(data)
        self.size += pad + len(data)


def _bias_code(bias, dtype):
    if bias is None:
        return 0, None
    if float_width(bias) == 2:
        return 1, bias.astype(np.float16)
    return (3, bias) if dtype == np.float64 else (2, bias)


def _pointer_code(indptr):
    if indptr.dtype == np.int64:
        return 3, indptr
    if pointer_width(indptr) == 2:
        return 1, indptr.astype(np.uint16)
    return 2, indptr.astype(np.int32)


def _layer_block(layer):
    """(entry fields, block) of one layer."""
    W = layer.weight
    m, n = W.shape
    block = _Block()
    bias_code, bias = _bias_code(layer.bias, layer.dtype)
    kind = layout = values = index = bits = flags = 0
    if isinstance(W, PackedMatrix):
        kind, values = KIND_PACKED, CODECS[W.codec][0]
        layout, index = LAYOUTS[W.layout][0], W.index_code
        bits = W.bits or 0
        if layout in (LAYOUT_CSR, LAYOUT_DELTA):
            code, indptr = _pointer_code(W.indptr)
            flags |= code
            block.add(indptr)
        block.add(W.structure)
        block.add(W._values)
        if W.bits:
            if float_width(W.scales) == 2:
                flags |= 4
                block.add(W.scales.astype(np.float16))
            else:
                block.add(W.scales)
    elif isinstance(W, QuantizedCSR):
        kind, values, index, bits = (
            KIND_QUANTISED,
            VALUES_INT8,
            W.indices.itemsize,
            W.bits,
        )
        code, indptr = _pointer_code(W.indptr)
        flags |= code
        block.add(indptr)
        block.add(W.indices)
        block.add(W.values)
        if float_width(W.scales) == 2:
            flags |= 4
            block.add(W.scales.astype(np.float16))
        else:
            block.add(W.scales)
    else:
        kind = KIND_BSR if isinstance(W, BSRMatrix) else KIND_CSR
        values = VALUES_FLOAT64 if W.dtype == np.float64 else VALUES_FLOAT32
        index = W.indices.itemsize
        if kind == KIND_BSR:
            block.add(np.array(W.blocksize, np.uint16))
        flags |= {4: 2, 8: 3}[W.indptr.itemsize]
        block.add(W.indptr)
        block.add(W.indices)
        block.add(W.data.reshape(-1))
    flags |= bias_code << 3
    if bias is not None:
        block.add(bias)
    activation = ACTIVATIONS.index(layer.activation)
    return (kind, layout, values, index, bits, flags, activation, 0, m, n), block


def _labels(classes):
    """(kind, width, count, bytes) of the class labels."""
    if classes is None:
        return LABELS_NONE, 0, 0, b""
    if classes.dtype.kind in "iub":
        values = classes.astype(np.int64)
        for dtype in (np.int8, np.int16, np.int32, np.int64):
            info = np.iinfo(dtype)
            if values.min() >= info.min and values.max() <= info.max:
                break
        data = values.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
        return LABELS_INT, np.dtype(dtype).itemsize, classes.size, data
    if classes.dtype.kind == "f":
        return LABELS_FLOAT, 8, classes.size, classes.astype("<f8").tobytes()
    text = [str(c) for c in classes.tolist()]
    if any("\0" in t for t in text):
        raise ValueError("class labels must not contain NUL characters")
    data = b"".join(t.encode("utf-8") + b"\0" for t in text)
    return LABELS_TEXT, 0, classes.size, data


def to_bytes(model):
    """The model file of ``model``, as bytes."""
    layers = model.layers
    if len(layers) > _MAX_LAYERS:
        raise ValueError(f"at most {_MAX_LAYERS} layers, got {len(layers)}")
    weights, biases = model.dense_size
    if weights > _U32_MAX or biases > _U32_MAX:
        raise ValueError("the dense network is too large for the model file")
    kind, width, count, labels = _labels(model.classes)
    entries, blocks = zip(*(_layer_block(layer) for layer in layers), strict=True)
    offset = HEADER.size + ENTRY.size * len(layers) + len(labels)
    parts = [b"", *(ENTRY.pack(*e) for e in entries), labels]
    for block in blocks:
        pad = -offset % ALIGN
        parts.append(bytes(pad))
        parts.extend(block.parts)
        offset += pad + block.size
    if offset > _U32_MAX:
        raise ValueError("the model is too large for the model file (4 GiB)")
    header = HEADER.pack(
        MAGIC,
        VERSION,
        len(layers),
        offset,
        0,
        weights,
        biases,
        kind,
        width,
        count,
        len(labels),
    )
    data = bytearray(header + b"".join(parts))
    struct.pack_into("<I", data, 12, zlib.crc32(data))
    return bytes(data)


# Reading ---------------------------------------------------------------------


class _Reader:
    """Typed views of the file's bytes, each checked against its length."""

    def __init__(self, buffer, length):
        self.buffer, self.length = buffer, length

    def array(self, offset, dtype, count, what):
        dtype = np.dtype(dtype).newbyteorder("<")
        offset += -offset % dtype.itemsize
        end = offset + count * dtype.itemsize
        if count < 0 or end > self.length:
            raise ValueError(
                f"{what} ({count} x {dtype.itemsize} bytes at {offset}) runs past "
                f"the end of the file ({self.length} bytes)"
            )
        array = np.frombuffer(self.buffer, dtype, count, offset)
        native = dtype.newbyteorder("=")
        # a view on a little-endian machine (the buffer's format then reads
        # as the native one, which the compiled kernels take), else a copy
        array = array.view(native) if dtype.isnative else array.astype(native)
        return array, end


def _check_header(reader):
    magic, version, n_layers, length, crc, weights, biases, *labels = HEADER.unpack(
        bytes(reader.buffer[: HEADER.size])
    )
    if magic != MAGIC:
        raise ValueError("not a SparseMLP model file (bad magic)")
    if version != VERSION:
        raise ValueError(
            f"format version {version} is not supported (this version of kernels "
            f"reads {VERSION})"
        )
    if length != reader.length:
        raise ValueError(
            f"the header declares {length} bytes but the file has {reader.length}"
        )
    buffer = reader.buffer
    check = zlib.crc32(bytes(buffer[:12]))
    check = zlib.crc32(bytes(4), check)
    check = zlib.crc32(buffer[16 : reader.length], check)
    if check != crc:
        raise ValueError("the CRC32 does not match: the file is corrupt")
    if not 1 <= n_layers <= _MAX_LAYERS:
        raise ValueError(f"n_layers must be in [1, {_MAX_LAYERS}], got {n_layers}")
    return n_layers, (weights, biases), labels


def _read_labels(reader, offset, kind, width, count, size):
    if offset + size > reader.length:
        raise ValueError("the class labels run past the end of the file")
    if kind == LABELS_NONE:
        if count or size:
            raise ValueError("no class labels, but a label block")
        return None
    if kind == LABELS_INT:
        if width not in (1, 2, 4, 8) or size != count * width:
            raise ValueError("the integer class labels do not fill their block")
        return reader.array(offset, f"i{width}", count, "class labels")[0].astype(
            np.int64
        )
    if kind == LABELS_FLOAT:
        if width != 8 or size != count * 8:
            raise ValueError("the float class labels do not fill their block")
        return reader.array(offset, "f8", count, "class labels")[0].copy()
    if kind == LABELS_TEXT:
        raw = bytes(reader.buffer[offset : offset + size])
        if width != 0 or not raw.endswith(b"\0") or raw.count(b"\0") != count:
            raise ValueError("the text class labels are malformed")
        try:
            return np.array([t.decode("utf-8") for t in raw[:-1].split(b"\0")])
        except UnicodeDecodeError as exc:
            raise ValueError(f"the class labels are not UTF-8: {exc}") from None
    raise ValueError(f"unknown class label kind {kind}")


def _read_layer(reader, entry, offset, limit, i):
    kind, layout, values, index, bits, flags, activation, reserved, m, n = entry
    if reserved or flags >> 5:
        raise ValueError("reserved bits are set")
    if m > limit or n > limit:
        raise ValueError(
            f"shape ({m}, {n}) is larger than a file of {reader.length} bytes can "
            f"describe (at most {limit})"
        )
    if activation >= len(ACTIVATIONS):
        raise ValueError(f"unknown activation code {activation}")
    pointer = _POINTER_CODES[flags & 3]
    half_scales = bool(flags & 4)
    bias_dtype = _BIAS_CODES[(flags >> 3) & 3]
    offset += -offset % ALIGN

    def take(dtype, count, what):
        nonlocal offset
        array, offset = reader.array(offset, dtype, count, f"layer {i} {what}")
        return array

    def indptr(rows):
        if pointer is None:
            raise ValueError("a row pointer width is required")
        array = take(pointer, rows + 1, "indptr")
        end = int(array[-1]) if array.size else 0
        if end < 0:
            raise ValueError("indptr must not be negative")
        return array, end

    if kind == KIND_PACKED:
        codec = _codec_name(values)
        layout_name = _layout_name(layout, index)
        if layout in (LAYOUT_CSR, LAYOUT_DELTA):
            pointers, count = indptr(m)
            if layout == LAYOUT_CSR:
                expected = {1: np.uint8, 2: np.uint16, 4: np.int32}.get(index)
                if expected is None or index != _csr_index_bytes(n):
                    raise ValueError(f"CSR index width {index} does not fit n = {n}")
                structure = take(expected, count, "column indices")
            else:
                structure = take(np.uint8, (count * index + 7) // 8, "gaps")
        else:
            if pointer is not None:
                raise ValueError("a dense or bitmask layer has no indptr")
            pointers = None
            if layout == LAYOUT_BITMASK:
                structure = take(np.uint8, m * ((n + 7) // 8), "bitmask")
                count = int(np.unpackbits(structure).sum()) if structure.size else 0
            else:
                structure, count = None, m * n
        code_bits = CODECS[codec][1]
        value_dtype = {VALUES_FLOAT32: np.float32, VALUES_FLOAT16: np.uint16}.get(
            values, np.uint8
        )
        stored = take(
            value_dtype,
            (count * code_bits + 7) // 8 // np.dtype(value_dtype).itemsize,
            "values",
        )
        scales = None
        if values in (VALUES_INT8, VALUES_INT4, VALUES_INT2):
            scales = take(np.float16 if half_scales else np.float32, m, "scales")
            scales = scales.astype(np.float32)
        elif half_scales:
            raise ValueError("float values have no scales")
        weight = PackedMatrix(
            layout_name,
            codec,
            (m, n),
            stored,
            structure,
            None if pointers is None else pointers.astype(np.int32),
            scales,
            bits or None,
        )
    elif kind == KIND_QUANTISED:
        pointers, count = indptr(m)
        dtype = {1: np.uint8, 2: np.uint16, 4: np.int32}.get(index)
        if dtype is None or values != VALUES_INT8:
            raise ValueError(
                "a quantised layer has int8 values and 1, 2 or 4 byte indices"
            )
        indices = take(dtype, count, "column indices")
        q = take(np.int8, count, "values")
        scales = take(np.float16 if half_scales else np.float32, m, "scales")
        weight = QuantizedCSR(
            q, indices, pointers, scales.astype(np.float32), (m, n), bits=bits
        )
    elif kind in (KIND_CSR, KIND_BSR):
        value_dtype = {VALUES_FLOAT32: np.float32, VALUES_FLOAT64: np.float64}.get(
            values
        )
        dtype = {4: np.int32, 8: np.int64}.get(index)
        if value_dtype is None or dtype is None or pointer not in (np.int32, np.int64):
            raise ValueError(
                "a CSR or BSR layer has float32 or float64 values and int32 or "
                "int64 indices and row pointers"
            )
        r = c = 1
        if kind == KIND_BSR:
            r, c = (int(v) for v in take(np.uint16, 2, "blocksize"))
            if r < 1 or c < 1 or m % r or n % c:
                raise ValueError(f"blocks of {r} x {c} do not divide ({m}, {n})")
        pointers, count = indptr(m // r)
        indices = take(dtype, count, "indices")
        data = take(value_dtype, count * r * c, "values")
        if kind == KIND_BSR:
            weight = BSRMatrix(data.reshape(count, r, c), indices, pointers, (m, n))
        else:
            weight = CSRMatrix(data, indices, pointers, (m, n))
    else:
        raise ValueError(f"unknown layer kind {kind}")
    bias = None
    if bias_dtype is not None:
        bias = take(bias_dtype, m, "bias").astype(weight.dtype)
    return SparseLinear(weight, bias, ACTIVATIONS[activation]), offset


def _codec_name(code):
    for name, (value, _) in CODECS.items():
        if value == code:
            return name
    raise ValueError(f"unknown value codec {code}")


def _layout_name(code, index):
    if code == LAYOUT_DELTA:
        if index not in (4, 8):
            raise ValueError(f"delta gaps are 4 or 8 bits, got {index}")
        return f"delta{index}"
    for name, (value, _) in LAYOUTS.items():
        if value == code and code != LAYOUT_DELTA:
            if code in (LAYOUT_DENSE, LAYOUT_BITMASK) and index:
                raise ValueError(f"a {name} layer has no index width")
            return name
    raise ValueError(f"unknown layout {code}")


def _csr_index_bytes(n):
    return 1 if n <= 256 else 2 if n <= 65536 else 4


def _read_binary(buffer, length, build):
    buffer = memoryview(buffer)
    reader = _Reader(buffer, length)
    if length < HEADER.size:
        raise ValueError(f"the file is shorter ({length} bytes) than its header")
    limit = 64 * length + 65536
    n_layers, dense_size, (kind, width, count, size) = _check_header(reader)
    table_end = HEADER.size + ENTRY.size * n_layers
    if table_end > length:
        raise ValueError("the layer table runs past the end of the file")
    classes = _read_labels(reader, table_end, kind, width, count, size)
    offset = table_end + size
    layers = []
    for i in range(n_layers):
        entry = ENTRY.unpack_from(bytes(buffer[HEADER.size + ENTRY.size * i :][:16]))
        layer, offset = _read_layer(reader, entry, offset, limit, i)
        layers.append(layer)
    if offset != length:
        raise ValueError(f"{length - offset} bytes follow the last layer")
    return build(layers, classes, dense_size)


def read(path, build):
    """``build(layers, classes, dense_size)`` for the model file ``path`` (a
    path, or a readable binary file), validated; ``dense_size`` is None for
    a format_version 1 file.  ValueError naming the file for anything wrong
    with it, what ``build`` raises (TypeError, ValueError) included; a
    path that is not a regular file, or that cannot be opened, is the
    usual OSError (a FIFO or a device would block or never end: refused as
    not a regular file)."""
    from kernels import _model_npz

    if hasattr(path, "read"):
        name = getattr(path, "name", "the model file")
        data = path.read()
        if not isinstance(data, bytes):
            raise TypeError(f"{name} must be opened in binary mode")
        try:
            if data[:4] == MAGIC:
                return _read_binary(memoryview(data), len(data), build)
            import io

            layers, classes = _model_npz.read(
                io.BytesIO(data), name, 64 * len(data) + 65536
            )
            return build(layers, classes, None)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: invalid SparseMLP file: {exc}") from exc
    name = os.fspath(path)
    info = os.stat(name)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{name}: not a regular file")
    with open(name, "rb") as file:
        head = file.read(4)
        try:
            if head == MAGIC:
                import mmap

                buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                return _read_binary(buffer, len(buffer), build)
            file.seek(0)
            layers, classes = _model_npz.read(file, name, 64 * info.st_size + 65536)
            return build(layers, classes, None)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: invalid SparseMLP file: {exc}") from exc
