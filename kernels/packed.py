"""Deployment matrices: a layer's weights at their physical size.

A ``PackedMatrix`` stores an (m, n) matrix for inference on a board, as
small as a layout and a value codec allow (ALGORITHMS.md section 3):

* layouts: "dense" (every slot), "csr" (absolute column indices of the
  narrowest type for n: 1, 2 or 4 bytes), "delta4" / "delta8" (each
  column as the gap from the previous one in 4 or 8 bits, with a filler
  entry of value 0 where a gap is longer than the range, as Deep
  Compression and EIE store them) and "bitmask" (one bit per slot of the
  row, then the stored values);
* values: "float32", "float16", or symmetric integers with one scale per
  row, "int8", "int4" (two per byte) and "int2" (four per byte), on
  ``bits`` bits (2..8; the container is the smallest of 2, 4, 8 bits that
  holds them): q = round(w / scale), scale = max|row| / (2**(bits-1) - 1).

Row pointers are uint16 where the entries fit, else int32.  Products
compute in float32 and run on one thread (the kernels of the "packed"
family of every backend: ``kernels._reference.packed`` is their
specification).  ``PackedMatrix.from_dense`` prunes, quantises and encodes
a dense matrix, choosing the smallest layout with ``layout="auto"``; the
matrices work with ``kernels.spmv``, ``kernels.spmm`` and as the weight of
a ``kernels.nn.SparseLinear`` (``SparseMLP.from_dense(..., fmt="auto")``).

The byte accounting per stored weight (k value bits, p the density of the
row's slots): csr k + 8 or k + 16 bits; delta4 k + 4 bits plus a filler per
gap longer than 15; bitmask k + 1/p bits; dense k/p bits.  After neuron
removal layers are often 50-70% dense, where the bitmask or dense storage
beats any index.
"""

import numpy as np

from kernels import _checks
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
from kernels._packing import (
    META_BITS,
    META_COUNT,
    META_FIELDS,
    META_INDEX,
    META_LAYOUT,
    META_M,
    META_N,
    META_VALUES,
    decode_values,
    entries,
    pack_fields,
)
from kernels.sparse import _largest, _SparseOperator

__all__ = ["PackedMatrix", "LAYOUTS", "CODECS"]

# name -> (layout code, index code)
LAYOUTS = {
    "dense": (LAYOUT_DENSE, 0),
    "csr": (LAYOUT_CSR, None),  # index bytes from n
    "delta4": (LAYOUT_DELTA, 4),
    "delta8": (LAYOUT_DELTA, 8),
    "bitmask": (LAYOUT_BITMASK, 0),
}
# name -> (values code, bits per stored value)
CODECS = {
    "float32": (VALUES_FLOAT32, 32),
    "float16": (VALUES_FLOAT16, 16),
    "int8": (VALUES_INT8, 8),
    "int4": (VALUES_INT4, 4),
    "int2": (VALUES_INT2, 2),
}
_CODEC_OF = {code: name for name, (code, _) in CODECS.items()}
_INTEGER = (VALUES_INT8, VALUES_INT4, VALUES_INT2)
_VALUE_DTYPES = {
    VALUES_FLOAT32: np.dtype(np.float32),
    VALUES_FLOAT16: np.dtype(np.uint16),
    VALUES_INT8: np.dtype(np.uint8),
    VALUES_INT4: np.dtype(np.uint8),
    VALUES_INT2: np.dtype(np.uint8),
}
_CSR_INDEX_DTYPES = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.uint16),
    4: np.dtype(np.int32),
}
# the order auto tries layouts in: on equal bytes, the first (fastest) wins
_AUTO_ORDER = ("dense", "bitmask", "csr", "delta8", "delta4")
_U16_MAX = 65535
_I32_MAX = 2**31 - 1


def _value_bytes(code, count):
    bits = CODECS[_CODEC_OF[code]][1]
    return (count * bits + 7) // 8


def codec_for_bits(bits):
    """The integer codec (name) of the smallest container for ``bits``."""
    return "int2" if bits <= 2 else "int4" if bits <= 4 else "int8"


