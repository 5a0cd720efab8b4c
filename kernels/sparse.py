"""Sparse matrix products for inference (ALGORITHMS.md section 6).

Three storage formats, each validated once when it is built, and three
products over them, each a single kernel call of the chosen backend:

* ``CSRMatrix``: compressed sparse rows, float32 or float64 values.
* ``BSRMatrix``: compressed sparse rows of dense (r, c) blocks: one index per
  block, so less index traffic and a vectorisable inner loop, at the price
  of the explicit zeros the blocks add (``fill_in``).
* ``QuantizedCSR``: CSR with int8 values and one float32 scale per row.

* ``spmv(A, x)``: y = alpha * A @ x + beta * y.
* ``spmv_t(A, x)``: y = alpha * A.T @ x + beta * y, without forming A.T.
* ``spmm(A, X)``: the product with a batch of vectors, each loaded non-zero
  reused once per vector.

Common behaviour:

* ``A`` is one of the three classes, or any scipy.sparse matrix or array,
  converted on every call (``BSRMatrix.from_scipy`` for BSR input,
  ``CSRMatrix.from_scipy`` otherwise): an O(nnz) validation pass and,
  unless A is already CSR (or BSR), a conversion copy.  Convert once and
  keep the result when the same matrix is used more than once.
* Vectors are converted to A's dtype (float32 for ``QuantizedCSR``);
  integer and other real dtypes are accepted, complex ones are a
  TypeError.  A copy is made only when the dtype or the layout requires it.
* ``out=None`` allocates the result.  A given ``out`` must be a writable
  array of the result's shape and dtype; when it is not C-contiguous, or
  shares memory with the input, the kernel writes a temporary that is then
  copied into ``out``.  With ``beta == 0`` (the default) ``out`` is written,
  never read, so it may hold garbage or NaN; ``beta != 0`` reads it, so it
  requires ``out``.  ``alpha`` and ``beta`` are finite reals.
* Unsorted column indices, and repeated ones, are allowed: repeated
  entries are summed, as scipy.sparse does (in the products and in
  ``to_dense``).
* ``threads``: None picks 1 for products of fewer than
  ``PARALLEL_MIN_WORK`` multiply-adds (nnz * batch), where starting
  threads costs more than it saves, and otherwise one thread per CPU this
  process may run on; an int from 1 to ``kernels._checks.MAX_THREADS``
  (1024; above it a ValueError, a non-integer a TypeError) asks for that
  many, of which at most the usable CPUs (the process's affinity mask at
  import) are started: more would only wait for each other, and an OpenMP
  runtime that cannot create a thread aborts the process.  The result does
  not depend on the count.  The numpy backend ignores it; ``spmv_t`` is
  serial (a scatter) and only validates it.
* ``backend`` is "cython", "numba" or "numpy"; None uses the current
  default (``kernels.get_backend()``).

The structure arrays are validated once, at construction: modifying
``indices`` or ``indptr`` of a built matrix in place is unsafe (the
compiled kernels do not check bounds).  Values may be modified freely.
"""

import math
import sys

import numpy as np

from kernels import _checks
from kernels._backend import get_backend, kernels_for, resolve

__all__ = ["CSRMatrix", "BSRMatrix", "QuantizedCSR", "spmv", "spmv_t", "spmm"]

# Products with fewer multiply-adds (nnz * batch) than this run on one thread
# when threads=None: below it, waking a thread team costs about as much as
# the product itself.  Two threads broke even at about 30k multiply-adds on
# a quiet 2-core x86-64 machine (Numba 0.97x at 30k and 1.3-1.5x at 100k;
# Cython 1.6-2x from 32k); 100k leaves margin for boards and busy machines,
# where one descheduled thread makes the whole team wait.
PARALLEL_MIN_WORK = 100_000

_INT32_MAX = int(np.iinfo(np.int32).max)
_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


_CPUS = _checks.USABLE_CPUS
_MAX_THREADS = _checks.MAX_THREADS


def _n_threads(threads, work):
    """The threads a product of ``work`` multiply-adds runs on for the
    ``threads`` argument, validated (``_checks.threads``)."""
    if threads is None:
        return 1 if work < PARALLEL_MIN_WORK else _CPUS
    if type(threads) is int and 1 <= threads <= _MAX_THREADS:
        return threads if threads <= _CPUS else _CPUS
    return _checks.started_threads(_checks.threads(threads))


def _scipy_sparse():
    """scipy.sparse, imported only when a scipy object is involved."""
    import scipy.sparse

    return scipy.sparse


def _is_scipy_sparse(A):
    # A scipy matrix can only exist if scipy.sparse was imported already.
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(A)


