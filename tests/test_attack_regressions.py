"""Issue 19: each reproducer of the hostile-input report, as a regression
test, in every backend.  The cases that crashed the process (a segmentation
fault, libgomp's abort) run in a subprocess, so that a regression fails the
test instead of killing the run.  The attack suite that found them is in
tests/test_attack_*.py."""

import io
import os
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from fractions import Fraction

import numpy as np
import pytest
from _support import rtol, run_python

import kernels
from kernels import _checks, solvers
from kernels.__main__ import main


def _subprocess(code, backend, timeout=300):
    """Run ``code`` (which sees ``backend``) in a fresh interpreter; its
    last line of stdout must be "ok"."""
    prelude = f"import numpy as np, kernels\nbackend = {backend!r}\n"
    result = run_python(prelude + textwrap.dedent(code), timeout=timeout)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert result.stdout.strip().splitlines()[-1] == "ok", result.stdout


# Crashes ---------------------------------------------------------------------

# Source text, evaluated in the subprocess.  The first two are the report's:
# the sizes' int64 sum wraps around to 12 (or 14), so "they add up to
# x.size" passed and the cython kernel ran off the end of x.  A list mixing
# sizes below and from 2**63 is one NumPy turns into float64.
WRAPPING_GROUPS = """[
    np.array([2**62, 2**62, 2**62, 2**62 + 12], np.int64),
    [2**63 - 1, 2**63 - 1, 14],
    np.array([2**63, 2**63 - 4, 16], np.uint64),
    np.array([2**63, 2**63 - 2, 14], np.uint64),
    [2**64 + 4, 8],
    [12, 2**63],
    (2**63 - 1, 2**63 - 1, 16),
]"""


def test_group_sizes_whose_sum_wraps_are_a_value_error(backend):
    """Was: a segmentation fault (cython), a silent result (numba), an
    IndexError (numpy)."""
    _subprocess(
        f"""
        import pytest
        from kernels import solvers
        for groups in {" ".join(WRAPPING_GROUPS.split())}:
            for x in (np.ones(12), np.ones(14, np.float32)):
                with pytest.raises(ValueError, match="groups .group sizes. must"):
                    kernels.prox_group_l1(x, 0.5, groups, backend=backend)
                with pytest.raises(ValueError, match="groups .group sizes. must"):
                    kernels.prox_sparse_group_l1(x, 0.1, 0.5, groups, backend=backend)
        with pytest.raises(ValueError, match="groups .group sizes. must"):
            solvers.saga(
                np.ones((4, 12)), np.arange(4.0), loss="squared",
                penalty="group_l1", beta=0.1,
                groups=[2**63 - 1, 2**63 - 1, 14], backend=backend,
            )
        print("ok")
        """,
        backend,
    )


def test_group_sizes_within_bounds_still_work(backend):
    x = np.arange(1.0, 13.0)
    for groups in ([12], [0, 12, 0], np.array([4, 4, 4], np.uint8), [1] * 12):
        result = kernels.prox_group_l1(x, 0.5, groups, backend=backend)
        assert result.shape == x.shape and np.isfinite(result).all()


