"""The bit-level encoding of the deployment matrices, in one place: the
meta fields the kernels take, the packing of 2-, 4- and 8-bit fields, and
the decoding of values, delta gaps and entries (kernels._reference.packed
specifies the layouts and codecs).  Used by kernels.packed (building,
validating, ``to_dense``), the reference kernels and the model file."""

import numpy as np

from kernels._codes import (
    LAYOUT_BITMASK,
    LAYOUT_CSR,
    LAYOUT_DENSE,
    VALUES_FLOAT16,
    VALUES_FLOAT32,
    VALUES_INT4,
    VALUES_INT8,
)

META_FIELDS = 8
(META_LAYOUT, META_VALUES, META_INDEX, META_M, META_N, META_COUNT, META_BITS) = range(7)


def decode_values(code, values, count):
    """The ``count`` stored values as float64 (integer codes: q, unscaled)."""
    if code == VALUES_FLOAT32:
        return values[:count].astype(np.float64)
    if code == VALUES_FLOAT16:
        return values[:count].view(np.float16).astype(np.float64)
    if code == VALUES_INT8:
        return values[:count].view(np.int8).astype(np.float64)
    bits = 4 if code == VALUES_INT4 else 2
    per_byte = 8 // bits
    p = np.arange(count)
    fields = (values[p // per_byte] >> ((p % per_byte) * bits)) & ((1 << bits) - 1)
    fields = fields.astype(np.int64)
    fields[fields >= 1 << (bits - 1)] -= 1 << bits
    return fields.astype(np.float64)


def decode_gaps(structure, bits, count):
    """The ``count`` gaps of a DELTA matrix's structure stream."""
    if bits == 8:
        return structure[:count].astype(np.int64)
    p = np.arange(count)
    return ((structure[p // 2] >> ((p % 2) * 4)) & 15).astype(np.int64)


def entries(meta, structure, indptr):
    """(rows, columns) of the stored entries, in value order."""
    layout, _, index, m, n, count = (int(v) for v in meta[:6])
    if layout == LAYOUT_DENSE:
        return np.repeat(np.arange(m), n), np.tile(np.arange(n), m)
    if layout == LAYOUT_BITMASK:
        width = (n + 7) // 8
        bits = np.unpackbits(
            structure[: m * width].reshape(m, width), axis=1, bitorder="little"
        )[:, :n]
        rows, cols = np.nonzero(bits)
        return rows, cols
    # np.intp counts: np.repeat refuses to cast int64 ones on 32-bit NumPy
    rows = np.repeat(np.arange(m), np.diff(indptr.astype(np.intp)))
    if layout == LAYOUT_CSR:
        return rows, structure[:count].astype(np.int64)
    steps = decode_gaps(structure, index, count) + 1
    starts = indptr[:-1].astype(np.int64)
    cols = np.cumsum(steps)
    # restart the running column at each row: subtract the sum before it
    before = np.concatenate(([0], cols))[starts]
    return rows, cols - before[rows] - 1


def pack_fields(fields, bits):
    """Unsigned (or two's complement) fields of 2, 4 or 8 bits packed
    little-endian: field k of a byte at bit (k * bits)."""
    fields = np.asarray(fields, np.int64) & ((1 << bits) - 1)
    if bits == 8:
        return fields.astype(np.uint8)
    per_byte = 8 // bits
    padded = np.zeros(-(-fields.size // per_byte) * per_byte, np.int64)
    padded[: fields.size] = fields
    shifts = np.arange(per_byte) * bits
    return (padded.reshape(-1, per_byte) << shifts).sum(axis=1).astype(np.uint8)