def _require_scipy_sparse(A, name="A"):
    sp = _scipy_sparse()
    if not sp.issparse(A):
        raise TypeError(
            f"{name} must be a scipy.sparse matrix or array, got {type(A).__name__}"
        )
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {A.shape}")
    return sp


def _index_dtype(indices, indptr, nnz, n_minor, given):
    """The common index dtype of a float matrix: the input's when indices
    and indptr were ``given`` as arrays that share int32 or int64, else
    int32 when nnz and the minor dimension fit in it, else int64."""
    if given and indices.dtype == indptr.dtype and indices.dtype in _INDEX_DTYPES:
        return indices.dtype
    return np.dtype(np.int32 if max(nnz, n_minor) <= _INT32_MAX else np.int64)


def _compressed_indptr(counts, dtype):
    indptr = np.zeros(counts.size + 1, dtype=dtype)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def _dense_input(W, dtype, name="W"):
    dtype = None if dtype is None else _checks.float_dtype(dtype, "dtype")
    W = _checks.as_float_array(W, name, dtype)
    if W.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {W.shape}")
    _checks.require_finite(W, name)
    return W


def _scatter_dense(rows, cols, values, shape, dtype):
    """The dense matrix with ``values`` summed at (rows, cols)."""
    m, n = shape
    flat = (rows.astype(np.int64) * n + cols).astype(np.intp, copy=False)
    dense = np.bincount(flat, weights=values, minlength=m * n)
    return dense.astype(dtype, copy=False).reshape(shape)


def _blocksize(blocksize):
    r, c = _checks.shape2(blocksize, "blocksize")
    if r < 1 or c < 1:
        raise ValueError(f"blocksize must be positive, got {(r, c)}")
    return r, c


def _check_divisible(shape, blocksize):
    if shape[0] % blocksize[0] or shape[1] % blocksize[1]:
        raise ValueError(
            f"shape {shape} must be divisible by blocksize {blocksize}: BSR does "
            f"not pad (use a blocksize that divides the shape, or pad the matrix)"
        )


class _SparseOperator:
    """What the three formats share: shape, structure arrays, nnz, nbytes,
    density, ``@``.  A subclass provides ``_arrays``, the arguments its
    kernels take before the vector."""

    # _plans_cache: the one-sample plans (MatvecPlan) of a CSR or quantised
    # matrix, by backend name, built by its first small product on each
    # backend; _plan_memo: the plan (or None) that a product with a given
    # (backend, threads) pair takes.  Both left out of pickles (plans hold
    # buffers, and both are caches).
    __slots__ = ("_shape", "_plans_cache", "_plan_memo")
    _plan_format = None  # "csr" / "int8": the formats a MatvecPlan takes
    _family = "sparse"  # the kernel family of the products
    _CACHES = ("_plans_cache", "_plan_memo")

    def __getstate__(self):
        return {
            name: getattr(self, name)
            for cls in type(self).__mro__
            for name in cls.__dict__.get("__slots__", ())
            if name not in self._CACHES and hasattr(self, name)
        }

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def shape(self):
        """(m, n)."""
        return self._shape

    @property
    def _plans(self):
        try:
            return self._plans_cache
        except AttributeError:
            self._plans_cache = {}
            return self._plans_cache

    @property
    def density(self):
        """nnz / (m * n): stored entries per entry of the matrix (0.0 for an
        empty shape; repeated entries can make it exceed 1)."""
        size = self._shape[0] * self._shape[1]
        return self.nnz / size if size else 0.0

    @property
    def indices(self):
        """The column index of each stored entry (block column for BSR)."""
        return self._indices

    @property
    def indptr(self):
        """Row offsets: row i holds entries indptr[i]:indptr[i + 1]
        (block rows for BSR)."""
        return self._indptr

    @property
    def nnz(self):
        """Stored entries: explicit zeros and repeats included, and for a
        BSRMatrix the zeros inside its blocks."""
        return self._arrays[0].size

    @property
    def nbytes(self):
        """Bytes of every array the products read: the values, indices and
        indptr, and a QuantizedCSR's scales."""
        return sum(array.nbytes for array in self._arrays)

    def __matmul__(self, other):
        """``A @ x`` for a vector x of length n (``spmv``), ``A @ X`` for X of
        shape (n, k) (``spmm`` with layout="features"), as in scipy."""
        if type(other) is np.ndarray and other.ndim == 1:
            return spmv(self, other)  # checks x as any spmv call does
        if isinstance(other, _SparseOperator) or _is_scipy_sparse(other):
            return NotImplemented
        other = _checks.real_array(other, "x")
        if other.ndim == 1:
            return spmv(self, other)
        if other.ndim == 2:
            return spmm(self, other, layout="features")
        raise ValueError(f"A @ x needs a 1-D or 2-D x, got x with shape {other.shape}")

    def __repr__(self):
        return (
            f"{type(self).__name__}(shape={self._shape}, nnz={self.nnz}, "
            f"dtype={self.dtype}{self._repr_extra()})"
        )