def test_huge_thread_counts_are_refused_or_capped(backend):
    """Was, on cython: libgomp's "Out of memory allocating 481036338272
    bytes" abort for 2**31 - 1, an OverflowError from 2**31, and a "Thread
    creation failed" abort for 1000 under a memory limit.  Now above
    MAX_THREADS is a ValueError, and a count up to it starts at most the
    usable CPUs, so 1000 threads under a memory limit that cannot hold their
    stacks give the one-thread result."""
    _subprocess(
        """
        import resource
        import pytest
        import scipy.sparse as sp
        from kernels import _checks
        A = kernels.CSRMatrix.from_scipy(
            sp.random(2000, 2000, density=0.05, format="csr", random_state=0)
        )
        x = np.ones(2000)
        X = np.ones((3, 2000))
        serial = kernels.spmv(A, x, threads=1, backend=backend)
        batch = kernels.spmm(A, X, threads=1, backend=backend)
        kernels.spmv(A, x, threads=2, backend=backend)  # compiled, warm
        kernels.spmm(A, X, threads=2, backend=backend)
        for threads in (2**31 - 1, 2**31, 2**63, 10**6, _checks.MAX_THREADS + 1):
            for call in (
                lambda: kernels.spmv(A, x, threads=threads, backend=backend),
                lambda: kernels.spmm(A, X, threads=threads, backend=backend),
                lambda: kernels.spmv_t(A, x, threads=threads, backend=backend),
            ):
                with pytest.raises(ValueError, match="threads must be <= 1024"):
                    call()
        for threads in (True, 1.0, "2", np.float64(2)):
            with pytest.raises(TypeError, match="threads must be an int"):
                kernels.spmv(A, x, threads=threads, backend=backend)
        # 1000 thread stacks (8 MiB each) would need ~8 GiB of address space
        used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (used + 2**31, hard))
        for threads in (1000, _checks.MAX_THREADS):
            np.testing.assert_allclose(
                kernels.spmv(A, x, threads=threads, backend=backend), serial,
                rtol=1e-12,
            )
            np.testing.assert_allclose(
                kernels.spmm(A, X, threads=threads, backend=backend), batch,
                rtol=1e-12,
            )
        print("ok")
        """,
        backend,
    )


def test_thread_counts_of_a_model_are_validated(backend, rng):
    weight = rng.standard_normal((4, 6))
    model = kernels.SparseMLP.from_dense([weight], backend=backend)
    x = rng.standard_normal(6)
    model.forward(x, threads=1)  # the one-sample plan's memo for threads=1
    for bad, error in ((2**31, ValueError), (0, ValueError), (True, TypeError)):
        with pytest.raises(error, match="threads must"):
            kernels.SparseMLP.from_dense([weight], threads=bad)
        with pytest.raises(error, match="threads must"):
            model.threads = bad
        for method in (model.forward, model.predict, model.predict_proba):
            with pytest.raises(error, match="threads must"):
                method(x, threads=bad)
            with pytest.raises(error, match="threads must"):
                method(x[None], threads=bad)
    np.testing.assert_allclose(
        model.forward(x[None], threads=_checks.MAX_THREADS)[0],
        model.forward(x, threads=1),
        rtol=1e-12,
    )


def test_a_true_thread_count_does_not_take_the_plan_of_one_thread(backend, rng):
    """True == 1 and hash(True) == hash(1): the memo of the one-thread plan
    must not accept it."""
    A = kernels.CSRMatrix.from_dense(rng.standard_normal((5, 4)))
    x = rng.standard_normal(4)
    kernels.spmv(A, x, threads=1, backend=backend)
    for bad in (True, 1.0):
        with pytest.raises(TypeError, match="threads must be an int"):
            kernels.spmv(A, x, threads=bad, backend=backend)


@pytest.mark.parametrize("n", [2**63, 2**64, 2**100])
def test_a_dimension_beyond_intp_is_a_value_error(backend, n):
    """Found by the attack suite: a (0, 2**63) CSRMatrix was accepted and
    its product raised OverflowError (building the one-sample plan).  A
    dimension is at most the largest np.intp, as for any array."""
    empty = (np.zeros(0), np.zeros(0, np.int32), np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="shape must be <="):
        kernels.CSRMatrix(*empty, (0, n))
    with pytest.raises(ValueError, match="shape must be <="):
        kernels.BSRMatrix(np.zeros((0, 1, 1)), *empty[1:], (0, n))
    with pytest.raises(ValueError, match="shape must be <="):
        kernels.QuantizedCSR(np.zeros(0, np.int8), *empty[1:], np.zeros(0), (0, n))
    largest = kernels.CSRMatrix(*empty, (0, np.iinfo(np.intp).max))
    with pytest.raises(ValueError, match="x must have shape"):
        kernels.spmv(largest, np.zeros(1), backend=backend)


