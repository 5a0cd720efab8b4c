"""The attack suite's generators, oracles and runner (issue 19).

Each family draws hostile inputs with hypothesis: a valid structure or
argument, then a few mutations of the kinds a careless or hostile caller
makes (values beyond every bound, lengths off by one, integer dtypes that
wrap, floats, bools, strings and objects where integers belong, non-native
byte order, non-contiguous views, NaN and inf).  Every case runs in every
available backend and is judged against an oracle written here, apart
from the library's own checks:

* ``expect`` says, from the documented rules alone, whether the input is
  valid ("valid"), invalid ("invalid") or of a kind the rules leave open
  ("either", accepted or refused);
* an invalid input must raise ValueError or TypeError, in every backend;
* a valid input must be accepted and give the oracle's answer (products
  computed entry by entry in float64, the proximal maps in closed form),
  to the result dtype's tolerance; any other exception is a finding.

The runner is meant to run in a child process (``python -c "import
_attack; _attack.main(...)"``), since a crash of a compiled kernel would
kill the process that runs it: it writes each case to stderr before
running it, so that the last case written is the one that crashed, and
prints a JSON summary (cases run, outcomes counted) as its last line.
"""

import json
import math
import numbers
import sys
import time
import traceback
from collections import Counter
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import kernels

BACKENDS = kernels.available_backends()

# Integers at the edges of every integer type a structure could be given in
HOSTILE_INTS = [
    -(2**63),
    -(2**31) - 1,
    -(2**31),
    -129,
    -1,
    0,
    1,
    127,
    128,
    255,
    256,
    2**15,
    2**16,
    2**31 - 1,
    2**31,
    2**32,
    2**32 + 1,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    2**64 + 3,
]
HOSTILE_FLOATS = [math.nan, math.inf, -math.inf, -1.0, -0.0, 0.0, 1e-300, 3e38, 1e308]
NOT_A_NUMBER = [None, "1", b"1", 1j, [1.0], (), object(), True, False]
INDEX_DTYPES = [
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
]
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


class Finding(AssertionError):
    """The library did something the oracle does not allow."""


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(
        value, bool | np.bool_
    )


def _is_real(value):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def hostile_int(draw, near=()):
    return draw(
        st.one_of(
            st.sampled_from(HOSTILE_INTS),
            st.sampled_from([v + d for v in near for d in (-1, 0, 1)] or [0]),
            st.integers(-(2**70), 2**70),
        )
    )


def _as_index_array(draw, values, clean=False):
    """``values`` (Python ints) as an index argument of a drawn kind: a
    list, an array of a drawn integer dtype (when they fit it), or a
    hostile kind (floats, bools, objects, 2-D, non-native order, strided)."""
    if clean:
        kind = draw(st.sampled_from(["int32", "int64"]))
        values = list(values)
        if all(-(2**31) <= v < 2**31 for v in values) or kind == "int64":
            if all(-(2**63) <= v < 2**63 for v in values):
                return np.array(values, dtype=kind)
        return values
    kind = draw(
        st.sampled_from(
            ["int32", "int64", "dtype", "list"] * 3
            + ["float", "bool", "object", "2d", "big-endian", "strided"]
        )
    )
    values = list(values)
    if kind == "list":
        return values
    if kind in ("int32", "int64", "dtype", "big-endian", "strided"):
        dtype = {"int32": np.int32, "int64": np.int64}.get(kind)
        if dtype is None:
            dtype = draw(st.sampled_from(INDEX_DTYPES))
        info = np.iinfo(dtype)
        if any(v < info.min or v > info.max for v in values):
            return np.array(values, dtype=object) if kind == "dtype" else values
        array = np.array(values, dtype=dtype)
        if kind == "big-endian":
            return array.astype(array.dtype.newbyteorder(">"))
        if kind == "strided":
            return np.repeat(array, 2)[::2]
        return array
    if kind == "float":
        return np.array(values, dtype=np.float64) if values else np.zeros(0)
    if kind == "bool":
        return np.array([bool(v) for v in values], dtype=bool)
    if kind == "object":
        return np.array(values, dtype=object)
    fits = all(-(2**63) <= v < 2**63 for v in values)
    return np.array(values, dtype=np.int64 if fits else object).reshape(1, -1)


def _index_values(a):
    """The Python ints an index argument holds, or None if the documented
    rules refuse it (not integers, not 1-D)."""
    if isinstance(a, list):
        if not all(_is_int(v) for v in a):
            return None
        if a and not _fits_numpy(a):
            return None  # NumPy makes a list beyond int64/uint64 objects
        return [int(v) for v in a]
    if a.dtype.kind not in "iu" or a.ndim != 1:
        return None
    return [int(v) for v in a]


def _fits_numpy(values):
    """Whether np.asarray makes an integer array of these Python ints."""
    try:
        return np.asarray(values).dtype.kind in "iu"
    except (OverflowError, ValueError):
        return False


