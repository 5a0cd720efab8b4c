"""The one-sample matrix-vector path of ``kernels.spmv`` (one thread, our
CSRMatrix or QuantizedCSR): each backend's ``MatvecPlan`` must give the
bits of that backend's csr_matvec / qcsr_matvec kernel call, serve only
the calls it can take, and leave every other call to the general path,
whose checks and errors are unchanged."""

import pickle

import numpy as np
import pytest
from test_sparse import make

import kernels
from kernels._backend import kernels_for
from kernels.sparse import CSRMatrix, QuantizedCSR, spmv

SHAPES = [(0, 0), (0, 5), (4, 0), (1, 1), (7, 13), (40, 300)]
CASES = [("csr", np.float32, np.int32), ("csr", np.float32, np.int64)]
CASES += [("csr", np.float64, np.int32), ("csr", np.float64, np.int64)]
CASES += [("qcsr", np.float32, np.int32), ("qcsr", np.float32, np.int64)]


def kernel_product(A, x, alpha=1.0, beta=0.0, y=None, backend=None):
    """A @ x by the raw kernel of the backend (no plan)."""
    kernels_ = kernels_for("sparse", backend)
    y = np.zeros(A.shape[0], A.dtype) if y is None else y.copy()
    getattr(kernels_, A._kernels[0])(*A._arrays, x, alpha, beta, y, 1)
    return y


def plan_of(A, backend=None):
    return getattr(A, "_plans_cache", {}).get(backend or kernels.get_backend())


@pytest.mark.parametrize("fmt, dtype, index_dtype", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_plan_gives_the_kernel_bits(fmt, dtype, index_dtype, shape, backend):
    rng = np.random.default_rng(sum(shape))
    A, dense = make(fmt, rng, shape, dtype, index_dtype)
    x = rng.standard_normal(shape[1]).astype(A.dtype)
    y0 = rng.standard_normal(shape[0]).astype(A.dtype)
    expected = kernel_product(A, x, backend=backend)
    got = spmv(A, x, backend=backend, threads=1)
    assert plan_of(A, backend) is not None
    assert got.dtype == A.dtype and got.shape == (shape[0],)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, dense @ x, rtol=1e-5, atol=1e-5)
    out = y0.copy()
    with kernels.use_backend(backend):
        result = spmv(A, x, out=out, alpha=0.5, beta=-2.0)
        assert result is out
        np.testing.assert_array_equal(
            out, kernel_product(A, x, 0.5, -2.0, y0, backend=backend)
        )
        np.testing.assert_array_equal(A @ x, expected)


def test_plan_is_built_once_and_kept(backend):
    A, _ = make("csr", np.random.default_rng(0), (6, 9), np.float32)
    x = np.ones(9, np.float32)
    with kernels.use_backend(backend):
        spmv(A, x)
    plan = plan_of(A, backend)
    spmv(A, x, threads=1, backend=backend)
    spmv(A, x, backend=f" {backend.upper()}")
    assert A._plans == {backend: plan}


def test_calls_the_plan_cannot_take_go_the_general_way(backend):
    kernels.set_backend(backend)
    try:
        _calls_the_plan_cannot_take()
    finally:
        kernels.set_backend(None)


def _calls_the_plan_cannot_take():
    rng = np.random.default_rng(1)
    A, dense = make("csr", rng, (8, 10), np.float32)
    x = rng.standard_normal(10).astype(np.float32)
    expected = kernel_product(A, x)
    # converted by the general path: another dtype, a stride, a list
    for other in (x.astype(np.float64), np.repeat(x, 2)[::2], list(x)):
        np.testing.assert_allclose(spmv(A, other), expected, rtol=1e-6)
    # outputs the plan does not write: a stride or an overlap with x (written
    # through a copy by the general path), the wrong dtype or shape (rejected)
    strided = np.zeros(16, np.float32)[::2]
    assert spmv(A, x, out=strided) is strided
    np.testing.assert_array_equal(strided, expected)
    with pytest.raises((TypeError, ValueError)):
        spmv(A, x, out=np.empty(8, np.float64))
    with pytest.raises(ValueError):
        spmv(A, x, out=np.empty(9, np.float32))
    buffer = np.zeros(18, np.float32)
    buffer[:10] = x
    spmv(A, buffer[:10], out=buffer[2:10])  # through a copy: x read whole
    np.testing.assert_array_equal(buffer[2:10], expected)
    # wrong x: shape, complex, non-finite alpha, beta without out
    with pytest.raises(ValueError):
        spmv(A, np.ones(11, np.float32))
    with pytest.raises((TypeError, ValueError)):
        spmv(A, x.astype(np.complex64))
    with pytest.raises(ValueError):
        spmv(A, x, alpha=np.inf)
    with pytest.raises(ValueError):
        spmv(A, x, beta=1.0)


