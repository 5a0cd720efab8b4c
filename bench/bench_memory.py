"""Memory beside speed: what each sparse format stores per non-zero, against
the dense matrix it replaces, and the peak memory of a process that holds
one and multiplies with it.  The matrices are those of bench_sparse (the
product cases of ``kernels.benchmarks.sparse``, random, every entry stored
with probability ``density``; for "bsr" every 4x4 block, so no fill-in).

``implementation``: "csr" (``CSRMatrix``), "bsr" (``BSRMatrix``, 4x4
blocks), "int8" (``QuantizedCSR``: int8 values, one float32 scale per row,
uint16 column indices at these widths; float32 only) and "dense" (the
ndarray of m * n values).  scipy.sparse's csr_array and bsr_array of the
same arrays store exactly our CSR and BSR bytes (``to_scipy`` shares the
arrays), so they have no rows of their own.

* ``track_bytes_per_nonzero``: the bytes of every array the format keeps
  (values, indices, row pointers; scales for int8; the m * n values for
  dense) over the matrix's non-zeros: in float32, 8 + 4 (m + 1) / nnz
  for CSR, 4.25 + (m + 4) / nnz for BSR of 4x4 blocks (64 bytes of values
  and a 4-byte index per 16 values), 3 + (8 m + 4) / nnz for int8, and
  4 m n / nnz (about 4 / density) for dense.
* ``track_percent_of_dense``: those bytes as a percentage of the dense
  matrix's.
* ``peakmem_spmv``: the peak resident memory of the benchmark process
  (asv's peakmem: the interpreter, NumPy, Numba and the suite included,
  about 90 MB here) after building the matrix and one product y = A @ x on
  the default backend; for dense, the dense array filled in place from the
  same CSR matrix, then ``np.matmul``.  On 4096x4096 only, where the dense
  matrix (64 MB float32) stands out of that floor.

All three are lower-is-better, as asv compares them.
"""

import numpy as np
from asv_runner.benchmarks.mark import SkipNotImplemented

from .bench_sparse import product_case
from .common import AVAILABLE, parse_shape

FORMATS = ("csr", "bsr", "int8")


def _implementation(name):
    """A format of ours on the default backend, or the "dense" peer."""
    return name if name == "dense" else f"{AVAILABLE[0]}-{name}"


class SparseFormatMemory:
    """Bytes per non-zero and peak memory of each format and of dense."""

    params = ((*FORMATS, "dense"), (0.1, 0.05, 0.01), ("300x784", "4096x4096"),
              ("float32", "float64"))  # fmt: skip
    param_names = ("implementation", "density", "shape", "dtype")

    def setup(self, implementation, density, shape, dtype):
        # the CSR case holds the matrix whose non-zeros every row counts
        csr_case, _ = product_case(_implementation("csr"), density, shape, dtype, 1)
        self.nnz = csr_case.setup().A.nnz
        m, n = parse_shape(shape)
        self.dense_bytes = m * n * np.dtype(dtype).itemsize
        self.case, self.backend = product_case(
            _implementation(implementation), density, shape, dtype, 1
        )
        if implementation == "dense":
            self.bytes = self.dense_bytes
        else:
            matrix = self.case.setup().A
            self.bytes = matrix.nbytes
            if implementation == "bsr":  # block-random: every stored value counts
                self.nnz = matrix.nnz

    def track_bytes_per_nonzero(self, *params):
        return self.bytes / self.nnz

    track_bytes_per_nonzero.unit = "bytes per non-zero"

    def track_percent_of_dense(self, *params):
        return 100.0 * self.bytes / self.dense_bytes

    track_percent_of_dense.unit = "% of the dense matrix's bytes"

    def peakmem_spmv(self, implementation, density, shape, dtype):
        if shape != "4096x4096":
            raise SkipNotImplemented("peak memory on 4096x4096 only")
        inputs = self.case.setup()
        if implementation == "dense":
            # the dense matrix as its user holds it: filled in place, not
            # through CSRMatrix.to_dense's float64 intermediate (which would
            # add 2 bytes of float64 per float32 byte to the dense row)
            A = inputs.A
            W = np.zeros(A.shape, dtype=A.dtype)
            rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
            W[rows, A.indices] = A.data
            np.matmul(W, inputs.x, out=inputs.y)
        else:
            self.case.bind(self.backend, inputs)()