def _draw_data(draw, nnz, block=(), clean=False):
    """Stored values: finite floats of a drawn dtype, or a hostile kind."""
    kind = (
        "float64"
        if clean
        else draw(
            st.sampled_from(
                ["float64", "float32"] * 3
                + ["float16", "int", "list", "nonfinite", "big-endian"]
                + ["complex", "object", "string", "2d"]
            )
        )
    )
    shape = (nnz, *block)
    values = draw(
        st.lists(
            st.floats(-100, 100, allow_subnormal=False),
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        )
    )
    base = np.array(values, dtype=np.float64).reshape(shape)
    if kind == "float64":
        return base
    if kind == "float32":
        return base.astype(np.float32)
    if kind == "float16":
        return base.astype(np.float16)
    if kind == "int":
        return np.round(base).astype(np.int64)
    if kind == "list":
        return base.tolist()
    if kind == "nonfinite":
        if base.size:
            base.reshape(-1)[draw(st.integers(0, base.size - 1))] = draw(
                st.sampled_from([math.nan, math.inf, -math.inf])
            )
        return base
    if kind == "complex":
        return base.astype(np.complex128)
    if kind == "object":
        return base.astype(object)
    if kind == "string":
        return base.astype(str)
    if kind == "big-endian":
        return base.astype(">f4")
    return base.reshape(1, *shape) if base.size else base.reshape(1, 1, *shape)


def _data_values(data, block=()):
    """(float64 values, result dtype) of valid data, else None."""
    array = np.asarray(data)
    if array.dtype.kind not in "biuf" or array.shape[1:] != block or array.ndim < 1:
        return None
    if array.dtype.kind == "f" and array.dtype.itemsize <= 4:
        dtype = np.dtype(np.float32)
    else:
        dtype = np.dtype(np.float64)
    return array.astype(dtype).astype(np.float64), dtype


def _draw_shape(draw, m, n, clean=False):
    """(m, n), possibly made hostile."""
    kind = (
        "same"
        if clean
        else draw(st.sampled_from(["same"] * 6 + ["m", "n", "type", "length"]))
    )
    if kind == "same":
        return (m, n)
    if kind == "m":
        return (hostile_int(draw, (m,)), n)
    if kind == "n":
        return (m, hostile_int(draw, (n,)))
    if kind == "type":
        bad = draw(st.sampled_from([float(m), np.float64(m), True, None, "3", 2.5]))
        return (bad, n) if draw(st.booleans()) else (m, bad)
    return draw(st.sampled_from([(m,), (m, n, 1), m, None, "mn"]))


def _shape_values(shape):
    try:
        items = tuple(shape)
    except TypeError:
        return None
    if isinstance(shape, str | bytes) or len(items) != 2:
        return None
    if not all(_is_int(v) and 0 <= v <= np.iinfo(np.intp).max for v in items):
        return None
    return tuple(int(v) for v in items)


def _cleanliness(draw, components):
    """Which components of a case stay valid: all of them, all but one, or
    none (the hostile one is drawn), so that both the checks and the
    products of valid input are exercised."""
    target = draw(st.sampled_from(["none", *components, "all", "all"]))
    return {c: target not in (c, "all") for c in components}


@st.composite
def structures(draw, max_major=5, max_minor=5, clean=False):
    """A compressed structure (indptr, indices as Python ints) over a drawn
    (major, minor) shape, then mutated."""
    major = draw(st.integers(0, max_major))
    minor = draw(st.integers(0, max_minor))
    counts = draw(
        st.lists(st.integers(0, 3 if minor else 0), min_size=major, max_size=major)
    )
    indptr = [0, *np.cumsum(counts, dtype=np.int64).tolist()]
    nnz = indptr[-1]
    indices = draw(
        st.lists(st.integers(0, max(minor - 1, 0)), min_size=nnz, max_size=nnz)
    )
    for mutation in draw(
        st.lists(
            st.sampled_from(["indptr", "index", "indptr-length", "index-length"]),
            max_size=0 if clean else 2,
        )
    ):
        if mutation == "indptr" and indptr:
            i = draw(st.integers(0, len(indptr) - 1))
            indptr[i] = hostile_int(draw, (nnz, indptr[i]))
        elif mutation == "index" and indices:
            k = draw(st.integers(0, len(indices) - 1))
            indices[k] = hostile_int(draw, (minor, -1))
        elif mutation == "indptr-length":
            indptr = indptr[:-1] if draw(st.booleans()) else [*indptr, nnz]
        elif mutation == "index-length":
            indices = indices[:-1] if draw(st.booleans()) else [*indices, 0]
    return major, minor, indptr, indices, nnz