class CSRMatrix(_SparseOperator):
    """A sparse matrix in compressed sparse row format.

    ``data`` (nnz values), ``indices`` (the column of each value) and
    ``indptr`` (m + 1 offsets: row i holds entries indptr[i]:indptr[i+1]).
    Values are float32 or float64 (other real dtypes are converted: float16
    to float32, the rest to float64).  Indices may be any integer dtype:
    when ``indices`` and ``indptr`` are both int32 or both int64 they are
    kept as given, otherwise both become int32 if nnz and n fit in it, else
    int64 (lists always become int32 unless too large).  Arrays already of
    the right dtype and C-contiguous are used
    without a copy.

    ``check=True`` validates the whole structure in one O(nnz) pass:
    indptr starts at 0, never decreases and ends at nnz; every column index
    lies in [0, n).  ``check=False`` skips that pass (the O(1) shape and
    length checks remain): UNSAFE, for structures that are known to be
    valid; an invalid one makes the compiled kernels read or write out of
    bounds.

    Columns within a row may be unsorted or repeated; repeated entries are
    summed, as in scipy.sparse.
    """

    __slots__ = ("_data", "_indices", "_indptr")
    _kernels = ("csr_matvec", "csr_matvec_t", "csr_matmat")
    _plan_format = "csr"

    def __init__(self, data, indices, indptr, shape, check=True):
        m, n = self._shape = _checks.shape2(shape)
        data = _checks.as_float_array(data, "data")
        if data.ndim != 1:
            raise ValueError(f"data must be 1-D, got shape {data.shape}")
        given = isinstance(indices, np.ndarray) and isinstance(indptr, np.ndarray)
        indices = _checks.index_array(indices, "indices")
        indptr = _checks.index_array(indptr, "indptr")
        _checks.compressed_structure(indices, indptr, m, n, data.size, full=check)
        itype = _index_dtype(indices, indptr, data.size, n, given)
        self._data = data
        self._indices = np.ascontiguousarray(indices, dtype=itype)
        self._indptr = np.ascontiguousarray(indptr, dtype=itype)

    @classmethod
    def from_dense(cls, W, threshold=0.0, density=None, dtype=None):
        """The entries of the 2-D, finite array ``W`` that survive pruning.

        By default the entries with ``|w| > threshold`` (threshold >= 0;
        ``threshold=0`` keeps the non-zeros).  With ``density`` in [0, 1]
        (and the default threshold), magnitude pruning instead: exactly
        ``round(density * W.size)`` entries of largest magnitude are kept,
        ties going to the earlier entries in row-major order (so zeros are
        stored explicitly when fewer entries are non-zero).  O(W.size).
        ``dtype`` (float32 or float64) overrides W's.  Indices are int32
        unless the matrix needs int64.
        """
        W = _dense_input(W, dtype)
        threshold = _checks.scalar(threshold, "threshold", minimum=0.0)
        magnitude = np.abs(W)
        if density is None:
            keep = magnitude > threshold
        else:
            density = _checks.scalar(density, "density", minimum=0.0)
            if density > 1:
                raise ValueError(f"density must be in [0, 1], got {density}")
            if threshold != 0:
                raise ValueError("give threshold or density, not both")
            keep = _largest(magnitude, round(density * W.size))
        rows, cols = np.nonzero(keep)
        itype = np.int32 if max(rows.size, W.shape[1]) <= _INT32_MAX else np.int64
        indptr = _compressed_indptr(np.count_nonzero(keep, axis=1), itype)
        return cls(W[rows, cols], cols.astype(itype), indptr, W.shape, check=False)

    @classmethod
    def from_scipy(cls, A):
        """A copy-free view of a scipy CSR matrix or array (any other scipy
        sparse format is converted with ``A.tocsr()`` first), validated."""
        _require_scipy_sparse(A)
        if A.format != "csr":
            A = A.tocsr()
        return cls(A.data, A.indices, A.indptr, A.shape)

    def to_scipy(self):
        """A ``scipy.sparse.csr_array`` sharing this matrix's arrays."""
        return _scipy_sparse().csr_array(
            (self._data, self._indices, self._indptr), shape=self._shape, copy=False
        )

    def to_dense(self):
        """The dense (m, n) array, repeated entries summed."""
        rows = _checks.row_ids(self._indptr)
        return _scatter_dense(
            rows, self._indices, self._data, self._shape, self._data.dtype
        )

    @property
    def data(self):
        """The stored values, one per entry."""
        return self._data

    @property
    def dtype(self):
        """float32 or float64: the values' dtype, which the products compute in."""
        return self._data.dtype

    @property
    def _arrays(self):
        return self._data, self._indices, self._indptr

    def _repr_extra(self):
        return f", index_dtype={self._indices.dtype}"