def _csr_index_bytes(n):
    return 1 if n <= 256 else 2 if n <= 65536 else 4


class PackedMatrix(_SparseOperator):
    """A deployment matrix (see the module): ``layout`` and ``codec``
    names, the stored ``values`` (codec-dependent dtype), ``structure``
    (the layout's index stream), ``indptr`` and per-row ``scales``.

    Built by ``from_dense``; the constructor takes the raw arrays (as the
    model file stores them) and validates them unless ``check=False``
    (UNSAFE: an invalid structure makes the compiled kernels read out of
    bounds): codes, dtypes and lengths, row pointers from 0 to the stored
    count never decreasing, every column (decoded, for delta) in [0, n),
    bitmask padding bits clear and bit count equal to the stored count,
    integer values within [-qmax, qmax], float values, scales finite and
    scales >= 0.  O(stored entries + m).
    """

    __slots__ = ("_meta", "_values", "_structure", "_indptr", "_scales")
    _kernels = ("packed_matvec", None, "packed_matmat")
    _family = "packed"

    def __init__(
        self,
        layout,
        codec,
        shape,
        values,
        structure=None,
        indptr=None,
        scales=None,
        bits=None,
        check=True,
    ):
        m, n = self._shape = _checks.shape2(shape)
        if layout not in LAYOUTS:
            raise ValueError(
                f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}"
            )
        if codec not in CODECS:
            raise ValueError(
                f"codec must be one of {', '.join(map(repr, CODECS))}, got {codec!r}"
            )
        layout_code, index = LAYOUTS[layout]
        code, container = CODECS[codec]
        if layout_code == LAYOUT_CSR:
            index = _csr_index_bytes(n)
        if code in _INTEGER:
            bits = container if bits is None else bits
            bits = _checks.integer(bits, "bits", minimum=2, maximum=container)
        elif bits is not None:
            raise ValueError(f"bits is for integer codecs, not {codec!r}")
        else:
            bits = 0
        if code == VALUES_INT8 and np.asarray(values).dtype == np.int8:
            values = np.asarray(values).view(np.uint8)
        values = _array(values, "values", _VALUE_DTYPES[code])
        structure = _array(
            structure,
            "structure",
            _CSR_INDEX_DTYPES[index] if layout_code == LAYOUT_CSR else np.uint8,
        )
        if layout_code in (LAYOUT_CSR, LAYOUT_DELTA):
            if indptr is None:
                raise ValueError(f"a {layout} matrix needs indptr")
            indptr = _checks.index_array(indptr, "indptr")
            if indptr.size and (indptr.min() < 0 or indptr.max() > _I32_MAX):
                raise ValueError("indptr must lie in [0, 2**31 - 1]")
            indptr = np.ascontiguousarray(indptr, dtype=np.int32)
            if indptr.shape != (m + 1,):
                raise ValueError(
                    f"indptr must have shape ({m + 1},), got shape {indptr.shape}"
                )
            count = int(indptr[-1])
        else:
            if indptr is not None and np.size(indptr):
                raise ValueError(f"a {layout} matrix has no indptr")
            indptr = np.zeros(0, np.int32)
            if layout_code == LAYOUT_DENSE:
                count = m * n
            else:
                count = _bitmask_count(structure, m, n)
        if code in _INTEGER:
            if scales is None:
                raise ValueError(f"{codec} values need scales (one per row)")
            scales = _checks.as_float_array(scales, "scales", np.float32)
            if scales.shape != (m,):
                raise ValueError(
                    f"scales must have shape ({m},) (one per row), got {scales.shape}"
                )
        elif scales is not None and np.size(scales):
            raise ValueError(f"{codec} values have no scales")
        else:
            scales = np.zeros(0, np.float32)
        meta = np.zeros(META_FIELDS, np.int64)
        meta[[META_LAYOUT, META_VALUES, META_INDEX, META_M, META_N]] = (
            layout_code,
            code,
            index,
            m,
            n,
        )
        meta[META_COUNT], meta[META_BITS] = count, bits
        self._meta, self._values, self._structure = meta, values, structure
        self._indptr, self._scales = indptr, scales
        _validate_lengths(self)
        if check:
            _validate_contents(self)

    # Construction ----------------------------------------------------------

    @classmethod
    def from_dense(
        cls,
        W,
        layout="auto",
        codec="float32",
        bits=None,
        threshold=0.0,
        density=None,
        scales="auto",
    ):
        """The deployment form of the finite 2-D array ``W``.

        Pruning as ``CSRMatrix.from_dense`` (``|w| > threshold``, or the
        ``round(density * size)`` largest magnitudes).  ``codec`` "float32",
        "float16", "int8", "int4", "int2", or "int" with ``bits`` (2..8: the
        container follows); weights that round to 0 are not stored (but in
        the dense layout).  ``scales`` of integer codecs: "float32",
        "float16" (rounded to the nearest binary16, so that the model file
        stores them in 2 bytes) or "auto" (float16 when every scale is a
        normal binary16 number).  ``layout``: a name of ``LAYOUTS``, or
        "auto": the layout of fewest bytes for these values (ties to the
        faster: dense, bitmask, csr, delta8, delta4).  O(W.size).
        """
        W = _checks.as_float_array(W, "W")
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D, got shape {W.shape}")
        _checks.require_finite(W, "W")
        if codec == "int":
            if bits is None:
                raise ValueError('codec="int" needs bits (2..8)')
            bits = _checks.integer(bits, "bits", minimum=2, maximum=8)
            codec = codec_for_bits(bits)
        if codec not in CODECS:
            raise ValueError(
                f"codec must be one of {', '.join(map(repr, CODECS))} or 'int', "
                f"got {codec!r}"
            )
        keep = _kept(W, threshold, density)
        code = CODECS[codec][0]
        q, row_scales, bits = _quantised(W, keep, code, bits, scales)
        keep &= q != 0
        if layout == "auto":
            options = {name: _encode(name, q, keep) for name in _AUTO_ORDER}
            layout = min(_AUTO_ORDER, key=lambda name: _nbytes(options[name], code))
            structure, indptr, stored = options[layout]
        elif layout in LAYOUTS:
            structure, indptr, stored = _encode(layout, q, keep)
        else:
            raise ValueError(
                f"layout must be 'auto' or one of {', '.join(map(repr, LAYOUTS))}, "
                f"got {layout!r}"
            )
        return cls(
            layout,
            codec,
            W.shape,
            _pack_values(code, stored),
            structure,
            indptr if indptr.size else None,
            row_scales,
            bits if code in _INTEGER else None,
            check=False,
        )

    # Properties ------------------------------------------------------------

    @property
    def layout(self):
        """The layout's name: "dense", "csr", "delta4", "delta8" or "bitmask"."""
        code, index = int(self._meta[META_LAYOUT]), int(self._meta[META_INDEX])
        if code == LAYOUT_DELTA:
            return f"delta{index}"
        return next(name for name, (c, _) in LAYOUTS.items() if c == code)

    @property
    def codec(self):
        """How values are stored: "float32", "float16", "int8", "int4", "int2"."""
        return _CODEC_OF[int(self._meta[META_VALUES])]

    @property
    def index_code(self):
        """The layout's index width: bytes per column index (csr), bits
        per gap (delta4, delta8), else 0."""
        return int(self._meta[META_INDEX])

    @property
    def bits(self):
        """The quantisation's bits (2..8) of an integer codec, else None."""
        bits = int(self._meta[META_BITS])
        return bits or None

    @property
    def values(self):
        """The stored values, in the codec's dtype (float32; uint16 bit
        patterns of float16; int8; bytes of packed int4 / int2)."""
        if int(self._meta[META_VALUES]) == VALUES_INT8:
            return self._values.view(np.int8)
        return self._values

    @property
    def structure(self):
        """The layout's index stream (column indices, gaps or bitmask)."""
        return self._structure

    @property
    def indptr(self):
        """Row offsets into the stored entries (csr and delta), else empty:
        int32 in memory, uint16 in the model file where they fit."""
        return self._indptr

    @property
    def indices(self):
        """The column of every stored entry (decoded, fillers included)."""
        return entries(self._meta, self._structure, self._indptr)[1]

    @property
    def scales(self):
        """One float32 scale per row (integer codecs), else empty."""
        return self._scales

    @property
    def dtype(self):
        """float32: the dtype the products compute in."""
        return np.dtype(np.float32)

    @property
    def nnz(self):
        """Stored entries (every slot for dense; fillers included for delta)."""
        return int(self._meta[META_COUNT])

    @property
    def stored_weights(self):
        """Non-zero weights stored (no fillers, no dense zeros)."""
        return int(np.count_nonzero(self._decoded()))

    @property
    def value_bits(self):
        """Bits of stored values: nnz times the codec's bits per value."""
        return self.nnz * CODECS[self.codec][1]

    @property
    def _arrays(self):
        return self._meta, self._values, self._structure, self._indptr, self._scales

    @property
    def nbytes(self):
        """Bytes the model file stores for this matrix: values, structure,
        row pointers (uint16 where they fit) and scales (float16 where that
        is exact); the per-layer header aside."""
        return (
            self._values.nbytes
            + self._structure.nbytes
            + pointer_width(self._indptr) * self._indptr.size
            + float_width(self._scales) * self._scales.size
        )

    def _decoded(self):
        return decode_values(int(self._meta[META_VALUES]), self._values, self.nnz)

    def to_dense(self):
        """The dense float32 (m, n) array of the stored (dequantised) values."""
        rows, cols = entries(self._meta, self._structure, self._indptr)
        v = self._decoded()
        if self._scales.size:
            v = v * self._scales.astype(np.float64)[rows]
        dense = np.zeros(self._shape, np.float64)
        np.add.at(dense, (rows, cols), v)
        return dense.astype(np.float32)

    def _repr_extra(self):
        bits = f", bits={self.bits}" if self.bits else ""
        return f", layout={self.layout!r}, codec={self.codec!r}{bits}"