def _structure_valid(indptr, indices, n_major, n_minor, n_stored):
    return (
        len(indptr) == n_major + 1
        and len(indices) == n_stored
        and indptr[0] == 0
        and indptr[-1] == n_stored
        and all(a <= b for a, b in zip(indptr, indptr[1:], strict=False))
        and all(0 <= j < n_minor for j in indices)
    )


def _entries(indptr, indices):
    """(row, stored position, column) of every stored entry of a valid
    structure."""
    for i in range(len(indptr) - 1):
        for k in range(indptr[i], indptr[i + 1]):
            yield i, k, indices[k]


# Operations on a matrix, judged against the dense oracle ------------------


@st.composite
def products(draw):
    return draw(st.sampled_from(["spmv", "spmv_t", "spmm", "spmm-features"])), draw(
        st.integers(1, 3)
    )


def _product(A, operation, matrices, backend):
    """Run ``operation`` on A and compare with ``dense`` of ``matrices``
    (``_dense``: the float64 oracle of A's values, and their magnitudes,
    which set the tolerance); inputs of moderate size only."""
    dense, magnitude = matrices
    name, k = operation
    m, n = A.shape
    if n > 10**5:  # a legitimate shape too large for the oracle: x is checked
        if n != 1:
            _refused(lambda: kernels.spmv(A, np.zeros(1), backend=backend))
        return
    rng = np.random.default_rng(0)
    if name == "spmv":
        x = rng.uniform(-3, 3, n)
        result, expected = kernels.spmv(A, x, backend=backend), dense @ x
    elif name == "spmv_t":
        x = rng.uniform(-3, 3, m)
        result, expected = kernels.spmv_t(A, x, backend=backend), dense.T @ x
    elif name == "spmm":
        X = rng.uniform(-3, 3, (k, n))
        result, expected = kernels.spmm(A, X, backend=backend), X @ dense.T
    else:
        X = rng.uniform(-3, 3, (n, k))
        result = kernels.spmm(A, X, layout="features", backend=backend)
        expected = dense @ X
    scale = 3 * magnitude[np.isfinite(magnitude)].sum() + 1
    _compare(result, expected, A.dtype, scale=scale)


def _compare(result, expected, dtype, scale=1.0):
    if not isinstance(result, np.ndarray):
        raise Finding(f"result is {type(result).__name__}, not an ndarray")
    if result.dtype != dtype or result.shape != expected.shape:
        raise Finding(
            f"result {result.dtype}{result.shape}, expected {dtype}{expected.shape}"
        )
    tol = RTOL[np.dtype(dtype)]
    if np.dtype(dtype) == np.float32 and scale > 1e36:
        return  # beyond float32's range: the oracle cannot say (no crash is all)
    with np.errstate(invalid="ignore"):
        ok = np.isclose(
            result.astype(np.float64),
            expected,
            rtol=tol,
            atol=tol * scale,
            equal_nan=True,
        )
    if not ok.all():
        raise Finding(f"wrong result: {result!r}, expected {expected!r}")


def _dense(m, n, entries):
    """The float64 matrix of (row, column, value) triples, summed, and the
    matrix of their magnitudes summed (the scale of the rounding error when
    duplicates cancel); (None, None) for a shape too large to hold."""
    if n > 10**5:
        return None, None
    dense, magnitude = np.zeros((m, n)), np.zeros((m, n))
    for i, j, v in entries:
        dense[i, j] += v
        magnitude[i, j] += abs(v)
    return dense, magnitude


# Families: each returns (strategy, run), run(case, backend) -> expectation
# and performs the checks (raising Finding) -------------------------------


@st.composite
def csr_cases(draw):
    clean = _cleanliness(draw, ["structure", "data", "indices", "indptr", "shape"])
    m, n, indptr, indices, nnz = draw(structures(clean=clean["structure"]))
    data = _draw_data(draw, nnz, clean=clean["data"])
    return {
        "data": data,
        "indices": _as_index_array(draw, indices, clean["indices"]),
        "indptr": _as_index_array(draw, indptr, clean["indptr"]),
        "shape": _draw_shape(draw, m, n, clean["shape"]),
        "operation": draw(products()),
    }


def run_csr(case, backend):
    shape = _shape_values(case["shape"])
    indptr, indices = _index_values(case["indptr"]), _index_values(case["indices"])
    data = _data_values(case["data"])
    valid = (
        shape is not None
        and indptr is not None
        and indices is not None
        and data is not None
        and np.asarray(case["data"]).ndim == 1
        and _structure_valid(indptr, indices, shape[0], shape[1], len(data[0]))
    )
    build = lambda: kernels.CSRMatrix(  # noqa: E731
        case["data"], case["indices"], case["indptr"], case["shape"]
    )
    if not valid:
        return _refused(build)
    A = build()
    values, dtype = data
    m, n = shape
    if A.dtype != dtype or A.shape != shape:
        raise Finding(f"CSRMatrix of {A.dtype}{A.shape}, expected {dtype}{shape}")
    dense = _dense(m, n, ((i, j, values[k]) for i, k, j in _entries(indptr, indices)))
    _product(A, case["operation"], dense, backend)
    return "valid"