# Silent wrong answers ------------------------------------------------------


def _with_empty_rows():
    rng = np.random.default_rng(19)
    dense = rng.standard_normal((8, 5)) * (rng.random((8, 5)) < 0.6)
    dense[3] = 0.0  # an empty row inside
    dense[-1] = 0.0  # and the last one: add.reduceat failed on it
    y = rng.standard_normal(8)
    return dense, y


@pytest.mark.parametrize("name", solvers.SOLVERS)
@pytest.mark.parametrize("loss", ["squared", "logistic", "multinomial"])
def test_solvers_on_csr_data_whose_last_row_is_empty(backend, name, loss):
    """Was: IndexError ... out-of-bounds in add.reduceat, in every solver.
    The CSR fit is the dense fit of the same data."""
    dense, y = _with_empty_rows()
    if loss != "squared":
        y = (np.arange(8) % (2 if loss == "logistic" else 3)).astype(float)
    sparse = kernels.CSRMatrix.from_dense(dense)
    assert sparse.indptr[-2] == sparse.indptr[-1]
    options = {"loss": loss, "max_epochs": 3, "seed": 0, "backend": backend}
    if name not in ("scsg", "vcsg"):
        options["sample_order"] = np.arange(8)[::-1].copy()
    solve = getattr(solvers, name)
    from_sparse, from_dense = solve(sparse, y, **options), solve(dense, y, **options)
    np.testing.assert_allclose(from_sparse.coef, from_dense.coef, atol=1e-10)
    assert from_sparse.objective == pytest.approx(from_dense.objective, rel=1e-10)


@pytest.mark.parametrize("name", solvers.SOLVERS)
def test_solvers_with_an_empty_group(backend, name):
    """Was: IndexError in add.reduceat for a trailing empty group.  An empty
    group (weight sqrt(0) = 0) changes nothing, wherever it is."""
    dense, y = _with_empty_rows()
    options = {
        "loss": "squared",
        "penalty": "group_l1",
        "beta": 0.05,
        "max_epochs": 3,
        "seed": 0,
        "backend": backend,
    }
    solve = getattr(solvers, name)
    expected = solve(dense, y, groups=[2, 3], **options)
    for groups in ([2, 3, 0], [0, 2, 3], [2, 0, 3], [2, 3, 0, 0]):
        result = solve(dense, y, groups=groups, **options)
        np.testing.assert_allclose(result.coef, expected.coef, atol=1e-12)
        assert result.objective == pytest.approx(expected.objective, rel=1e-12)


@pytest.mark.parametrize("loss", ["logistic", "multinomial"])
@pytest.mark.parametrize(
    "y",
    [
        [0.0, 1.0, 0.0, 1.0, 0.0, np.nan],
        [0.0, 1.0, 2.0, 0.0, 1.0, np.nan],
        [0.0, 1.0, 0.0, 1.0, np.inf, 0.0],
        np.array([0.0, 1.0, 0.0, 1.0, 0.0, np.nan], np.float32),
        np.array(["a", "b", "a", "b", "a", float("nan")], dtype=object),
    ],
    ids=["nan", "nan-3", "inf", "nan-float32", "nan-object"],
)
def test_a_nan_label_is_not_one_more_class(backend, loss, y):
    """Was: NaN taken silently as one more class."""
    X = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(ValueError, match=r"y \(labels\) must not contain NaN"):
        solvers.saga(X, y, loss=loss, max_epochs=1, backend=backend)


def test_nan_labels_in_the_estimator(backend):
    X = np.random.default_rng(0).standard_normal((6, 3))
    y = [0.0, 1.0, 0.0, 1.0, 0.0, np.nan]
    with pytest.raises(ValueError, match="NaN"):
        kernels.SparseLogisticRegression(backend=backend).fit(X, y)


# scikit-learn's estimator checks, one reproducer each (test_sklearn_checks.py
# runs all of them on the default backend)


