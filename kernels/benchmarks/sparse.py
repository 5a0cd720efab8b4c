"""Benchmark cases of the sparse products (``kernels.sparse``): ``spmv``,
y = A @ x, and ``spmm``, Y = A @ X for a batch of vectors in the
feature-major layout (X of shape (n, batch), ``layout="features"``: the
layout of our kernel, of scipy's ``A @ X`` and of ``np.matmul(W, X)``, so
that no implementation pays a transposing copy).

``product(fmt, shape, density, ...)`` is one product of ours in format
``fmt``: "csr" (``CSRMatrix``), "bsr" (``BSRMatrix`` of 4x4 blocks) or
"int8" (``QuantizedCSR`` of the float32 CSR matrix: int8 values, one
float32 scale per row).  Its peers:

* ``"scipy"``: scipy.sparse's ``A @ x`` on a ``csr_array`` (a
  ``bsr_array`` for a "bsr" case) of the same arrays, at the same dtype;
* ``"dense"``: ``np.matmul`` of the dense matrix into a preallocated
  output (BLAS).

The matrices (``random_sparse``): every entry is stored with probability
``density``, independently, standard normal values; for "bsr", every 4x4
block instead: the same number of stored values in expectation, and no
fill-in (a BSR of an unstructured matrix at density 1% would store 15
times its non-zeros).  Bytes moved: the matrix's arrays (values, indices,
row pointers; scales for int8; the m * n values for dense), x and y.
"""

import functools
import math
import os
import pathlib
import shutil
import tempfile
import types

import numpy as np

import kernels
from kernels.benchmarks.case import Case, Peer

__all__ = ["BLOCKSIZE", "CHECK_MAX_ENTRIES", "FORMATS", "product", "random_sparse"]

FORMATS = ("csr", "bsr", "int8")
BLOCKSIZE = (4, 4)
# A first call's result is checked against a float64 dense product when the
# matrix has at most this many entries (m * n): cheap, and it catches a
# wrong layout or a wrong matrix before its figures are reported.
CHECK_MAX_ENTRIES = 10**6

# With a cache directory, matrices with at least this many non-zeros are
# stored there after their first construction (asv runs every benchmark in
# its own process: the 20000x20000 matrices take seconds to draw and a
# fraction of one to load).
CACHE_MIN_NNZ = 10**6
# Part of the cache key: change it when the generator below changes.
_GENERATOR = "bernoulli-geometric-v1"


def _bernoulli_positions(rng, count, p):
    """The sorted positions in range(count) of independent Bernoulli(p)
    draws, in O(number drawn): the gaps between successive successes are
    geometric."""
    if p >= 1:
        return np.arange(count, dtype=np.int64)
    expected = p * count
    chunk = int(expected + 8 * math.sqrt(expected) + 16)
    positions = np.cumsum(rng.geometric(p, size=chunk), dtype=np.int64) - 1
    while positions[-1] < count:  # (almost) never: 8 standard deviations
        more = positions[-1] + np.cumsum(rng.geometric(p, size=chunk), dtype=np.int64)
        positions = np.concatenate([positions, more])
    return positions[: np.searchsorted(positions, count)]


def _compressed(major, n_major, minor):
    """(indices, indptr) as int32 from sorted major / minor coordinates."""
    indptr = np.zeros(n_major + 1, dtype=np.int32)
    # bincount takes np.intp, which is int32 on 32-bit ARM
    counts = np.bincount(major.astype(np.intp), minlength=n_major)
    np.cumsum(counts, out=indptr[1:])
    return minor.astype(np.int32), indptr


