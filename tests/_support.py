"""Helpers shared by the test modules (conftest.py holds the fixtures)."""

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kernels

HIDE_NUMBA = os.environ.get("KERNELS_TEST_HIDE_NUMBA") == "1"
ALLOW_NO_CYTHON = os.environ.get("KERNELS_TEST_ALLOW_NO_CYTHON") == "1"

# Relative tolerance by dtype: a few units in the last place, for backends
# that round the same formula in a different order or precision.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def rtol(dtype):
    return RTOL[np.dtype(dtype)]


def assert_close(actual, expected, scale=1.0, signed_zeros=False):
    """``actual`` equals ``expected`` to the dtype's tolerance: same type,
    shape and dtype, NaN where it is NaN, equal infinities, and the absolute
    error relative to ``scale`` (the magnitude of the inputs, since a
    difference such as |x| - t loses digits relative to |x|, not to the
    result).  ``signed_zeros`` also requires zeros of the same sign."""
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = rtol(expected.dtype)
    finite = np.isfinite(expected)
    scale = max(1.0, float(scale))
    np.testing.assert_allclose(
        actual, expected, rtol=tol, atol=tol * scale, equal_nan=True
    )
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    if signed_zeros:
        zeros = expected == 0
        np.testing.assert_array_equal(
            np.signbit(actual[zeros]), np.signbit(expected[zeros])
        )


def magnitude(*arrays):
    """The largest finite magnitude among ``arrays`` (at least 1): the scale
    of the absolute error a backend may make."""
    largest = 1.0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        finite = a[np.isfinite(a)]
        if finite.size:
            largest = max(largest, float(np.abs(finite).max()))
    return largest


def python_command(code):
    """``python -c code`` in a fresh interpreter that sees the same backends
    as this run (Numba is hidden there too under KERNELS_TEST_HIDE_NUMBA)."""
    prelude = "import sys; sys.modules['numba'] = None\n" if HIDE_NUMBA else ""
    return [sys.executable, "-c", prelude + code]


def package_root():
    """The directory that holds the imported ``kernels`` package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(kernels.__file__)))


def run_python(code, env=None, cwd=None, timeout=120):
    """Run ``code`` in a fresh interpreter importing this ``kernels``."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [package_root()] + [p for p in [full_env.get("PYTHONPATH")] if p]
    )
    full_env.update(env or {})
    return subprocess.run(
        python_command(code),
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Hypothesis strategies --------------------------------------------------

SHAPES_1D = hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=40)
SHAPES_2D = hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=8)
SHAPES = st.one_of(SHAPES_1D, SHAPES_2D)


def values(dtype, bound=1e3):
    """Finite values of ``dtype`` in [-bound, bound], zeros of both signs
    included."""
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return st.floats(-bound, bound, width=width, allow_subnormal=False)


def arrays(dtype, shape, bound=1e3):
    return hnp.arrays(np.dtype(dtype), shape, elements=values(dtype, bound))


def thresholds(maximum=20.0):
    """Non-negative thresholds, 0 and exact values included."""
    return st.one_of(st.just(0.0), st.floats(0.0, maximum, allow_subnormal=False))


def run_main(argv):
    """``python -m kernels ARGV`` in this process: (status, stdout, stderr)."""
    from kernels.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()