@pytest.mark.parametrize("name", ["SparseLogisticRegression", "SparseLinearRegression"])
def test_estimators_check_their_input_as_scikit_learn_does(backend, name):
    pytest.importorskip("sklearn")
    from sklearn.exceptions import NotFittedError

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    y = (X[:, 0] > 0).astype(int) if "Logistic" in name else X @ [1.0, -2.0, 0.5]
    make = lambda: getattr(kernels, name)(max_epochs=5, backend=backend)  # noqa: E731
    unfitted = make()
    for method in ("predict", "decision_function"):
        if hasattr(unfitted, method):
            with pytest.raises(NotFittedError):
                getattr(unfitted, method)(X)
    with pytest.raises(ValueError, match="0 sample"):
        make().fit(X[:0], y[:0])
    with pytest.raises(ValueError, match="Expected 2D array"):
        make().fit(X[:, 0], y)
    with pytest.raises(ValueError, match="y should be a 1d array"):
        make().fit(X, np.stack([y, y], axis=1))
    first, second = make().fit(X, y), make().fit(X, y)  # the seed is a parameter
    np.testing.assert_array_equal(first.coef_, second.coef_)
    for bad in (np.nan, np.inf):
        X_bad = X.copy()
        X_bad[3, 1] = bad
        with pytest.raises(ValueError, match="Input X contains"):
            first.predict(X_bad)
    with pytest.raises(ValueError, match="X has 2 features"):
        first.predict(X[:, :2])
    if "Logistic" in name:
        with pytest.raises(ValueError, match="Unknown label type: continuous"):
            make().fit(X, X[:, 0])


def _exact_projection(x, radius):
    """The projection of x on the l1 ball, in exact rational arithmetic
    (the sort-based algorithm on Fractions): the oracle."""
    magnitudes = sorted((Fraction(abs(float(v))) for v in x.reshape(-1)), reverse=True)
    r = Fraction(radius)
    if sum(magnitudes) <= r:
        return x.astype(np.float64)
    total, tau = Fraction(0), Fraction(0)
    for rank, u in enumerate(magnitudes, start=1):
        total += u
        candidate = (total - r) / rank
        if rank == 1 or u > candidate:  # the largest always qualifies
            tau = candidate
    z = [
        np.sign(float(v)) * float(max(Fraction(abs(float(v))) - tau, Fraction(0)))
        for v in x.reshape(-1)
    ]
    return np.array(z).reshape(x.shape)


def _l1_ball_cases(dtype):
    big = float(np.finfo(dtype).max)
    return [
        # the reproducer: an l1 norm that overflows (float32 in float32,
        # float64 in float64)
        (np.array([big / 2, -big / 2] * 5, dtype), 1.0),
        (np.array([big, big, -big, 1.0], dtype), 1.0),
        (np.array([big / 2] * 4, dtype), big / 8),
        # no overflow, but max|x| dwarfs the radius
        (np.array([3e38, 2e38], dtype), 1.0),
        (np.array([1e38, 1e38], dtype), 1.0),
        (np.array([1e8, 1e8 - 8, 5.0], dtype), 10.0),
        (np.array([1e20, -1e20, 1e20 - 2**45], dtype), 3.0),
        (np.array([1.0, -2.0, 0.5], dtype), 0.0),
        (np.array([big / 3] * 3, dtype), big),
    ]


@pytest.mark.parametrize("case", range(9))
def test_project_l1_ball_on_inputs_whose_l1_norm_overflows(backend, dtype, case):
    """Was: a point that is not the projection (error up to the radius,
    NaN on numba float64).  Now within a few roundings of the radius of
    the exact projection, in the ball, and on the sphere."""
    x, radius = _l1_ball_cases(dtype)[case]
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    result = kernels.project_l1_ball(x, radius, backend=backend)
    assert result.dtype == dtype and result.shape == x.shape
    expected = _exact_projection(x, radius)
    tolerance = 8 * rtol(dtype) * max(radius, float(np.finfo(dtype).tiny))
    with np.errstate(over="ignore"):
        inside = radius >= float(np.abs(x.astype(np.float64)).sum())
    if inside:
        np.testing.assert_array_equal(result, x)
        return
    np.testing.assert_allclose(
        result.astype(np.float64), expected, rtol=0, atol=tolerance
    )
    l1 = float(np.abs(result.astype(np.float64)).sum())
    assert abs(l1 - radius) <= x.size * tolerance