def _largest(magnitude, k):
    """A mask of the k largest entries of ``magnitude``, ties to the earlier
    ones in row-major order.  O(size): a partition, not a sort."""
    flat = magnitude.reshape(-1)
    keep = np.zeros(flat.size, dtype=bool)
    if k >= flat.size:
        keep[:] = True
    elif k > 0:
        kth = np.partition(flat, flat.size - k)[flat.size - k]
        keep = flat > kth
        ties = np.flatnonzero(flat == kth)[: k - np.count_nonzero(keep)]
        keep[ties] = True
    return keep.reshape(magnitude.shape)


class BSRMatrix(_SparseOperator):
    """A sparse matrix of dense (r, c) blocks, in block compressed rows.

    ``data`` has shape (n_blocks, r, c) (the block shape is read from it,
    also when there are no blocks); ``indices`` holds the block column of
    each block and ``indptr`` (m / r + 1 offsets) the blocks of each block
    row.  The shape must be divisible by the block shape: nothing is
    padded, a shape that does not divide is a ValueError.  Value and index
    dtypes and ``check`` as for ``CSRMatrix`` (block columns in [0, n / c));
    repeated blocks are summed.
    """

    __slots__ = ("_data", "_indices", "_indptr")
    _kernels = ("bsr_matvec", "bsr_matvec_t", "bsr_matmat")

    def __init__(self, data, indices, indptr, shape, check=True):
        shape = self._shape = _checks.shape2(shape)
        data = _checks.as_float_array(data, "data")
        if data.ndim != 3 or 0 in data.shape[1:]:
            raise ValueError(
                f"data must have shape (n_blocks, r, c) with r, c >= 1, "
                f"got shape {data.shape}"
            )
        _check_divisible(shape, data.shape[1:])
        given = isinstance(indices, np.ndarray) and isinstance(indptr, np.ndarray)
        indices = _checks.index_array(indices, "indices")
        indptr = _checks.index_array(indptr, "indptr")
        block_rows = shape[0] // data.shape[1]
        block_cols = shape[1] // data.shape[2]
        _checks.compressed_structure(
            indices, indptr, block_rows, block_cols, data.shape[0], full=check
        )
        itype = _index_dtype(indices, indptr, data.shape[0], block_cols, given)
        self._data = data
        self._indices = np.ascontiguousarray(indices, dtype=itype)
        self._indptr = np.ascontiguousarray(indptr, dtype=itype)

    @classmethod
    def from_dense(cls, W, blocksize=(4, 4), threshold=0.0):
        """The blocks of the 2-D, finite array ``W`` holding an entry with
        ``|w| > threshold``; the other entries of those blocks are stored as
        zeros, so that ``to_dense()`` equals
        ``CSRMatrix.from_dense(W, threshold).to_dense()``."""
        W = _dense_input(W, None)
        r, c = blocksize = _blocksize(blocksize)
        _check_divisible(W.shape, blocksize)
        threshold = _checks.scalar(threshold, "threshold", minimum=0.0)
        m, n = W.shape
        blocks = W.reshape(m // r, r, n // c, c).swapaxes(1, 2)
        keep = np.abs(blocks) > threshold
        occupied = keep.any(axis=(2, 3))
        block_rows, block_cols = np.nonzero(occupied)
        data = np.where(keep, blocks, W.dtype.type(0))[block_rows, block_cols]
        itype = np.int32 if max(block_rows.size, n) <= _INT32_MAX else np.int64
        indptr = _compressed_indptr(np.count_nonzero(occupied, axis=1), itype)
        return cls(data, block_cols.astype(itype), indptr, W.shape, check=False)

    @classmethod
    def from_csr(cls, A, blocksize=(4, 4)):
        """The blocks covering the entries of the ``CSRMatrix`` A (repeated
        entries summed, explicit zeros kept).  O(nnz log nnz), no scipy."""
        if not isinstance(A, CSRMatrix):
            raise TypeError(f"A must be a CSRMatrix, got {type(A).__name__}")
        r, c = blocksize = _blocksize(blocksize)
        _check_divisible(A.shape, blocksize)
        n_block_cols = max(A.shape[1] // c, 1)
        rows = _checks.row_ids(A.indptr).astype(np.int64)
        cols = A.indices.astype(np.int64)
        keys = (rows // r) * n_block_cols + cols // c
        blocks, position = np.unique(keys, return_inverse=True)
        offsets = (position * r + rows % r) * c + cols % c
        data = np.bincount(
            offsets.astype(np.intp, copy=False),
            weights=A.data,
            minlength=blocks.size * r * c,
        )
        itype = np.int32 if max(blocks.size, A.shape[1]) <= _INT32_MAX else np.int64
        block_rows = (blocks // n_block_cols).astype(np.intp, copy=False)
        counts = np.bincount(block_rows, minlength=A.shape[0] // r)
        return cls(
            data.astype(A.dtype).reshape(-1, r, c),
            (blocks % n_block_cols).astype(itype),
            _compressed_indptr(counts, itype),
            A.shape,
            check=False,
        )

    @classmethod
    def from_scipy(cls, A, blocksize=None):
        """A copy-free view of a scipy BSR matrix or array, validated; any
        other scipy sparse format is converted with ``A.tobsr(blocksize)``
        (None: scipy's choice).  A BSR input with another blocksize than a
        given one is converted too."""
        _require_scipy_sparse(A)
        if A.format != "bsr" or (
            blocksize is not None and A.blocksize != _blocksize(blocksize)
        ):
            A = A.tobsr(blocksize=blocksize)
        return cls(A.data, A.indices, A.indptr, A.shape)

    def to_scipy(self):
        """A ``scipy.sparse.bsr_array`` sharing this matrix's arrays."""
        return _scipy_sparse().bsr_array(
            (self._data, self._indices, self._indptr), shape=self._shape, copy=False
        )

    def to_dense(self):
        """The dense (m, n) array, repeated blocks summed."""
        r, c = self.blocksize
        block_rows = _checks.row_ids(self._indptr)[:, None, None]
        block_cols = self._indices.astype(np.int64)[:, None, None]
        rows = block_rows * r + np.arange(r)[None, :, None]
        cols = block_cols * c + np.arange(c)[None, None, :]
        rows, cols = np.broadcast_arrays(rows, cols)
        return _scatter_dense(
            rows.reshape(-1),
            cols.reshape(-1),
            self._data.reshape(-1),
            self._shape,
            self._data.dtype,
        )

    @property
    def data(self):
        """The stored blocks, shape (n_blocks, r, c)."""
        return self._data

    @property
    def blocksize(self):
        """(r, c)."""
        return self._data.shape[1:]

    @property
    def dtype(self):
        """float32 or float64: the blocks' dtype, which the products compute in."""
        return self._data.dtype

    @property
    def fill_in(self):
        """Stored entries per non-zero entry (>= 1): what blocking adds, e.g.
        1.6 means 60% more values stored and multiplied than the CSR form.
        1.0 when nothing is stored, inf when only zeros are.  O(nnz)."""
        nonzero = np.count_nonzero(self._data)
        if nonzero == 0:
            return 1.0 if self._data.size == 0 else math.inf
        return self._data.size / nonzero

    @property
    def _arrays(self):
        return self._data, self._indices, self._indptr

    def _repr_extra(self):
        return f", blocksize={self.blocksize}, index_dtype={self._indices.dtype}"


class QuantizedCSR(_SparseOperator):
    """CSR with int8 values and one float32 scale per row: a_ij ~ scales[i] *
    values[k] for the k-th stored entry, in column indices[k] of row i.

    Symmetric quantisation on ``bits`` bits (2..8): q = round(a / scale)
    with scale = max|row| / qmax and qmax = 2**(bits-1) - 1, so that
    |q| <= qmax and, for every stored entry of a row with a normal float32
    scale, |a_ij - scale_i * q_ij| <= scale_i / 2 = max|row i| / (2 * qmax)
    (8 bits: 0.4% of the row's largest magnitude).  A row of zeros has
    scale 0.  Values take one int8 byte each whatever ``bits`` is: fewer
    bits are not packed, they only lower the precision.

    Column indices are stored in the narrowest type for n: uint8 when
    n <= 256, uint16 when n <= 65536, else int32 (n <= 2**31); indptr is
    int32 (int64 from 2**31 stored entries).  So a non-zero costs 2 or 3
    bytes when n <= 65536 (5 beyond), plus 4 bytes per row for indptr and
    scales.  Products compute in float32.

    ``check=True`` validates the structure as ``CSRMatrix`` does, and that
    values lie in [-qmax, qmax] and scales are finite and >= 0;
    ``check=False`` is UNSAFE as there.
    """

    __slots__ = ("_values", "_indices", "_indptr", "_scales", "_bits")
    _kernels = ("qcsr_matvec", "qcsr_matvec_t", "qcsr_matmat")
    _plan_format = "int8"

    def __init__(self, values, indices, indptr, scales, shape, bits=8, check=True):
        m, n = self._shape = _checks.shape2(shape)
        self._bits = _checks.integer(bits, "bits", minimum=2, maximum=8)
        values = _checks.index_array(values, "values")
        indices = _checks.index_array(indices, "indices")
        indptr = _checks.index_array(indptr, "indptr")
        scales = _checks.as_float_array(scales, "scales", np.float32)
        if scales.shape != (m,):
            raise ValueError(
                f"scales must have shape ({m},) (one per row), got shape {scales.shape}"
            )
        if n > _INT32_MAX + 1:
            raise ValueError(f"QuantizedCSR supports n <= 2**31 columns, got n = {n}")
        _checks.compressed_structure(indices, indptr, m, n, values.size, full=check)
        if check:
            qmax = 2 ** (self._bits - 1) - 1
            if values.size and (values.min() < -qmax or values.max() > qmax):
                raise ValueError(
                    f"values must lie in [-{qmax}, {qmax}] for bits={self._bits}, "
                    f"got [{values.min()}, {values.max()}]"
                )
            _checks.require_finite(scales, "scales")
            if (scales < 0).any():
                raise ValueError("scales must be >= 0")
        index_type = np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.int32
        pointer_type = np.int32 if values.size <= _INT32_MAX else np.int64
        self._values = np.ascontiguousarray(values, dtype=np.int8)
        self._indices = np.ascontiguousarray(indices, dtype=index_type)
        self._indptr = np.ascontiguousarray(indptr, dtype=pointer_type)
        self._scales = scales

    @classmethod
    def from_csr(cls, A, bits=8):
        """Quantise the ``CSRMatrix`` (or scipy sparse matrix) A, whose values
        must be finite.  Repeated entries are summed first, so that the error
        bound holds for the entries of A.  O(nnz) (O(nnz log nnz) if A has
        unsorted or repeated columns)."""
        if _is_scipy_sparse(A):
            A = CSRMatrix.from_scipy(A)
        if not isinstance(A, CSRMatrix):
            raise TypeError(
                f"A must be a CSRMatrix or a scipy sparse matrix, got "
                f"{type(A).__name__}"
            )
        bits = _checks.integer(bits, "bits", minimum=2, maximum=8)
        _checks.require_finite(A.data, "A.data")
        data, indices, indptr = _summed(A)
        qmax = 2 ** (bits - 1) - 1
        magnitude = np.abs(data.astype(np.float64))
        largest = np.zeros(A.shape[0])
        nonempty = np.flatnonzero(np.diff(indptr))
        if nonempty.size:
            starts = indptr[nonempty].astype(np.intp, copy=False)
            largest[nonempty] = np.maximum.reduceat(magnitude, starts)
        with np.errstate(over="ignore"):
            scales = (largest / qmax).astype(np.float32)
        if not np.isfinite(scales).all():
            raise ValueError(
                "A's values are too large for float32 scales (|a| must stay "
                f"below {qmax} * float32 max)"
            )
        row_scales = scales.astype(np.float64)[_checks.row_ids(indptr)]
        q = np.zeros(data.size)
        np.divide(data, row_scales, out=q, where=row_scales > 0)
        np.clip(np.rint(q, out=q), -qmax, qmax, out=q)
        return cls(
            q.astype(np.int8), indices, indptr, scales, A.shape, bits=bits, check=False
        )

    def dequantize(self):
        """The float32 ``CSRMatrix`` scale_i * q_ij (same structure)."""
        data = self._values.astype(np.float32)
        data *= self._scales[_checks.row_ids(self._indptr)]
        return CSRMatrix(data, self._indices, self._indptr, self._shape, check=False)

    def to_dense(self):
        """The dense float32 (m, n) array of the dequantised values."""
        return self.dequantize().to_dense()

    @property
    def values(self):
        """The int8 quantised values q, one per stored entry."""
        return self._values

    @property
    def scales(self):
        """One float32 scale per row: entry (i, j) is scales[i] * q."""
        return self._scales

    @property
    def bits(self):
        """The quantisation's bits (2..8): values lie in [-qmax, qmax],
        qmax = 2**(bits - 1) - 1."""
        return self._bits

    @property
    def dtype(self):
        """float32: the dtype the products compute in."""
        return np.dtype(np.float32)

    @property
    def _arrays(self):
        return self._values, self._indices, self._indptr, self._scales

    def _repr_extra(self):
        return f", bits={self._bits}, index_dtype={self._indices.dtype}"


def _summed(A):
    """A's (data, indices, indptr) with repeated entries summed, columns
    sorted within rows; A's own arrays when they already are."""
    rows = _checks.row_ids(A.indptr)
    keys = rows.astype(np.int64) * A.shape[1] + A.indices
    if keys.size < 2 or (keys[1:] > keys[:-1]).all():
        return A.data, A.indices, A.indptr
    unique, position = np.unique(keys, return_inverse=True)
    data = np.bincount(position, weights=A.data, minlength=unique.size)
    unique_rows = (unique // A.shape[1]).astype(np.intp, copy=False)
    counts = np.bincount(unique_rows, minlength=A.shape[0])
    return (
        data.astype(A.dtype),
        unique % A.shape[1],
        _compressed_indptr(counts, np.int64),
    )


# Products --------------------------------------------------------------------


def _operator(A):
    if isinstance(A, _SparseOperator):
        return A
    if _is_scipy_sparse(A):
        if A.format == "bsr":
            return BSRMatrix.from_scipy(A)
        return CSRMatrix.from_scipy(A)
    raise TypeError(
        "A must be a CSRMatrix, BSRMatrix, QuantizedCSR, PackedMatrix or a "
        f"scipy.sparse matrix, got {type(A).__name__} (a dense array can be "
        "converted with CSRMatrix.from_dense)"
    )


# The checks below test the common case first, in as few attribute reads as
# possible: the product of a 300 x 784 matrix at 1% density takes about 2 us,
# and the general checks cost as much again.


def _vector(x, size, dtype, name):
    """x as a C-contiguous vector of ``size`` entries of ``dtype``."""
    if not (
        type(x) is np.ndarray
        and x.ndim == 1
        and x.shape[0] == size
        and (x.dtype is dtype or x.dtype == dtype)
        and x.flags.c_contiguous
    ):
        x = _checks.as_float_array(x, name, dtype)
        if x.shape != (size,):
            raise ValueError(f"{name} must have shape ({size},), got shape {x.shape}")
    return x


def _output_vector(out, size, dtype, x, read):
    """The vector a kernel writes for ``out`` (``_checks.output_array``):
    ``out`` itself when it is a writable C-contiguous vector of ``size``
    entries of ``dtype`` that does not overlap x, else as there."""
    if out is None:
        return np.empty(size, dtype)
    if (
        type(out) is np.ndarray
        and out.ndim == 1
        and out.shape[0] == size
        and (out.dtype is dtype or out.dtype == dtype)
    ):
        flags = out.flags
        # two distinct arrays that each own their memory cannot overlap
        if (
            flags.writeable
            and flags.c_contiguous
            and (
                (flags.owndata and x.flags.owndata and out is not x)
                or not np.may_share_memory(out, x)
            )
        ):
            return out
    return _checks.output_array(out, (size,), dtype, (x,), read=read)


def _coefficient(value, name):
    if type(value) is float and math.isfinite(value):
        return value
    return _checks.scalar(value, name, allow_inf=False)


def _coefficients(alpha, beta, out):
    """alpha and beta as Python floats (every backend computes them in
    double precision)."""
    if type(alpha) is float and type(beta) is float and alpha == 1.0 and beta == 0.0:
        return alpha, beta
    alpha, beta = _coefficient(alpha, "alpha"), _coefficient(beta, "beta")
    if beta != 0 and out is None:
        raise ValueError("beta != 0 adds beta * out to the product: out is required")
    return alpha, beta


def _matvec_plan(A, threads, backend):
    """The one-sample plan (the backend's ``MatvecPlan``) of A when A is
    our CSRMatrix or QuantizedCSR and a product with these ``threads`` and
    ``backend`` arguments runs on one thread; else None (the general path
    then validates the arguments).  The answer for a (backend, threads)
    pair is remembered on A: after the first call, one dict look-up."""
    if threads is not None and type(threads) is not int:
        return None  # True and 1.0 would find the memo of 1: not a plan case
    key = (get_backend() if backend is None else backend, threads)
    try:
        return A._plan_memo[key]
    except (AttributeError, KeyError, TypeError):
        return _new_matvec_plan(A, threads, backend, key)


def _new_matvec_plan(A, threads, backend, key):
    """_matvec_plan the first time: the plan built (one per backend, kept
    on A) or found, and the answer remembered for ``key``."""
    fmt = getattr(type(A), "_plan_format", None)
    if fmt is None:
        return None
    if threads is None:
        one_thread = A._arrays[0].size < PARALLEL_MIN_WORK
    elif type(threads) is int and threads == 1:
        one_thread = True
    else:
        return None  # not remembered: the general path checks any other value
    plan = None
    if one_thread:
        name = resolve(backend)
        plan = A._plans.get(name)
        if plan is None:
            plan = kernels_for("sparse", name).MatvecPlan(fmt, A._shape, A._arrays)
            A._plans[name] = plan
    try:
        memo = A._plan_memo
    except AttributeError:
        memo = A._plan_memo = {}
    memo[key] = plan
    return plan


def spmv(A, x, out=None, alpha=1.0, beta=0.0, threads=None, backend=None):
    """y = alpha * A @ x + beta * y, with y = ``out``.

    A is (m, n), x has n entries, the result m.  O(nnz + m); memory bound:
    moves nnz * (value + index) bytes of A, its row pointers, x and y
    (ALGORITHMS.md section 6).

    A one-thread product of a CSRMatrix or QuantizedCSR with a
    C-contiguous x of its dtype (and out, if given, the same) goes through
    the matrix's one-sample plan for the backend (its ``MatvecPlan``): the
    same loops and bits, about 2 us less per call than the kernel call
    with its checks on the compiled backends.
    """
    plan = _matvec_plan(A, threads, backend)
    if plan is not None:
        alpha, beta = _coefficients(alpha, beta, out)
        y = plan.matvec(x, out, alpha, beta)
        if y is not None:
            return y
    A = _operator(A)
    m, n = A._shape
    dtype = A.dtype
    x = _vector(x, n, dtype, "x")
    alpha, beta = _coefficients(alpha, beta, out)
    y = _output_vector(out, m, dtype, x, beta != 0)
    kernel = getattr(kernels_for(A._family, backend), A._kernels[0])
    arrays = A._arrays
    kernel(*arrays, x, alpha, beta, y, _n_threads(threads, arrays[0].size))
    return _checks.deliver(out, y)


def spmv_t(A, x, out=None, alpha=1.0, beta=0.0, threads=None, backend=None):
    """y = alpha * A.T @ x + beta * y, with y = ``out``, without forming A.T.

    x has m entries, the result n.  A scatter over y, so single-threaded in
    every backend: ``threads`` is validated and otherwise unused.
    O(nnz + m + n).
    """
    A = _operator(A)
    m, n = A._shape
    dtype = A.dtype
    x = _vector(x, m, dtype, "x")
    alpha, beta = _coefficients(alpha, beta, out)
    _checks.threads(threads)
    y = _output_vector(out, n, dtype, x, beta != 0)
    if A._kernels[1] is None:
        raise TypeError(f"spmv_t does not take a {type(A).__name__}")
    kernel = getattr(kernels_for(A._family, backend), A._kernels[1])
    kernel(*A._arrays, x, alpha, beta, y)
    return _checks.deliver(out, y)


def spmm(
    A, X, out=None, alpha=1.0, beta=0.0, threads=None, layout="batch", backend=None
):
    """Y = alpha * A @ (a batch of vectors) + beta * Y, with Y = ``out``.

    ``layout="features"``: X has shape (n, k) and the result (m, k), the
    math convention (scipy's ``A @ X``); no transpose.
    ``layout="batch"``: X has shape (k, n), one sample per row, and the
    result (k, m), row b being A @ X[b]: X @ A.T.

    The kernel is feature-major, (n, k) -> (m, k), so that each loaded
    non-zero a_ij updates the contiguous row Y[i, :] from X[j, :]: a batch
    reuses each non-zero k times (ALGORITHMS.md section 6).  The batch
    layout therefore costs one transposing copy of X (none when X is
    Fortran-ordered, as X.T then is C-contiguous) and returns the kernel's
    output transposed: a Fortran-ordered (k, m) array, no copy (and it
    feeds the next ``spmm`` with no copy either).  A given C-ordered ``out``
    costs one transposing copy out (none for a Fortran-ordered one).
    O(nnz * k).
    """
    A = _operator(A)
    m, n = A.shape
    X = _checks.real_array(X, "X")
    if layout == "features":
        expected, features = f"({n}, batch)", X
    elif layout == "batch":
        expected, features = f"(batch, {n})", X.T
    else:
        raise ValueError(f'layout must be "batch" or "features", got {layout!r}')
    if X.ndim != 2 or features.shape[0] != n:
        raise ValueError(
            f'X must have shape {expected} for layout="{layout}", got shape {X.shape}'
        )
    k = features.shape[1]
    features = np.ascontiguousarray(features, dtype=A.dtype)
    alpha, beta = _coefficients(alpha, beta, out)
    out_features = out
    if layout == "batch" and out is not None:
        _checks.check_output(out, (k, m), A.dtype)
        out_features = out.T
    Y = _checks.output_array(out_features, (m, k), A.dtype, (features,), read=beta != 0)
    kernel = getattr(kernels_for(A._family, backend), A._kernels[2])
    kernel(*A._arrays, features, alpha, beta, Y, _n_threads(threads, A.nnz * k))
    result = _checks.deliver(out_features, Y)
    if layout == "batch":
        return out if out is not None else result.T
    return result