def pointer_width(indptr):
    """Bytes per row pointer in the model file: 2 where they fit, else 4."""
    return 2 if indptr.size and int(indptr[-1]) <= _U16_MAX else 4


def float_width(values):
    """Bytes per value of a float array in the model file: 2 when every
    value is exactly a float16, else its own itemsize."""
    with np.errstate(over="ignore"):
        half = values.astype(np.float16)
    return 2 if np.array_equal(half.astype(values.dtype), values) else values.itemsize


def _array(a, name, dtype):
    if a is None:
        return np.zeros(0, dtype)
    a = np.asarray(a)
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _bitmask_count(structure, m, n):
    width = (n + 7) // 8
    if structure.size != m * width:
        raise ValueError(
            f"a bitmask of shape ({m}, {n}) has {m * width} bytes, got {structure.size}"
        )
    return int(np.unpackbits(structure).sum()) if structure.size else 0


def _validate_lengths(A):
    """The O(1) checks: every array's length follows from the codes."""
    meta = A._meta
    layout, code = int(meta[META_LAYOUT]), int(meta[META_VALUES])
    m, n, count = (int(meta[i]) for i in (META_M, META_N, META_COUNT))
    if m > _I32_MAX or n > _I32_MAX:
        raise ValueError(f"shape ({m}, {n}) is too large (at most 2**31 - 1 each)")
    if count < 0:
        raise ValueError(f"indptr must end at the stored count (>= 0), got {count}")
    expected = _value_bytes(code, count)
    got = A._values.nbytes
    if got != expected:
        raise ValueError(
            f"values must hold {count} {_CODEC_OF[code]} values ({expected} bytes), "
            f"got {got} bytes"
        )
    if layout == LAYOUT_CSR and A._structure.size != count:
        raise ValueError(
            f"structure must hold {count} column indices, got {A._structure.size}"
        )
    if layout == LAYOUT_DELTA:
        gaps = (count * int(meta[META_INDEX]) + 7) // 8
        if A._structure.size != gaps:
            raise ValueError(
                f"structure must hold {count} gaps ({gaps} bytes), got "
                f"{A._structure.size}"
            )
    if layout == LAYOUT_DENSE and A._structure.size:
        raise ValueError("a dense matrix has no structure")
    if layout in (LAYOUT_CSR, LAYOUT_DELTA) and count > _I32_MAX:
        raise ValueError(f"too many stored entries ({count})")