def _scalar_inputs():
    return [np.array(3.0), 3.0, np.float32(3.0), np.array(-2.5, np.float32), 7]


@pytest.mark.parametrize("value", _scalar_inputs(), ids=repr)
def test_prox_of_a_0d_input_is_0d(backend, value):
    """Was: shape (1,) for a 0-d array and for a Python float."""
    expected_dtype = _checks.result_dtype(np.asarray(value).dtype, "x")
    calls = {
        "prox_l1": lambda x, **o: kernels.prox_l1(x, 1.0, **o),
        "prox_l1 per coordinate": lambda x, **o: kernels.prox_l1(x, np.array(1.0), **o),
        "prox_elastic_net": lambda x, **o: kernels.prox_elastic_net(x, 1.0, 0.5, **o),
        "prox_l0": lambda x, **o: kernels.prox_l0(x, 1.0, **o),
        "prox_group_l1": lambda x, **o: kernels.prox_group_l1(x, 1.0, 1, **o),
        "keep_top_k": lambda x, **o: kernels.keep_top_k(x, 1, **o),
        "project_l1_ball": lambda x, **o: kernels.project_l1_ball(x, 1.0, **o),
        "project_box": lambda x, **o: kernels.project_box(x, -1.0, 1.0, **o),
    }
    for name, call in calls.items():
        result = call(value, backend=backend)
        assert isinstance(result, np.ndarray) and result.shape == (), name
        assert result.dtype == expected_dtype, name
        reference = call(np.asarray(value).reshape(1), backend="numpy")
        np.testing.assert_allclose(result.reshape(1), reference, err_msg=name)
    x = np.array(3.0)
    assert kernels.prox_l1(x, 1.0, out=x, backend=backend) is x and x == 2.0


@pytest.mark.parametrize("dtype_code", [">f4", ">f8", "<f4", ">f2", ">i4"])
def test_byte_order_does_not_change_the_result_dtype(backend, dtype_code):
    """Was: big-endian float32 came back float64."""
    x = np.array([-2.0, 0.5, 3.0], dtype=dtype_code)
    native = x.astype(x.dtype.newbyteorder("="))
    expected = _checks.result_dtype(native.dtype, "x")
    for call in (
        lambda a: kernels.prox_l1(a, 1.0, backend=backend),
        lambda a: kernels.prox_group_l1(a, 1.0, 3, backend=backend),
        lambda a: kernels.project_l1_ball(a, 1.0, backend=backend),
        lambda a: kernels.project_box(a, -1.0, 1.0, backend=backend),
    ):
        result = call(x)
        assert result.dtype == expected and result.dtype.isnative
        np.testing.assert_array_equal(result, call(native))
    A = kernels.CSRMatrix(x, np.array([0, 1, 2]), np.array([0, 1, 3]), (2, 3))
    assert A.dtype == expected


def test_a_bool_bound_beside_an_array_bound_is_a_type_error(backend):
    """Found by the attack suite's long run: project_box(x, [1.0], True)
    took True as 1.0, while project_box(x, 0.0, True) refused it.  A scalar
    follows the scalar rules wherever it appears."""
    x = np.array([0.5, 2.0])
    for lower, upper in (([0.0, 0.0], True), (False, [1.0, 1.0]), (0.0, True)):
        with pytest.raises(TypeError, match="must be a real number"):
            kernels.project_box(x, lower, upper, backend=backend)
    with pytest.raises(TypeError, match="threshold must be a real number"):
        kernels.prox_l1(x, True, backend=backend)
    np.testing.assert_array_equal(
        kernels.project_box(x, 0.0, [1.0, 1.5], backend=backend), [0.5, 1.5]
    )