@st.composite
def bsr_cases(draw):
    r, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    clean = _cleanliness(draw, ["structure", "data", "indices", "indptr", "shape"])
    block_rows, block_cols, indptr, indices, nblocks = draw(
        structures(3, 3, clean=clean["structure"])
    )
    data = _draw_data(draw, nblocks, (r, c), clean=clean["data"])
    if not clean["data"] and draw(st.integers(0, 4)) == 0:  # a block shape
        data = np.zeros((nblocks, draw(st.integers(0, 4)), draw(st.integers(0, 4))))
    return {
        "data": data,
        "indices": _as_index_array(draw, indices, clean["indices"]),
        "indptr": _as_index_array(draw, indptr, clean["indptr"]),
        "shape": _draw_shape(draw, block_rows * r, block_cols * c, clean["shape"]),
        "operation": draw(products()),
    }


def run_bsr(case, backend):
    shape = _shape_values(case["shape"])
    indptr, indices = _index_values(case["indptr"]), _index_values(case["indices"])
    array = np.asarray(case["data"])
    valid = shape is not None and indptr is not None and indices is not None
    valid = valid and array.ndim == 3 and 0 not in array.shape[1:]
    if valid:
        r, c = array.shape[1:]
        data = _data_values(case["data"], (r, c))
        valid = (
            data is not None
            and shape[0] % r == 0
            and shape[1] % c == 0
            and _structure_valid(
                indptr, indices, shape[0] // r, shape[1] // c, len(array)
            )
        )
    build = lambda: kernels.BSRMatrix(  # noqa: E731
        case["data"], case["indices"], case["indptr"], case["shape"]
    )
    if not valid:
        return _refused(build)
    A = build()
    values, dtype = data
    dense, magnitude = _dense(*shape, ())
    for i, k, j in _entries(indptr, indices) if dense is not None else ():
        dense[i * r : (i + 1) * r, j * c : (j + 1) * c] += values[k]
        magnitude[i * r : (i + 1) * r, j * c : (j + 1) * c] += np.abs(values[k])
    if A.dtype != dtype:
        raise Finding(f"BSRMatrix of {A.dtype}, expected {dtype}")
    _product(A, case["operation"], (dense, magnitude), backend)
    return "valid"


@st.composite
def quantized_cases(draw):
    clean = _cleanliness(
        draw, ["structure", "values", "indices", "indptr", "shape", "bits", "scales"]
    )
    m, n, indptr, indices, nnz = draw(structures(clean=clean["structure"]))
    bits = draw(
        st.integers(2, 8)
        if clean["bits"]
        else st.sampled_from([0, 1, 9, 64, 2**63, -1, True, 8.0, "8", None])
    )
    qmax = 2 ** (min(max(bits, 2), 8) - 1) - 1 if _is_int(bits) else 127
    values = draw(st.lists(st.integers(-qmax, qmax), min_size=nnz, max_size=nnz))
    if values and not clean["values"] and draw(st.booleans()):
        values[draw(st.integers(0, nnz - 1))] = hostile_int(draw, (qmax + 1, -qmax - 1))
    scale = st.floats(0, 10)
    if not clean["scales"]:
        scale = st.one_of(scale, st.sampled_from(HOSTILE_FLOATS))
    scales = draw(st.lists(scale, min_size=m, max_size=m))
    if not clean["scales"] and draw(st.integers(0, 2)) == 0:
        scales = scales[:-1] if scales and draw(st.booleans()) else [*scales, 1.0]
    return {
        "values": _as_index_array(draw, values, clean["values"]),
        "indices": _as_index_array(draw, indices, clean["indices"]),
        "indptr": _as_index_array(draw, indptr, clean["indptr"]),
        "scales": draw(st.sampled_from([list, np.array]))(scales),
        "shape": _draw_shape(draw, m, n, clean["shape"]),
        "bits": bits,
        "operation": draw(products()),
    }


def run_quantized(case, backend):
    shape = _shape_values(case["shape"])
    indptr, indices = _index_values(case["indptr"]), _index_values(case["indices"])
    values, bits = _index_values(case["values"]), case["bits"]
    with np.errstate(over="ignore"):
        scales = np.asarray(case["scales"], dtype=np.float64).astype(np.float32)
    valid = (
        shape is not None
        and indptr is not None
        and indices is not None
        and values is not None
        and _is_int(bits)
        and 2 <= bits <= 8
        and scales.shape == (shape[0],)
        and np.isfinite(scales).all()
        and (scales >= 0).all()
        and shape[1] <= 2**31
    )
    valid = valid and all(abs(v) <= 2 ** (bits - 1) - 1 for v in values)
    valid = valid and _structure_valid(indptr, indices, shape[0], shape[1], len(values))
    build = lambda: kernels.QuantizedCSR(  # noqa: E731
        case["values"],
        case["indices"],
        case["indptr"],
        case["scales"],
        case["shape"],
        bits=bits,
    )
    if not valid:
        return _refused(build)
    A = build()
    dense = _dense(
        *shape,
        ((i, j, float(scales[i]) * values[k]) for i, k, j in _entries(indptr, indices)),
    )
    _product(A, case["operation"], dense, backend)
    return "valid"