def test_only_one_thread_calls_take_the_plan(backend):
    rng = np.random.default_rng(2)
    A, _ = make("csr", rng, (5, 5), np.float64)
    x = rng.standard_normal(5)
    spmv(A, x, threads=2, backend=backend)
    assert not A._plans
    spmv(A, x, backend=backend)
    assert list(A._plans) == [backend]  # each backend its own plan
    B, _ = make("bsr2x2", rng, (4, 4), np.float64)
    spmv(B, np.ones(4), threads=1, backend=backend)
    assert not B._plans  # BSR products keep the kernel call


def test_scipy_matrices_take_the_general_path():
    sparse = pytest.importorskip("scipy.sparse")
    # sparse.random, not random_array (scipy >= 1.12): Debian 12's scipy
    # 1.10 is the one the armv7l run has
    S = sparse.csr_array(sparse.random(6, 7, density=0.4, random_state=3, format="csr"))
    x = np.arange(7.0)
    np.testing.assert_allclose(spmv(S, x, threads=1), S @ x)


def test_a_matrix_with_a_plan_pickles_and_copies(backend):
    import copy

    rng = np.random.default_rng(4)
    A, _ = make("qcsr", rng, (6, 9), np.float32)
    x = rng.standard_normal(9).astype(np.float32)
    expected = spmv(A, x, backend=backend)
    assert plan_of(A, backend) is not None
    for B in (pickle.loads(pickle.dumps(A)), copy.deepcopy(A), copy.copy(A)):
        assert type(B) is QuantizedCSR
        assert not B._plans
        np.testing.assert_array_equal(spmv(B, x, backend=backend), expected)
        assert B.bits == A.bits and B.shape == A.shape


def test_the_plan_sees_values_changed_in_place(backend):
    A = CSRMatrix.from_dense(np.array([[1.0, 0.0], [0.0, 2.0]]))
    x = np.array([3.0, 4.0])
    np.testing.assert_array_equal(spmv(A, x, backend=backend), [3.0, 8.0])
    A.data[:] *= 2
    np.testing.assert_array_equal(spmv(A, x, backend=backend), [6.0, 16.0])
    with pytest.raises(ValueError):
        A.data.resize(1)  # held by the plan: cannot be resized


@pytest.mark.skipif(
    "cython" not in kernels.available_backends(), reason="no cython backend"
)
def test_cython_plan_constructor_checks_its_arguments():
    plan_class = kernels_for("sparse", "cython").MatvecPlan
    A, _ = make("csr", np.random.default_rng(5), (3, 4), np.float32)
    with pytest.raises(ValueError, match="format"):
        plan_class("bsr", A.shape, A._arrays)
    with pytest.raises(TypeError):
        plan_class("csr", A.shape, (A.data.astype(np.int16), *A._arrays[1:]))
    with pytest.raises(ValueError):
        plan_class("csr", (5, 4), A._arrays)  # indptr does not fit


def test_plan_runs_only_the_simple_case(backend):
    plan_class = kernels_for("sparse", backend).MatvecPlan
    A, _ = make("csr", np.random.default_rng(5), (3, 4), np.float32)
    plan = plan_class("csr", A.shape, A._arrays)
    assert plan.shape == A.shape and plan.dtype == np.float32
    assert plan.matvec(np.ones(4, np.float64), None, 1.0, 0.0) is None
    assert plan.matvec(np.ones(4, np.float32), None, 1.0, 1.0) is None
    assert plan.matvec("abcd", None, 1.0, 0.0) is None
    assert plan.matvec(np.ones(4, np.float32), np.ones(3, np.int32), 1.0, 0.0) is None
    frozen = np.ones(3, np.float32)
    frozen.flags.writeable = False
    assert plan.matvec(np.ones(4, np.float32), frozen, 1.0, 0.0) is None
    assert plan.matvec(np.ones(8, np.float32)[::2], None, 1.0, 0.0) is None
    shared = np.ones(7, np.float32)
    assert plan.matvec(shared[:4], shared[4:], 1.0, 0.0) is not None
    assert plan.matvec(shared[:4], shared[3:6], 1.0, 0.0) is None  # overlap