def _validate_contents(A):
    """The O(stored entries + m) checks of the constructor."""
    meta = A._meta
    layout, code = int(meta[META_LAYOUT]), int(meta[META_VALUES])
    m, n, count = (int(meta[i]) for i in (META_M, META_N, META_COUNT))
    if layout in (LAYOUT_CSR, LAYOUT_DELTA):
        p = A._indptr.astype(np.int64)
        if p[0] != 0 or (np.diff(p) < 0).any():
            raise ValueError("indptr must start at 0 and never decrease")
    if layout == LAYOUT_CSR and count:
        # an int32 structure (n > 65536) can hold negative indices
        if int(A._structure.max()) >= n or int(A._structure.min()) < 0:
            raise ValueError(f"column indices must lie in [0, {n})")
    if layout == LAYOUT_DELTA and count:
        rows, cols = entries(meta, A._structure, A._indptr)
        if int(cols.max()) >= n:
            raise ValueError(f"the gaps run past the last column ({n - 1})")
    if layout == LAYOUT_BITMASK and n % 8 and m:
        width = (n + 7) // 8
        last = A._structure.reshape(m, width)[:, -1]
        if (last >> (n % 8)).any():
            raise ValueError("bitmask bits past the last column must be 0")
    values = decode_values(code, A._values, count)
    if code in _INTEGER:
        qmax = 2 ** (int(meta[META_BITS]) - 1) - 1
        if count and np.abs(values).max() > qmax:
            raise ValueError(
                f"values must lie in [-{qmax}, {qmax}] for bits={int(meta[META_BITS])}"
            )
        _checks.require_finite(A._scales, "scales")
        if (A._scales < 0).any():
            raise ValueError("scales must be >= 0")
    elif not np.isfinite(values).all():
        raise ValueError("values must be finite")