def _draw(shape, density, blocksize, seed):
    (m, n), (r, c) = shape, blocksize or (1, 1)
    rng = np.random.default_rng(seed)
    positions = _bernoulli_positions(rng, (m // r) * (n // c), density)
    rows, cols = np.divmod(positions, n // c)
    indices, indptr = _compressed(rows, m // r, cols)
    size = indices.size if blocksize is None else (indices.size, r, c)
    return {"data": rng.standard_normal(size), "indices": indices, "indptr": indptr}


def _disk_cached(path, build):
    """``build()`` (a dict of arrays), stored under ``path``; a later
    process loads it instead of drawing it again.  Written to a temporary
    directory renamed into place, so a reader never sees a partial entry;
    any error of the cache falls back to building."""
    try:
        if path.is_dir():
            return {f.stem: np.load(f) for f in path.glob("*.npy")}
    except (OSError, ValueError):
        pass
    arrays = build()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        os.replace(tmp, path)
    except OSError:  # no space, read-only, or another process won the race
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return arrays


@functools.lru_cache(maxsize=4)
def random_sparse(shape, density, blocksize=None, seed=0, cache_dir=None):
    """A random m x n sparse matrix: every entry (``blocksize`` None: CSR
    arrays) or every (r, c) block (BSR arrays of dense blocks) stored with
    probability ``density``, independently, standard normal float64
    values; columns sorted within a row, indices and indptr int32.  A dict
    of "data", "indices", "indptr", the same for the same arguments
    (memoised in the process; stored in ``cache_dir`` too, when given, for
    matrices of at least ``CACHE_MIN_NNZ`` non-zeros).  Shared: never
    modify them (cast "data" to the dtype you need)."""
    m, n = shape
    blocksize = None if blocksize is None else tuple(blocksize)

    def build():
        return _draw((m, n), density, blocksize, seed)

    if cache_dir is None or density * m * n < CACHE_MIN_NNZ:
        return build()
    name = "csr" if blocksize is None else "bsr{}x{}".format(*blocksize)
    key = f"{_GENERATOR}-{name}-{m}x{n}-{density!r}-seed{seed}"
    return _disk_cached(pathlib.Path(cache_dir) / key, build)


def _percent(density):
    return f"{100 * density:g}%"


def _check_product(reference, fmt):
    """The check of a product: within rounding of |A| |x| of the float64
    dense product with ``reference`` (the float matrix, dense, float64),
    plus, for int8, the quantisation error bound (half a step of the row's
    scale, max|row| / 254, per stored entry, times |x_j|)."""

    def check(inputs, result):
        x = inputs.x.astype(np.float64)
        error = np.abs(np.asarray(result, dtype=np.float64) - reference @ x)
        rounding = 1e-4 if inputs.x.dtype == np.float32 else 1e-10
        bound = rounding * (np.abs(reference) @ np.abs(x)) + 1e-30
        if fmt == "int8":
            step = np.abs(reference).max(axis=1) / 254
            step = step[:, None] if x.ndim == 2 else step
            bound += step * ((reference != 0) @ np.abs(x))
        if not np.all(error <= bound):
            worst = np.max(error / bound)
            raise AssertionError(f"wrong product: error {worst:.3g} x the bound")

    return check


def product(fmt, shape, density, dtype="float32", batch=1, threads=1, cache_dir=None):
    """Our product in format ``fmt`` (one of ``FORMATS``) of the random
    ``shape`` (m, n) matrix of ``density`` (``random_sparse``, seed 0, at
    ``dtype``) with a vector (``batch`` 1: ``spmv``) or a feature-major
    batch (``spmm``), on ``threads`` threads; ``cache_dir`` as for
    ``random_sparse``.  "int8" is float32 only."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    dtype = np.dtype(dtype)
    if fmt == "int8" and dtype != np.float32:
        raise ValueError("QuantizedCSR computes in float32 only")
    m, n = shape = tuple(shape)
    blocked = fmt == "bsr"
    arrays = random_sparse(shape, density, BLOCKSIZE if blocked else None, 0, cache_dir)
    structure = (arrays["data"].astype(dtype), arrays["indices"], arrays["indptr"])
    matrix = (kernels.BSRMatrix if blocked else kernels.CSRMatrix)(*structure, shape)
    ours_matrix = kernels.QuantizedCSR.from_csr(matrix) if fmt == "int8" else matrix
    vectors = (n + m) * batch * dtype.itemsize  # x read, y written

    def setup():
        x_shape = n if batch == 1 else (n, batch)
        return types.SimpleNamespace(
            A=ours_matrix,
            x=np.random.default_rng(1).standard_normal(x_shape, dtype=dtype),
            y=np.empty(m if batch == 1 else (m, batch), dtype=dtype),
        )

    if batch == 1:

        def ours(a, backend):
            return kernels.spmv(a.A, a.x, out=a.y, threads=threads, backend=backend)

    else:

        def ours(a, backend):
            return kernels.spmm(
                a.A, a.x, out=a.y, threads=threads, layout="features", backend=backend
            )

    def prepare_scipy(a):
        S = matrix.to_scipy()
        return lambda: S @ a.x

    def prepare_dense(a):
        W = matrix.to_dense()
        return functools.partial(np.matmul, W, a.x, out=a.y)

    name = "spmv" if batch == 1 else "spmm"
    label = f"{name} {fmt} {_percent(density)}"
    if batch > 1:
        label += f", batch {batch}"
    if threads != 1:
        label += f", {threads} threads"
    check = None
    if m * n <= CHECK_MAX_ENTRIES:
        check = _check_product(matrix.to_dense().astype(np.float64), fmt)
    return Case(
        kernel=label,
        shape=shape,
        dtype=dtype.name,
        setup=setup,
        ours=ours,
        peers={
            "scipy": Peer("scipy", prepare_scipy, ("scipy",), matrix.nbytes + vectors),
            "dense": Peer(
                "dense NumPy", prepare_dense, (), m * n * dtype.itemsize + vectors
            ),
        },
        bytes_moved=ours_matrix.nbytes + vectors,
        copy_of=None,
        check=check,
    )