# Hostile group specifications -------------------------------------------


@st.composite
def group_cases(draw):
    shape = draw(st.sampled_from([(0,), (1,), (6,), (12,), (3, 4), (2, 6), (0, 3)]))
    size = int(np.prod(shape))
    clean = _cleanliness(draw, ["groups", "threshold", "l1", "weights"])
    kind = draw(st.sampled_from(["sizes"] * 4 + ["int", "string", "scalar-other"]))
    if clean["groups"]:
        kind = draw(st.sampled_from(["valid-sizes", "valid-int", "valid-string"]))
    if kind == "valid-sizes":
        sizes, left = [], size
        while left:
            sizes.append(draw(st.integers(0, left)))
            left -= sizes[-1]
        groups = draw(st.sampled_from([list, np.array]))(
            sizes + [0] * draw(st.integers(0, 1))
        )
    elif kind == "valid-int":
        groups = draw(
            st.sampled_from([d for d in (1, 2, 3, 4, 6, 12) if size % d == 0])
        )
    elif kind == "valid-string":
        groups = draw(st.sampled_from(["rows", "cols"])) if len(shape) == 2 else 1
    elif kind == "sizes":
        sizes, left = [], size
        while left:
            sizes.append(draw(st.integers(0, left)))
            left -= sizes[-1]
        sizes += [0] * draw(st.integers(0, 2))
        draw(st.randoms()).shuffle(sizes)
        for _ in range(draw(st.integers(0, 2))):
            if sizes:
                sizes[draw(st.integers(0, len(sizes) - 1))] = hostile_int(draw, (size,))
        if draw(st.integers(0, 3)) == 0:
            # sizes whose int64 sum wraps around to the size
            sizes = draw(
                st.sampled_from(
                    [
                        [2**63 - 1, 2**63 - 1, size + 2],
                        [2**62] * 4 + [size],
                        [2**64 - 1, size + 1],
                        [2**63, 2**63, size],
                    ]
                )
            )
        groups = _as_index_array(draw, sizes)
    elif kind == "int":
        groups = draw(st.one_of(st.integers(-2, 13), st.sampled_from(HOSTILE_INTS)))
        if -128 <= groups <= 127:
            kinds = [int, np.int64, np.int8] + ([np.uint64] if groups >= 0 else [])
            groups = draw(st.sampled_from(kinds))(groups)
    elif kind == "string":
        groups = draw(st.sampled_from(["rows", "cols", "row", "", "ROWS"]))
    else:
        groups = draw(st.sampled_from([2.0, True, None, 1j, np.float64(3), b"rows"]))
    return {
        "x": np.random.default_rng(draw(st.integers(0, 9))).uniform(-3, 3, shape),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
        "groups": groups,
        "threshold": draw(
            st.floats(0, 5) if clean["threshold"] else _scalar_thresholds()
        ),
        "l1": draw(st.floats(0, 5) if clean["l1"] else _scalar_thresholds()),
        "weights": draw(
            st.one_of(st.none(), st.sampled_from([1, 2, 4, 7, 8, 11]))
            if clean["weights"]
            else st.integers(0, 20)
        ),
        "sparse": draw(st.booleans()),
    }


def _scalar_thresholds():
    return st.one_of(
        st.floats(0, 5),
        st.sampled_from(HOSTILE_FLOATS),
        st.sampled_from(NOT_A_NUMBER),
        st.sampled_from([np.float32(1.5), np.array(0.5), np.array([0.5]), 7]),
    )


def _threshold_value(t, allow_inf=True):
    """A valid scalar threshold as a float, else None."""
    if not _is_real(t):
        return None
    t = float(np.asarray(t)[()])
    if math.isnan(t) or t < 0 or (not allow_inf and math.isinf(t)):
        return None
    return t


def _group_pointer(groups, shape):
    """The group pointer of a valid spec (list of Python ints), "cols",
    "either" or None (invalid)."""
    size = int(np.prod(shape))
    if isinstance(groups, str):
        if len(shape) != 2 or groups not in ("rows", "cols"):
            return None
        if groups == "cols":
            return "cols"
        return [i * shape[1] for i in range(shape[0] + 1)]
    if isinstance(groups, list | np.ndarray):
        if isinstance(groups, list) and any(isinstance(v, bool) for v in groups):
            return "either"
        if isinstance(groups, np.ndarray) and groups.dtype == object:
            return None  # object arrays are a TypeError; lists are read exactly
        if isinstance(groups, list):
            values = groups
            if not all(_is_int(v) for v in values):
                return None
        else:
            if groups.ndim != 1 or (groups.size and groups.dtype.kind not in "iu"):
                return None
            values = [int(v) for v in groups]
        if any(v < 0 for v in values) or sum(values) != size:
            return None
        return np.cumsum([0, *values]).tolist()
    if not _is_int(groups) or groups < 1 or size % groups:
        return None
    return list(range(0, size + 1, int(groups)))