def _kept(W, threshold, density):
    threshold = _checks.scalar(threshold, "threshold", minimum=0.0)
    magnitude = np.abs(W)
    if density is None:
        return magnitude > threshold
    density = _checks.scalar(density, "density", minimum=0.0)
    if density > 1:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if threshold != 0:
        raise ValueError("give threshold or density, not both")
    return _largest(magnitude, round(density * W.size)) & (magnitude > 0)


def _quantised(W, keep, code, bits, scales):
    """(q, scales, bits): the stored values as float64 (the integers q, or
    the rounded floats) on the whole (m, n) grid, 0 where not kept."""
    kept = np.where(keep, W, 0.0).astype(np.float64)
    largest = np.abs(kept).max(axis=1, initial=0.0)
    if not (largest <= np.finfo(np.float32).max).all():
        # the products compute in float32: an entry past it would be inf
        raise ValueError("W has values too large for float32 (|w| > 3.4e38)")
    if code == VALUES_FLOAT32:
        return kept.astype(np.float32).astype(np.float64), np.zeros(0, np.float32), 0
    if code == VALUES_FLOAT16:
        with np.errstate(over="ignore"):
            q = kept.astype(np.float16)
        if not np.isfinite(q).all():
            raise ValueError("W has values too large for float16 (|w| > 65504)")
        return q.astype(np.float64), np.zeros(0, np.float32), 0
    container = CODECS[_CODEC_OF[code]][1]
    bits = container if bits is None else bits
    bits = _checks.integer(bits, "bits", minimum=2, maximum=container)
    qmax = 2 ** (bits - 1) - 1
    with np.errstate(over="ignore"):
        row_scales = (largest / qmax).astype(np.float32)
    if not np.isfinite(row_scales).all():
        raise ValueError("W's values are too large for float32 scales")
    if scales not in ("auto", "float16", "float32"):
        raise ValueError(
            f'scales must be "auto", "float16" or "float32", got {scales!r}'
        )
    if scales != "float32":
        with np.errstate(over="ignore"):
            half = row_scales.astype(np.float16)
            # round up, so that |w| / scale stays within qmax (which can
            # take a scale just under the largest float16 to inf)
            half = np.where(
                half.astype(np.float32) < row_scales,
                np.nextafter(half, np.float16(np.inf)),
                half,
            )
        normal = (row_scales == 0) | (
            (np.abs(half) >= np.finfo(np.float16).tiny) & np.isfinite(half)
        )
        if scales == "float16" or normal.all():
            if not np.isfinite(half).all():
                raise ValueError("scales do not fit in float16")
            row_scales = half.astype(np.float32)
    s = row_scales.astype(np.float64)[:, None]
    q = np.zeros_like(kept)
    np.divide(kept, s, out=q, where=s > 0)
    np.clip(np.rint(q, out=q), -qmax, qmax, out=q)
    return q, row_scales, bits