def test_byte_order_of_an_array_updated_in_place(backend):
    w = np.ones(3, ">f4")
    with pytest.raises(TypeError, match="non-native byte order"):
        kernels.cumulative_l1(w, np.zeros(3, ">f4"), 0.1, backend=backend)


def test_from_dense_with_float32_and_float64_layers(backend):
    """Was: accepted without a word (the float32 layer upcast)."""
    rng = np.random.default_rng(0)
    weights = [
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal((2, 3)),
    ]
    with pytest.raises(ValueError, match="weights must share one dtype"):
        kernels.SparseMLP.from_dense(weights, backend=backend)
    for dtype in (np.float32, np.float64):
        model = kernels.SparseMLP.from_dense(weights, dtype=dtype, backend=backend)
        assert model.dtype == dtype
        assert model.forward(np.ones(4)).dtype == dtype
    # one dtype throughout, or int8 layers (float32 by definition): as before
    same = [w.astype(np.float32) for w in weights]
    assert kernels.SparseMLP.from_dense(same).dtype == np.float32
    assert kernels.SparseMLP.from_dense(weights, fmt="int8").dtype == np.float32


# The command line and paths ------------------------------------------------


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def hostile_paths(tmp_path):
    """A directory, a missing path, a symbolic link loop and a FIFO."""
    directory = tmp_path / "a directory"
    directory.mkdir()
    os.symlink(tmp_path / "loop2", tmp_path / "loop1")
    os.symlink(tmp_path / "loop1", tmp_path / "loop2")
    paths = {
        "directory": (str(directory), "is a directory"),
        "missing": (str(tmp_path / "missing.npz"), "no such"),
        "loop": (str(tmp_path / "loop1"), "Too many levels of symbolic links"),
    }
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        paths["fifo"] = (str(tmp_path / "fifo"), "not a regular file")
    return paths


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    model = kernels.SparseMLP.from_dense(
        [rng.standard_normal((10, 64)).astype(np.float32)], classes=np.arange(10)
    )
    path = str(tmp_path / "model.npz")
    model.save(path)
    return path


@pytest.mark.parametrize("kind", ["directory", "missing", "loop", "fifo"])
@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{path}"],
        ["predict", "{model}", "--data", "{path}"],
        ["compress", "--data", "{path}"],
        ["compress", "--out", "{path}"],
        ["compress", "--plot", "{path}"],
    ],
    ids=["predict MODEL", "predict --data", "compress --data", "--out", "--plot"],
)
def test_paths_on_the_command_line(hostile_paths, model_file, kind, argv):
    """An OS error on a path is one line on stderr and exit status 1, found
    before any training (a FIFO would block the reader forever)."""
    if kind not in hostile_paths:
        pytest.skip("no FIFOs here")
    path, reason = hostile_paths[kind]
    argv = [a.format(path=path, model=model_file) for a in argv]
    if argv[:2] == ["compress", "--out"] and kind == "missing":
        return  # a new file to write: fine
    if argv[:2] == ["compress", "--plot"]:
        if kind == "missing":
            return  # a new directory for the figures: fine
        if kind == "directory":
            return  # an existing directory for the figures: fine
        reason = "is not a directory" if kind == "fifo" else reason
    status, out, err = _run(argv)
    assert status == 1, (status, out, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") and reason in err, err


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_quantized_transpose_with_a_huge_scale_and_a_stored_zero(backend):
    # found by the attack suite's long run (seed 1367555466): x times the
    # row's scale overflowed to inf in float32, and the stored 0 gave NaN
    A = kernels.QuantizedCSR(
        np.array([0], np.int32), np.array([0], np.int32),
        np.array([0, 0, 1], np.int32), [0.0, 3e38], (2, 1), bits=2,
    )  # fmt: skip
    y = kernels.spmv_t(A, np.array([0.8, -1.4]), backend=backend)
    np.testing.assert_array_equal(y, [0.0])