def run_groups(case, backend):
    x = case["x"].astype(case["dtype"])
    pointer = _group_pointer(case["groups"], x.shape)
    threshold = _threshold_value(case["threshold"])
    l1 = _threshold_value(case["l1"]) if case["sparse"] else 0.0
    n_groups = (
        x.shape[1] if pointer == "cols" else len(pointer) - 1 if pointer else None
    )
    weights = None
    weights_valid = True
    if case["weights"] is not None:
        rng = np.random.default_rng(case["weights"])
        length = n_groups if n_groups is not None and case["weights"] % 3 else 2
        weights = rng.uniform(0, 2, max(length, 0))
        if case["weights"] % 5 == 0 and weights.size:
            weights[0] = [math.nan, -1.0, math.inf][case["weights"] % 3]
            weights_valid = False
        weights_valid = weights_valid and weights.shape == (n_groups,)

    def call():
        if case["sparse"]:
            return kernels.prox_sparse_group_l1(
                x,
                case["l1"],
                case["threshold"],
                case["groups"],
                weights,
                backend=backend,
            )
        return kernels.prox_group_l1(
            x, case["threshold"], case["groups"], weights, backend=backend
        )

    if pointer == "either":
        try:
            call()
        except (ValueError, TypeError):
            return "refused"
        return "either"
    if pointer is None or threshold is None or l1 is None or not weights_valid:
        return _refused(call)
    result = call()
    w = np.ones(n_groups) if weights is None else weights
    t32 = np.float32 if x.dtype == np.float32 else np.float64
    l1c = float(t32(l1)) if l1 <= 3e38 or t32 is np.float64 else math.inf
    y = np.copysign(np.maximum(np.abs(x.astype(np.float64)) - l1c, 0), x)
    expected = np.zeros_like(y)
    flat, out = y.reshape(-1), expected.reshape(-1)
    groups = (
        [np.arange(j, x.size, x.shape[1]) for j in range(x.shape[1])]
        if pointer == "cols"
        else [np.arange(a, b) for a, b in zip(pointer, pointer[1:], strict=False)]
    )
    for g, members in enumerate(groups):
        norm = math.sqrt(float(np.sum(flat[members] ** 2)))
        t = threshold * w[g] if w[g] > 0 else 0.0
        if norm > 0 and t < norm:
            out[members] = flat[members] * (1 - t / norm)
    _compare(result, expected, x.dtype, scale=3.0)
    return "valid"


# Hostile thresholds and x ------------------------------------------------