def _encode(layout, q, keep):
    """(structure, indptr, stored values in order) of the grid q in
    ``layout``."""
    m, n = q.shape
    code, index = LAYOUTS[layout]
    if code == LAYOUT_DENSE:
        return np.zeros(0, np.uint8), np.zeros(0, np.int32), q.reshape(-1)
    rows, cols = np.nonzero(keep)
    stored = q[rows, cols]
    if code == LAYOUT_BITMASK:
        width = (n + 7) // 8
        bits = np.zeros((m, width * 8), np.uint8)
        bits[rows, cols] = 1
        mask = np.packbits(bits, axis=1, bitorder="little").reshape(-1)
        return mask, np.zeros(0, np.int32), stored
    counts = np.bincount(rows, minlength=m)
    if code == LAYOUT_CSR:
        return (
            cols.astype(_CSR_INDEX_DTYPES[_csr_index_bytes(n)]),
            _pointer(counts),
            (stored),
        )
    # delta: gaps from the previous column (-1 at a row's start), fillers of
    # gap 2**bits - 1 and value 0 for each 2**bits columns of a longer gap
    span = 1 << index
    first = np.ones(rows.size, bool)
    first[1:] = rows[1:] != rows[:-1]
    previous = np.where(first, -1, np.concatenate(([-1], cols[:-1])))
    gaps = cols - previous - 1
    fillers = gaps // span
    total = rows.size + int(fillers.sum())
    where = np.arange(rows.size) + np.cumsum(fillers)  # each real entry's slot
    all_gaps = np.full(total, span - 1, np.int64)
    all_gaps[where] = gaps - fillers * span
    all_values = np.zeros(total)
    all_values[where] = stored
    row_counts = counts + np.bincount(rows, weights=fillers, minlength=m).astype(
        np.int64
    )
    return pack_fields(all_gaps, index), _pointer(row_counts), all_values


def _pointer(counts):
    total = int(counts.sum())
    if total > _I32_MAX:
        raise ValueError(f"too many stored entries ({total})")
    indptr = np.zeros(counts.size + 1, np.int32)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def _pack_values(code, stored):
    if code == VALUES_FLOAT32:
        return stored.astype(np.float32)
    if code == VALUES_FLOAT16:
        return stored.astype(np.float16).view(np.uint16)
    if code == VALUES_INT8:
        return stored.astype(np.int8).view(np.uint8)
    return pack_fields(stored.astype(np.int64), 4 if code == VALUES_INT4 else 2)


def _nbytes(encoded, code):
    structure, indptr, stored = encoded
    return (
        structure.nbytes
        + pointer_width(indptr) * indptr.size
        + _value_bytes(code, stored.size)
    )


def layout_bytes(
    W, codec="float32", bits=None, threshold=0.0, density=None, scales="auto"
):
    """{layout: bytes of values, structure and indptr} of ``W`` in every
    layout (what ``from_dense(layout="auto")`` with the same arguments
    compares; scales aside, the same for all)."""
    W = _checks.as_float_array(W, "W")
    code = CODECS[codec][0]
    keep = _kept(W, threshold, density)
    q, _, _ = _quantised(W, keep, code, bits, scales)
    keep &= q != 0
    return {name: _nbytes(_encode(name, q, keep), code) for name in _AUTO_ORDER}