@st.composite
def threshold_cases(draw):
    shape = draw(st.sampled_from([(), (0,), (1,), (5,), (2, 3)]))
    dtype = draw(
        st.sampled_from(["<f8", "<f4", ">f4", ">f8", "<f2", "<i4", "|b1", "c16", "O"])
    )
    values = np.random.default_rng(draw(st.integers(0, 9))).uniform(-3, 3, shape)
    if values.size and draw(st.integers(0, 3)) == 0:
        values.reshape(-1)[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    with np.errstate(invalid="ignore"):
        x = values.astype(dtype)
    if draw(st.integers(0, 5)) == 0:
        x = x.tolist() if x.ndim else x.item()
    function = draw(
        st.sampled_from(
            ["prox_l1", "prox_elastic_net", "prox_l0", "keep_top_k"]
            + ["project_l1_ball", "project_box"]
        )
    )
    per_coordinate = st.builds(
        lambda s, v: np.full(s, v),
        st.sampled_from([(), (1,), (5,), (3,), (2, 3), (3, 2), (1, 3)]),
        st.one_of(st.floats(-1, 3), st.sampled_from(HOSTILE_FLOATS)),
    )
    argument = st.one_of(_scalar_thresholds(), per_coordinate)
    return {
        "x": x,
        "function": function,
        "a": draw(argument),
        "b": draw(argument),
        "k": draw(
            st.one_of(st.integers(-1, 7), st.sampled_from(NOT_A_NUMBER + [2**64]))
        ),
    }


def _per_coordinate(t, shape, minimum=None):
    """A valid per-coordinate argument broadcast to ``shape`` (float64),
    else None."""
    array = np.asarray(t)
    if array.dtype.kind not in "biuf" or np.isnan(array).any():
        return None
    if minimum is not None and (array < minimum).any():
        return None
    try:
        return np.broadcast_to(array.astype(np.float64), shape)
    except ValueError:
        return None


def run_thresholds(case, backend):
    x, name = case["x"], case["function"]
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        args = _VALID_ARGUMENTS[name]
        return _refused(lambda: getattr(kernels, name)(x, *args, backend=backend))
    dtype = np.dtype(
        np.float32
        if array.dtype.kind == "f" and array.dtype.itemsize <= 4
        else np.float64
    )
    xv = array.astype(dtype).astype(np.float64)
    finite = np.isfinite(xv).all()
    f32 = dtype == np.float32

    def cast(t):  # the threshold as the kernels see it
        with np.errstate(over="ignore"):
            return np.asarray(t, dtype=np.float64).astype(dtype).astype(np.float64)

    def scalar_or_each(t, minimum=0.0):
        if _is_scalar(t):
            value = _threshold_value(t) if minimum == 0.0 else _box_value(t)
            return None if value is None else cast(value)
        each = _per_coordinate(t, xv.shape, minimum)
        return None if each is None else cast(each)

    a, b = case["a"], case["b"]
    if name in ("prox_l1", "prox_elastic_net"):
        t = scalar_or_each(a)
        l2 = _threshold_value(b, allow_inf=False) if name == "prox_elastic_net" else 0
        args = (a, b) if name == "prox_elastic_net" else (a,)
        valid = t is not None and l2 is not None
        if valid:
            with np.errstate(invalid="ignore"):
                expected = np.copysign(np.maximum(np.abs(xv) - t, 0), xv) / (1 + l2)
    elif name == "prox_l0":
        t, args = _threshold_value(a), (a,)
        valid = t is not None
        if valid:
            cutoff = cast(math.sqrt(2 * t))
            with np.errstate(invalid="ignore"):
                expected = xv * (np.abs(xv) > cutoff)  # NaN propagates
    elif name == "keep_top_k":
        k, args = case["k"], (case["k"],)
        valid = _is_int(k) and 0 <= k <= xv.size and finite
        if valid:
            order = np.argsort(-np.abs(xv).reshape(-1), kind="stable")[:k]
            expected = np.zeros(xv.size)
            expected[order] = xv.reshape(-1)[order]
            expected = expected.reshape(xv.shape)
    elif name == "project_l1_ball":
        r, args = _threshold_value(a), (a,)
        valid = r is not None and finite
        if valid:
            expected = _l1_projection(xv, r, dtype)
    else:
        args = (a, b)
        if _is_scalar(a) and _is_scalar(b):
            lo, hi = _box_value(a), _box_value(b)
            valid = lo is not None and hi is not None and lo <= hi
        else:
            lo, hi = scalar_or_each(a, None), scalar_or_each(b, None)
            valid = lo is not None and hi is not None and (lo <= hi).all()
        if valid:
            lo, hi = cast(lo), cast(hi)
            expected = np.where(np.isnan(xv), xv, np.minimum(np.maximum(xv, lo), hi))
    call = lambda: getattr(kernels, name)(x, *args, backend=backend)  # noqa: E731
    if not valid:
        return _refused(call)
    result = call()
    _compare(result, np.asarray(expected, dtype=np.float64), dtype, scale=3.0)
    if f32 and result.dtype != np.float32:
        raise Finding("float32 not preserved")
    return "valid"


_VALID_ARGUMENTS = {
    "prox_l1": (1.0,),
    "prox_elastic_net": (1.0, 0.5),
    "prox_l0": (1.0,),
    "keep_top_k": (1,),
    "project_l1_ball": (1.0,),
    "project_box": (-1.0, 1.0),
}


def _is_scalar(value):
    """Whether the documented rules take ``value`` as one scalar (a
    threshold "scalar or per coordinate"): a Python number, or anything
    NumPy sees as 0-d."""
    return isinstance(value, float | int) or np.ndim(value) == 0


def _box_value(t):
    if not _is_real(t):
        return None
    t = float(np.asarray(t)[()])
    return None if math.isnan(t) else t


def _l1_projection(x, radius, dtype):
    """The projection on the l1 ball, sort-based, in exact rational
    arithmetic (rounding |x| - tau in float64 would lose the digits of a
    small radius next to a large |x|)."""
    flat = [Fraction(float(v)) for v in x.reshape(-1)]
    if math.isinf(radius) or sum(abs(v) for v in flat) <= Fraction(radius):
        return x
    r, total, tau = Fraction(radius), Fraction(0), Fraction(0)
    for rank, u in enumerate(sorted((abs(v) for v in flat), reverse=True), 1):
        total += u
        if rank == 1 or u > (total - r) / rank:  # the largest qualifies
            tau = (total - r) / rank
    tau = max(tau, Fraction(0))
    z = [math.copysign(float(max(abs(v) - tau, Fraction(0))), v) for v in flat]
    return np.array(z).reshape(x.shape)


# Hostile thread counts ---------------------------------------------------

_BIG = {}


def _big_matrix():
    """A product large enough to run in parallel (nnz above
    PARALLEL_MIN_WORK)."""
    if not _BIG:
        rng = np.random.default_rng(19)
        dense = rng.standard_normal((400, 1000)) * (rng.random((400, 1000)) < 0.3)
        A = kernels.CSRMatrix.from_dense(dense)
        assert A.nnz >= kernels.sparse.PARALLEL_MIN_WORK
        x, X = rng.standard_normal(1000), rng.standard_normal((3, 1000))
        model = kernels.SparseMLP.from_dense([dense, rng.standard_normal((5, 400))])
        _BIG.update(xt=rng.standard_normal(400))
        _BIG.update(A=A, x=x, X=X, model=model)
    return _BIG


@st.composite
def thread_cases(draw):
    return {
        "threads": draw(
            st.one_of(
                st.sampled_from(HOSTILE_INTS),
                st.integers(-3, 1030),
                st.sampled_from([1024, 1025, 2**31 - 1]),
                st.sampled_from(NOT_A_NUMBER + [1.0, 2.5, math.nan, np.float64(2)]),
                st.sampled_from([np.int8(2), np.uint64(2**63), np.int64(-1)]),
            )
        ),
        "function": draw(st.sampled_from(["spmv", "spmm", "spmv_t", "forward"])),
    }


def run_threads(case, backend):
    big, threads = _big_matrix(), case["threads"]
    calls = {
        "spmv": lambda t: kernels.spmv(big["A"], big["x"], threads=t, backend=backend),
        "spmv_t": lambda t: kernels.spmv_t(
            big["A"], big["xt"], threads=t, backend=backend
        ),
        "spmm": lambda t: kernels.spmm(big["A"], big["X"], threads=t, backend=backend),
        "forward": lambda t: big["model"].forward(big["X"], threads=t, backend=backend),
    }
    call = calls[case["function"]]
    valid = threads is None or (_is_int(threads) and 1 <= threads <= 1024)
    if not valid:
        return _refused(lambda: call(threads))
    result, serial = call(threads), call(1)
    _compare(result, serial, serial.dtype, scale=1.0)
    return "valid"


# The runner ------------------------------------------------------------


def _refused(call):
    """``call`` must raise ValueError or TypeError."""
    try:
        call()
    except (ValueError, TypeError):
        return "refused"
    except Exception as exc:
        raise Finding(f"invalid input: {type(exc).__name__}: {exc}") from exc
    raise Finding("invalid input accepted")


FAMILIES = {
    "csr": (csr_cases, run_csr),
    "bsr": (bsr_cases, run_bsr),
    "quantized": (quantized_cases, run_quantized),
    "groups": (group_cases, run_groups),
    "thresholds": (threshold_cases, run_thresholds),
    "threads": (thread_cases, run_threads),
}


def attack(family, seed_value, max_examples, counts, log=sys.stderr):
    """Run ``max_examples`` cases of ``family`` (each in every backend)
    from ``seed_value``; count the outcomes in ``counts``.  A finding
    raises (after hypothesis has shrunk it)."""
    strategy, run = FAMILIES[family]
    last = {}

    @seed(seed_value)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy())
    def test(case):
        print(f"case {family}: {case!r}", file=log, flush=True)
        last["case"] = case
        outcomes = set()
        for backend in BACKENDS:
            try:
                with np.errstate(all="ignore"):
                    outcomes.add(run(case, backend))
            except Finding:
                raise
            except Exception as exc:
                raise Finding(
                    f"{backend}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                ) from exc
        if len(outcomes) != 1:
            raise Finding(f"the backends disagree: {outcomes}")
        counts[outcomes.pop()] += 1

    try:
        test()
    except Finding as exc:
        # hypothesis runs the shrunk case last
        raise Finding(f"{exc}\non the case {last.get('case')!r}") from None


def main(families, seed_value, max_examples, seconds=None):
    """Attack each family (``max_examples`` cases per round; rounds with
    successive seeds until ``seconds`` have passed, one round if None) and
    print the JSON summary as the last line of stdout."""
    start = time.monotonic()
    summary = {"backends": BACKENDS, "seed": seed_value, "families": {}}
    status = 0
    for family in families:
        counts, rounds = Counter(), 0
        try:
            while True:
                attack(family, seed_value + rounds, max_examples, counts)
                rounds += 1
                if seconds is None or time.monotonic() - start > seconds * (
                    families.index(family) + 1
                ) / len(families):
                    break
        except Finding as exc:
            counts["finding"] += 1
            summary.setdefault("findings", []).append(f"{family}: {exc}")
            status = 1
        summary["families"][family] = {
            "cases": sum(counts.values()),
            "outcomes": dict(counts),
        }
    print(json.dumps(summary))
    sys.exit(status)
