"""kernels.prox: every backend against the NumPy reference, the mathematics
of each operator (optimality conditions, independent minimisation), and
input validation."""

import functools
import math
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from _support import (
    SHAPES,
    SHAPES_1D,
    SHAPES_2D,
    arrays,
    assert_close,
    magnitude,
    rtol,
    thresholds,
    values,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kernels

REF = "numpy"  # the reference backend: the specification
BACKENDS = kernels.available_backends()

# Operators, with fixed parameters derived from x's shape ---------------------


def _ramp(x, lo, hi, shape=None):
    """Per-coordinate parameters: lo..hi over x's shape (or ``shape``)."""
    shape = np.shape(x) if shape is None else shape
    return np.linspace(lo, hi, math.prod(shape)).reshape(shape)


def _divisor(n):
    return next(d for d in (3, 2, 1) if n % d == 0)


def _sizes(n):
    """Contiguous group sizes summing to n, an empty group included."""
    sizes, pattern = [], [3, 1, 0, 2]
    while sum(sizes) < n:
        sizes.append(min(pattern[len(sizes) % 4], n - sum(sizes)))
    return np.array(sizes, dtype=np.int64)


ELEMENTWISE, GROUP, FINITE = "elementwise", "group", "finite"


@dataclass(frozen=True)
class Op:
    name: str
    call: Callable
    kind: str  # ELEMENTWISE: NaN propagates; FINITE: x must be finite
    ndim2: bool = False  # needs a 2-D x
    signed_zeros: bool = False  # keeps the sign of x on its zeros

    def __call__(self, x, backend, **out):
        return self.call(x, backend, **out)


OPS = [
    Op(
        "prox_l1",
        lambda x, b, **o: kernels.prox_l1(x, 0.5, backend=b, **o),
        ELEMENTWISE,
        signed_zeros=True,
    ),
    Op(
        "prox_l1_each",
        lambda x, b, **o: kernels.prox_l1(x, _ramp(x, 0.0, 1.5), backend=b, **o),
        ELEMENTWISE,
        signed_zeros=True,
    ),
    Op(
        "prox_elastic_net",
        lambda x, b, **o: kernels.prox_elastic_net(x, 0.5, 0.25, backend=b, **o),
        ELEMENTWISE,
        signed_zeros=True,
    ),
    Op(
        "prox_elastic_net_each",
        lambda x, b, **o: kernels.prox_elastic_net(
            x, _ramp(x, 0.0, 1.0), 2.0, backend=b, **o
        ),
        ELEMENTWISE,
        signed_zeros=True,
    ),
    Op(
        "prox_group_l1_int",
        lambda x, b, **o: kernels.prox_group_l1(
            x, 0.8, _divisor(np.size(x)), backend=b, **o
        ),
        GROUP,
    ),
    Op(
        "prox_group_l1_sizes",
        lambda x, b, **o: kernels.prox_group_l1(
            x, 0.8, _sizes(np.size(x)), backend=b, **o
        ),
        GROUP,
    ),
    Op(
        "prox_group_l1_weights",
        lambda x, b, **o: kernels.prox_group_l1(
            x,
            0.8,
            _sizes(np.size(x)),
            weights=np.sqrt(_sizes(np.size(x))),
            backend=b,
            **o,
        ),
        GROUP,
    ),
    Op(
        "prox_group_l1_rows",
        lambda x, b, **o: kernels.prox_group_l1(x, 0.8, "rows", backend=b, **o),
        GROUP,
        ndim2=True,
    ),
    Op(
        "prox_group_l1_cols",
        lambda x, b, **o: kernels.prox_group_l1(
            x, 0.8, "cols", weights=_ramp(x, 0.5, 2.0, np.shape(x)[1:]), backend=b, **o
        ),
        GROUP,
        ndim2=True,
    ),
    Op(
        "prox_sparse_group_l1_sizes",
        lambda x, b, **o: kernels.prox_sparse_group_l1(
            x, 0.3, 0.8, _sizes(np.size(x)), backend=b, **o
        ),
        GROUP,
    ),
    Op(
        "prox_sparse_group_l1_rows",
        lambda x, b, **o: kernels.prox_sparse_group_l1(
            x, 0.3, 0.8, "rows", backend=b, **o
        ),
        GROUP,
        ndim2=True,
    ),
    Op(
        "prox_sparse_group_l1_cols",
        lambda x, b, **o: kernels.prox_sparse_group_l1(
            x, 0.3, 0.8, "cols", backend=b, **o
        ),
        GROUP,
        ndim2=True,
    ),
    Op(
        "prox_l0",
        lambda x, b, **o: kernels.prox_l0(x, 0.3, backend=b, **o),
        ELEMENTWISE,
    ),
    Op(
        "keep_top_k",
        lambda x, b, **o: kernels.keep_top_k(x, np.size(x) // 2, backend=b, **o),
        FINITE,
    ),
    Op(
        "project_l1_ball",
        lambda x, b, **o: kernels.project_l1_ball(x, 1.0, backend=b, **o),
        FINITE,
        signed_zeros=True,
    ),
    Op(
        "project_box",
        lambda x, b, **o: kernels.project_box(x, -0.4, 0.7, backend=b, **o),
        ELEMENTWISE,
    ),
    Op(
        "project_box_each",
        lambda x, b, **o: kernels.project_box(
            x, _ramp(x, -1.0, 0.0), _ramp(x, 0.0, 1.0), backend=b, **o
        ),
        ELEMENTWISE,
    ),
    Op(
        "project_box_nonnegative",
        lambda x, b, **o: kernels.project_box(x, 0.0, np.inf, backend=b, **o),
        ELEMENTWISE,
    ),
]
OP_PARAMS = [pytest.param(op, id=op.name) for op in OPS]


def _shape(op, n=7):
    return (3, n) if op.ndim2 else (3 * n,)


def _sample(shape, dtype, rng):
    """Normal values with exact zeros of both signs and entries on the
    thresholds used above."""
    x = rng.normal(scale=1.5, size=shape)
    flat = x.reshape(-1)
    specials = [0.0, -0.0, 0.5, -0.5, 0.3, 0.8, -1.0]
    for i, value in enumerate(specials[: flat.size]):
        flat[(5 * i) % flat.size] = value
    return x.astype(dtype)


def _check_against_reference(op, x, backend, result=None, **out):
    """op(x) on ``backend`` equals op(x) on the reference; x is not modified
    (unless it is ``out``)."""
    before = np.array(x, copy=True)
    expected = op(before.copy(), REF)
    if result is None:
        result = op(x, backend, **out)
    if not out:
        np.testing.assert_array_equal(x, before)
    assert_close(result, expected, magnitude(before), signed_zeros=op.signed_zeros)
    return result


# Every backend equals the reference: hypothesis ------------------------------


@st.composite
def _per_coordinate(draw, shape, elements):
    """A scalar, an array of the full shape, or one broadcast along rows."""
    form = draw(st.sampled_from(["scalar", "full", "row"]))
    if form == "scalar":
        return draw(elements)
    row_shape = shape if form == "full" else shape[-1:]
    return draw(hnp.arrays(np.float64, row_shape, elements=elements))


@given(data=st.data())
def test_soft_threshold_matches_reference(backend, dtype, data):
    x = data.draw(arrays(dtype, data.draw(SHAPES)), label="x")
    t = data.draw(_per_coordinate(x.shape, thresholds()), label="threshold")
    l2 = data.draw(st.one_of(st.just(0.0), st.floats(0, 10)), label="l2")
    scale = magnitude(x)
    for call in (
        lambda b: kernels.prox_l1(x, t, backend=b),
        lambda b: kernels.prox_elastic_net(x, t, l2, backend=b),
    ):
        result = call(backend)
        assert result.dtype == dtype
        assert_close(result, call(REF), scale, signed_zeros=True)


@st.composite
def _groups(draw, shape):
    """A groups argument valid for ``shape``, and the number of groups."""
    size = math.prod(shape)
    kinds = ["int", "sizes"] + (["rows", "cols"] if len(shape) == 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        divisors = [d for d in range(1, size + 1) if size % d == 0] or [1, 3]
        groups = draw(st.sampled_from(divisors))
        return groups, size // groups
    if kind == "sizes":
        cuts = sorted(draw(st.lists(st.integers(0, size), max_size=6)))
        groups = np.diff([0, *cuts, size])
        return groups, groups.size
    return kind, shape[0] if kind == "rows" else shape[1]


@given(data=st.data())
def test_group_shrink_matches_reference(backend, dtype, data):
    x = data.draw(arrays(dtype, data.draw(SHAPES)), label="x")
    groups, n_groups = data.draw(_groups(x.shape), label="groups")
    weights = data.draw(
        st.none() | st.lists(st.floats(0, 5), min_size=n_groups, max_size=n_groups),
        label="weights",
    )
    t = data.draw(thresholds(50.0), label="threshold")
    l1 = data.draw(thresholds(5.0), label="l1")
    for call in (
        lambda b: kernels.prox_group_l1(x, t, groups, weights, backend=b),
        lambda b: kernels.prox_sparse_group_l1(x, l1, t, groups, weights, backend=b),
    ):
        result = call(backend)
        assert result.dtype == dtype
        assert_close(result, call(REF), magnitude(x))


@given(data=st.data())
def test_prox_l0_matches_reference(backend, dtype, data):
    x = data.draw(arrays(dtype, data.draw(SHAPES)), label="x")
    t = data.draw(thresholds(100.0), label="threshold")
    result = kernels.prox_l0(x, t, backend=backend)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, kernels.prox_l0(x, t, backend=REF))


@given(data=st.data())
def test_keep_top_k_matches_reference(backend, dtype, data):
    # few distinct magnitudes, so that ties at the cut are common
    elements = st.one_of(
        values(dtype), st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, -2.0])
    )
    shape = data.draw(st.sampled_from([SHAPES_1D, SHAPES_2D]).flatmap(lambda s: s))
    x = data.draw(hnp.arrays(np.float64, shape, elements=elements), label="x")
    x = x.astype(dtype)
    k = data.draw(st.integers(0, x.size), label="k")
    result = kernels.keep_top_k(x, k, backend=backend)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, kernels.keep_top_k(x, k, backend=REF))


@given(data=st.data())
def test_project_l1_ball_matches_reference(backend, dtype, data):
    x = data.draw(arrays(dtype, data.draw(SHAPES)), label="x")
    radius = data.draw(st.floats(0.01, 1e4), label="radius")
    result = kernels.project_l1_ball(x, radius, backend=backend)
    assert result.dtype == dtype
    assert_close(
        result,
        kernels.project_l1_ball(x, radius, backend=REF),
        magnitude(x),
        signed_zeros=True,
    )


@given(data=st.data())
def test_project_box_matches_reference(backend, dtype, data):
    x = data.draw(arrays(dtype, data.draw(SHAPES)), label="x")
    bound = st.floats(-20, 20) | st.sampled_from([-np.inf, np.inf, 0.0])
    a = data.draw(_per_coordinate(x.shape, bound), label="a")
    b = data.draw(_per_coordinate(x.shape, bound), label="b")
    lower, upper = np.minimum(a, b), np.maximum(a, b)
    if np.ndim(lower) == 0:
        lower, upper = float(lower), float(upper)
    result = kernels.project_box(x, lower, upper, backend=backend)
    assert result.dtype == dtype
    np.testing.assert_array_equal(
        result, kernels.project_box(x, lower, upper, backend=REF)
    )


@given(data=st.data())
def test_cumulative_l1_matches_reference(backend, dtype, data):
    shape = data.draw(SHAPES, label="shape")
    w = data.draw(arrays(dtype, shape, bound=10.0), label="w")
    received = data.draw(arrays(dtype, shape, bound=2.0), label="received")
    total = data.draw(st.floats(0, 5), label="total")
    w_ref, received_ref = w.copy(), received.copy()
    kernels.cumulative_l1(w_ref, received_ref, total, backend=REF)
    assert kernels.cumulative_l1(w, received, total, backend=backend) is w
    assert_close(w, w_ref, 10.0)
    assert_close(received, received_ref, 10.0)


# Every backend equals the reference: edge cases written out -----------------


@pytest.mark.parametrize(
    "op, shape",
    [
        pytest.param(op, shape, id=f"{op.name}-{shape}")
        for op in OPS
        for shape in [(0,), (0, 3), (3, 0), (0, 0)]
        if len(shape) == 2 or not op.ndim2
    ],
)
def test_empty(op, backend, dtype, shape):
    x = np.empty(shape, dtype)
    result = op(x, backend)
    assert result.shape == shape and result.dtype == dtype
    assert op(x, backend, out=x) is x


@pytest.mark.parametrize("op", OP_PARAMS)
@pytest.mark.parametrize("value", [0.0, -0.0, 0.2, -0.3, 0.5, 2.5, -7.0])
def test_single_element(op, backend, dtype, value):
    x = np.full((1, 1) if op.ndim2 else (1,), value, dtype)
    _check_against_reference(op, x, backend)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_all_zeros(op, backend, dtype):
    x = np.zeros(_shape(op), dtype)
    result = _check_against_reference(op, x, backend)
    np.testing.assert_array_equal(result, 0.0)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_negative_zero(op, backend, dtype):
    x = np.array([-0.0, 0.0, -0.0, 1.5, -0.0, -2.0, 0.0, -0.0, 0.25], dtype)
    if op.ndim2:
        x = x.reshape(3, 3)
    result = _check_against_reference(op, x, backend)
    if op.signed_zeros:
        zeros = x == 0
        np.testing.assert_array_equal(np.signbit(result[zeros]), np.signbit(x[zeros]))


@pytest.mark.parametrize("op", OP_PARAMS)
def test_typical_values(op, backend, dtype, rng):
    for n in (1, 2, 7, 33):
        _check_against_reference(op, _sample(_shape(op, n), dtype, rng), backend)


# inf in a group makes the reference compute inf * 0 (NaN, as intended)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("op", OP_PARAMS)
def test_nan_and_inf(op, backend, dtype, rng):
    x = _sample(_shape(op), dtype, rng)
    flat = x.reshape(-1)
    flat[[1, 4, 9]] = [np.nan, np.inf, -np.inf]
    if op.kind == FINITE:
        with pytest.raises(ValueError, match="x must be finite"):
            op(x, backend)
        return
    result = _check_against_reference(op, x, backend)
    if op.kind == ELEMENTWISE:
        assert np.isnan(result.reshape(-1)[1])
        np.testing.assert_array_equal(np.isnan(result), np.isnan(x))


@pytest.mark.parametrize("op", OP_PARAMS)
def test_noncontiguous_input(op, backend, dtype, rng):
    if op.ndim2:
        base = _sample((6, 10), dtype, rng)
        views = [base[::2], base[:, ::2], base[:, 1:], base.T, base[::-1, ::-3]]
    else:
        base = _sample((40,), dtype, rng)
        views = [base[::2], base[::-1], base[1::3], base.reshape(4, 10)[:, 0]]
    for x in views:
        assert not x.flags.c_contiguous
        result = _check_against_reference(op, x, backend)
        assert result.flags.c_contiguous
        np.testing.assert_array_equal(op(np.ascontiguousarray(x), backend), result)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_out_none_allocates(op, backend, dtype, rng):
    x = _sample(_shape(op), dtype, rng)
    result = _check_against_reference(op, x, backend)
    assert result is not x and not np.shares_memory(result, x)
    assert result.flags.c_contiguous and result.flags.writeable


@pytest.mark.parametrize("op", OP_PARAMS)
def test_out_is_x_in_place(op, backend, dtype, rng):
    x = _sample(_shape(op), dtype, rng)
    expected = op(x.copy(), REF)
    result = op(x, backend, out=x)
    assert result is x
    assert_close(x, expected, magnitude(expected), signed_zeros=op.signed_zeros)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_out_is_noncontiguous_x_in_place(op, backend, dtype, rng):
    base = _sample((6, 10) if op.ndim2 else (40,), dtype, rng)
    original = base.copy()
    x = base[:, ::2] if op.ndim2 else base[::2]
    expected = op(np.ascontiguousarray(x), REF)
    assert op(x, backend, out=x) is x
    assert_close(
        np.ascontiguousarray(x),
        expected,
        magnitude(original),
        signed_zeros=op.signed_zeros,
    )
    untouched = (
        (base[:, 1::2], original[:, 1::2]) if op.ndim2 else (base[1::2], original[1::2])
    )
    np.testing.assert_array_equal(*untouched)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_out_given(op, backend, dtype, rng):
    x = _sample(_shape(op), dtype, rng)
    out = np.full_like(x, 99.0)
    result = _check_against_reference(op, x, backend, result=op(x, backend, out=out))
    assert result is out


@pytest.mark.parametrize("op", OP_PARAMS)
def test_out_noncontiguous(op, backend, dtype, rng):
    x = _sample(_shape(op), dtype, rng)
    storage = np.full(x.shape + (2,), 99.0, dtype)
    out = storage[..., 0]
    assert not out.flags.c_contiguous
    result = _check_against_reference(op, x, backend, result=op(x, backend, out=out))
    assert result is out
    np.testing.assert_array_equal(storage[..., 1], 99.0)


@pytest.mark.parametrize("op", OP_PARAMS)
@pytest.mark.parametrize("shift", [1, -1, 3])
def test_out_overlapping_x(op, backend, dtype, rng, shift):
    shape = _shape(op)
    size = math.prod(shape)
    buffer = _sample((size + abs(shift),), dtype, rng)
    x_start, out_start = (shift, 0) if shift > 0 else (0, -shift)
    x = buffer[x_start : x_start + size].reshape(shape)
    out = buffer[out_start : out_start + size].reshape(shape)
    assert np.shares_memory(x, out)
    expected = op(x.copy(), REF)
    result = op(x, backend, out=out)
    assert result is out
    assert_close(out, expected, magnitude(buffer), signed_zeros=op.signed_zeros)


@pytest.mark.parametrize("op", OP_PARAMS)
@pytest.mark.parametrize(
    "source, target",
    [
        (np.int64, np.float64),
        (np.int32, np.float64),
        (np.uint8, np.float64),
        (np.bool_, np.float64),
        (np.float16, np.float32),
        ("list", np.float64),
        ("int list", np.float64),
    ],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_dtype_conversion(op, backend, source, target):
    values_ = np.array([3, -1, 0, 2, -4, 1, 0, 5, -2], dtype=np.int64)
    if source == np.bool_:
        values_ = values_ > 0
    if op.ndim2:
        values_ = values_.reshape(3, 3)
    if source == "list":
        x = values_.astype(float).tolist()
    elif source == "int list":
        x = values_.tolist()
    else:
        x = values_.astype(source)
    result = op(x, backend)
    assert result.dtype == target
    expected = op(np.asarray(x).astype(target), backend)
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_float32_is_never_upcast(op, backend, rng):
    x = _sample(_shape(op), np.float32, rng)
    assert op(x, backend).dtype == np.float32
    with pytest.raises(
        ValueError, match="out must have dtype float32, got dtype float64"
    ):
        op(x, backend, out=np.empty(x.shape, np.float64))


# Thresholds: 0, huge, inf ---------------------------------------------------


def _identity_calls(x, b):
    return [
        kernels.prox_l1(x, 0.0, backend=b),
        kernels.prox_l1(x, np.zeros(x.shape), backend=b),
        kernels.prox_elastic_net(x, 0.0, 0.0, backend=b),
        kernels.prox_group_l1(x, 0.0, 1, backend=b),
        kernels.prox_group_l1(x, 0.0, "rows", backend=b),
        kernels.prox_group_l1(x, 0.0, "cols", backend=b),
        kernels.prox_sparse_group_l1(x, 0.0, 0.0, "cols", backend=b),
        kernels.prox_group_l1(x, 5.0, [x.size], weights=[0.0], backend=b),
        kernels.prox_l0(x, 0.0, backend=b),
        kernels.keep_top_k(x, x.size, backend=b),
        kernels.project_l1_ball(x, np.inf, backend=b),
        kernels.project_l1_ball(x, 1e30, backend=b),
        kernels.project_box(x, -np.inf, np.inf, backend=b),
        kernels.project_box(x, np.full(x.shape, -np.inf), np.inf, backend=b),
    ]


def test_zero_threshold_is_identity(backend, dtype, rng):
    x = _sample((4, 5), dtype, rng)
    for i, result in enumerate(_identity_calls(x, backend)):
        np.testing.assert_array_equal(result, x, err_msg=f"call {i}")
        assert result.dtype == dtype
    for result in _identity_calls(x, backend)[:3]:
        np.testing.assert_array_equal(np.signbit(result), np.signbit(x))


# 1e300 overflows to inf in a float32 threshold; NumPy warns when casting it
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("big", [1e30, 1e300, np.inf])
def test_huge_threshold_zeroes_everything(backend, dtype, rng, big):
    x = _sample((4, 5), dtype, rng)
    soft = 3  # the first calls keep the sign of x on the zeros they make
    calls = [
        lambda b: kernels.prox_l1(x, big, backend=b),
        lambda b: kernels.prox_l1(x, np.full(x.shape[1:], big), backend=b),
        lambda b: kernels.prox_elastic_net(x, big, 1.0, backend=b),
        lambda b: kernels.prox_group_l1(x, big, "rows", backend=b),
        lambda b: kernels.prox_group_l1(x, big, "cols", weights=np.ones(5), backend=b),
        lambda b: kernels.prox_sparse_group_l1(x, big, 0.0, 2, backend=b),
        lambda b: kernels.prox_sparse_group_l1(x, 0.0, big, [20], backend=b),
        lambda b: kernels.prox_l0(x, big, backend=b),
    ]
    for i, call in enumerate(calls):
        result = call(backend)
        np.testing.assert_array_equal(result, 0.0, err_msg=f"call {i}")
        assert result.dtype == dtype
        assert_close(result, call(REF), signed_zeros=i < soft)
    np.testing.assert_array_equal(np.signbit(calls[0](backend)), np.signbit(x))
    # a huge l2 scales the result down to (nearly) nothing
    tiny = kernels.prox_elastic_net(x, 0.5, 1e300, backend=backend)
    assert np.all(np.abs(tiny) <= 1e-290)


def test_finfo_max_threshold(backend, dtype, rng):
    x = _sample((10,), dtype, rng)
    big = float(np.finfo(dtype).max)
    np.testing.assert_array_equal(kernels.prox_l1(x, big, backend=backend), 0.0)
    np.testing.assert_array_equal(kernels.prox_l0(x, big, backend=backend), 0.0)
    np.testing.assert_array_equal(
        kernels.prox_group_l1(x, big, 5, backend=backend), 0.0
    )


def test_infinite_x_with_finite_thresholds(backend, dtype):
    x = np.array([np.inf, -np.inf, 1.0, -3.0], dtype)
    np.testing.assert_array_equal(
        kernels.prox_l1(x, 2.0, backend=backend), [np.inf, -np.inf, 0, -1]
    )
    np.testing.assert_array_equal(
        kernels.prox_l0(x, 2.0, backend=backend), [np.inf, -np.inf, 0, -3]
    )
    np.testing.assert_array_equal(
        kernels.project_box(x, -2.0, 2.0, backend=backend), [2, -2, 1, -2]
    )
    np.testing.assert_array_equal(
        kernels.prox_elastic_net(x, 1.0, 1.0, backend=backend), [np.inf, -np.inf, 0, -1]
    )


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_infinite_threshold_with_nonfinite_x_matches_reference(backend, dtype):
    """inf - inf and inf * 0 are undefined; whatever the reference makes of
    them (NaN today), every backend makes the same."""
    x = np.array([np.inf, -np.inf, np.nan, 1.0, -0.0, -2.0], dtype)
    calls = [
        lambda b: kernels.prox_l1(x, np.inf, backend=b),
        lambda b: kernels.prox_l1(x, np.full(6, np.inf), backend=b),
        lambda b: kernels.prox_elastic_net(x, np.inf, 1.0, backend=b),
        lambda b: kernels.prox_l0(x, np.inf, backend=b),
        lambda b: kernels.prox_group_l1(x, np.inf, 1, backend=b),
        lambda b: kernels.prox_group_l1(x, np.inf, [3, 3], backend=b),
        lambda b: kernels.prox_sparse_group_l1(x, np.inf, 1.0, 2, backend=b),
        lambda b: kernels.project_box(x, -np.inf, np.inf, backend=b),
    ]
    for call in calls:
        assert_close(call(backend), call(REF))


def test_group_with_zero_weight_and_infinite_threshold(backend, dtype):
    """A group of weight 0 is not penalised, whatever the threshold."""
    x = np.array([3.0, -4.0, 1.0, 2.0], dtype)
    result = kernels.prox_group_l1(
        x, np.inf, [2, 2], weights=[0.0, 1.0], backend=backend
    )
    np.testing.assert_array_equal(result, [3.0, -4.0, 0.0, 0.0])


def test_box_bounds(backend, dtype, rng):
    x = _sample((30,), dtype, rng)
    np.testing.assert_array_equal(
        kernels.project_box(x, 0.25, 0.25, backend=backend), 0.25
    )
    np.testing.assert_array_equal(
        kernels.project_box(x, 0.0, np.inf, backend=backend), np.maximum(x, 0)
    )
    np.testing.assert_array_equal(
        kernels.project_box(x, -np.inf, 0.0, backend=backend), np.minimum(x, 0)
    )
    lower, upper = _ramp(x, -1.0, 0.2), _ramp(x, -0.2, 1.0)
    result = kernels.project_box(x, lower, upper, backend=backend)
    np.testing.assert_array_equal(
        result, np.clip(x, lower.astype(dtype), upper.astype(dtype))
    )
    assert np.all(result >= lower.astype(dtype)) and np.all(
        result <= upper.astype(dtype)
    )
    # one scalar and one array bound
    upper = _ramp(x, 0.2, 1.0)
    result = kernels.project_box(x, 0.0, upper, backend=backend)
    np.testing.assert_array_equal(result, np.clip(x, 0.0, upper.astype(dtype)))


@pytest.mark.parametrize(
    "x, radius",
    [
        ([1.0, -2.0, 0.5], 0.0),
        ([1.0, -2.0], 1e-300),
        ([1.0, 2.0], 1e-17),
        ([3e38, -3e38, 1.0], 1.0),
    ],
)
def test_project_l1_ball_tiny_radius(backend, dtype, x, radius):
    """Radius 0, or below the rounding of max|x|: everything (nearly) zero."""
    x = np.array(x, dtype)
    result = kernels.project_l1_ball(x, radius, backend=backend)
    assert result.dtype == dtype
    assert np.abs(result).sum(dtype=np.float64) <= radius * (1 + 1e-6) + 4 * np.spacing(
        np.abs(x).max()
    )


# Mathematics: optimality ------------------------------------------------------


def _objective_tolerance(dtype, x):
    """How much worse than the best found a prox value may be: rounding to
    dtype moves the point by about eps * |x|, which costs that much times
    the scale of the objective."""
    return (1e-6 if np.dtype(dtype) == np.float32 else 1e-10) * magnitude(x) ** 2


def _grid_minimum(x, penalty, lower=None, upper=None, points=4001):
    """For each coordinate, min over a fine grid (plus 0, x_i and the box
    bounds) of 0.5 * (z - x_i)^2 + penalty(z, i)."""
    x = np.asarray(x, np.float64).reshape(-1)
    lo = np.minimum(x, 0) - 1.0 - np.abs(x) if lower is None else np.full(x.size, lower)
    hi = np.maximum(x, 0) + 1.0 + np.abs(x) if upper is None else np.full(x.size, upper)
    grid = np.linspace(lo, hi, points).T  # (n, points)
    extra = [np.zeros_like(x), np.clip(x, lo, hi)]
    grid = np.concatenate([grid, np.stack(extra, axis=1)], axis=1)
    if lower is None:
        grid = np.concatenate([grid, np.zeros((x.size, 1))], axis=1)
    values_ = 0.5 * (grid - x[:, None]) ** 2 + penalty(grid)
    return values_.min(axis=1)


SEPARABLE = {
    # name: (call, penalty on a (n, points) grid, box) with x of size 12
    "l1": (
        lambda x, b: kernels.prox_l1(x, 0.7, backend=b),
        lambda z: 0.7 * np.abs(z),
        None,
    ),
    "l1_each": (
        lambda x, b: kernels.prox_l1(x, _ramp(x, 0.0, 2.0), backend=b),
        lambda z: _ramp(None, 0.0, 2.0, (12,))[:, None] * np.abs(z),
        None,
    ),
    "elastic_net": (
        lambda x, b: kernels.prox_elastic_net(x, 0.6, 1.5, backend=b),
        lambda z: 0.6 * np.abs(z) + 0.75 * z**2,
        None,
    ),
    "l0": (
        lambda x, b: kernels.prox_l0(x, 0.4, backend=b),
        lambda z: 0.4 * (z != 0),
        None,
    ),
    "box": (
        lambda x, b: kernels.project_box(x, -0.5, 0.75, backend=b),
        lambda z: 0.0 * z,
        (-0.5, 0.75),
    ),
}


@pytest.mark.parametrize("name", sorted(SEPARABLE))
def test_separable_prox_minimises_on_a_grid(name, backend, dtype, rng):
    call, penalty, box = SEPARABLE[name]
    x = _sample((12,), dtype, rng)
    x[0] = 3.0  # at least one coordinate far outside every threshold
    p = call(x, backend).astype(np.float64)
    xd = x.astype(np.float64)
    achieved = 0.5 * (p - xd) ** 2 + penalty(p[:, None])[:, 0]
    lower, upper = (None, None) if box is None else box
    best = _grid_minimum(xd, penalty, lower, upper)
    assert np.all(achieved <= best + _objective_tolerance(dtype, x)), achieved - best
    if box is not None:
        assert np.all((p >= box[0]) & (p <= box[1]))


def test_prox_l1_subgradient_condition(backend, dtype, rng):
    """0 in p - x + t * d|p|: |x_i| <= t_i where p_i = 0, and
    x_i - p_i = t_i * sign(p_i) elsewhere."""
    x = _sample((50,), dtype, rng)
    tol = 4 * rtol(dtype) * magnitude(x)
    for t in (0.7, _ramp(x, 0.0, 3.0)):
        p = kernels.prox_l1(x, t, backend=backend).astype(np.float64)
        xd = x.astype(np.float64)
        t = np.broadcast_to(np.asarray(t, np.float64), x.shape)
        zero = p == 0
        assert np.all(np.abs(xd[zero]) <= t[zero] + tol)
        np.testing.assert_allclose(
            xd[~zero] - p[~zero], t[~zero] * np.sign(p[~zero]), atol=tol
        )
        assert np.all(np.sign(p[~zero]) == np.sign(xd[~zero]))


def test_prox_elastic_net_subgradient_condition(backend, dtype, rng):
    """0 in (1 + l2) p - x + l1 * d|p|."""
    x = _sample((50,), dtype, rng)
    l1, l2 = 0.6, 0.8
    tol = 4 * rtol(dtype) * magnitude(x)
    p = kernels.prox_elastic_net(x, l1, l2, backend=backend).astype(np.float64)
    xd = x.astype(np.float64)
    zero = p == 0
    assert np.all(np.abs(xd[zero]) <= l1 + tol)
    np.testing.assert_allclose(
        xd[~zero] - (1 + l2) * p[~zero], l1 * np.sign(p[~zero]), atol=tol
    )


def test_prox_l0_rule(backend, dtype, rng):
    x = _sample((200,), dtype, rng)
    t = 0.3
    p = kernels.prox_l0(x, t, backend=backend)
    keep = np.abs(x) > dtype(np.sqrt(2 * t))
    np.testing.assert_array_equal(p[keep], x[keep])
    np.testing.assert_array_equal(p[~keep], 0.0)


def _group_indices(groups, shape):
    """The flat (C-order) indices of each group."""
    size = math.prod(shape)
    flat = np.arange(size)
    if isinstance(groups, str):
        grid = flat.reshape(shape)
        return list(grid if groups == "rows" else grid.T)
    if np.ndim(groups) == 0:
        return np.split(flat, size // groups) if size else []
    return np.split(flat, np.cumsum(groups)[:-1])


GROUP_CASES = {
    "int": ((12,), 3, None),
    "sizes": ((12,), [4, 0, 1, 5, 2], None),
    "weights": ((12,), [4, 0, 1, 5, 2], [0.5, 1.0, 0.0, 2.0, 1.0]),
    "rows": ((3, 4), "rows", None),
    "cols": ((3, 4), "cols", [1.0, 0.5, 2.0, 0.0]),
}


def _group_x(shape, dtype, rng):
    x = _sample(shape, dtype, rng)
    x.reshape(-1)[:3] = [3.0, -2.0, 2.5]  # a group well outside its threshold
    return x


@pytest.mark.parametrize("case", sorted(GROUP_CASES))
@pytest.mark.parametrize("l1", [0.0, 0.4])
def test_group_prox_subgradient_condition(case, l1, backend, dtype, rng):
    """With y = soft(x, l1): a group is zero iff ||y_g|| <= t * w_g, and
    otherwise x_i - p_i = l1 * sign(p_i) + t * w_g * p_i / ||p_g|| on its
    non-zero entries, |x_i| <= l1 on its zero entries."""
    shape, groups, weights = GROUP_CASES[case]
    t = 0.9
    x = _group_x(shape, dtype, rng)
    p = kernels.prox_sparse_group_l1(x, l1, t, groups, weights, backend=backend)
    p, xd = p.astype(np.float64).reshape(-1), x.astype(np.float64).reshape(-1)
    tol = 8 * rtol(dtype) * magnitude(x)
    indices = _group_indices(groups, shape)
    w = np.ones(len(indices)) if weights is None else np.asarray(weights)
    nonzero_groups = 0
    for g, idx in enumerate(indices):
        y = np.sign(xd[idx]) * np.maximum(np.abs(xd[idx]) - l1, 0)
        threshold = t * w[g]
        norm_p = np.linalg.norm(p[idx])
        if norm_p == 0:
            assert np.linalg.norm(y) <= threshold + tol, (
                g,
                np.linalg.norm(y),
                threshold,
            )
            continue
        nonzero_groups += 1
        assert np.linalg.norm(y) >= threshold - tol
        on = p[idx] != 0
        assert np.all(np.abs(xd[idx][~on]) <= l1 + tol)
        expected = l1 * np.sign(p[idx][on]) + threshold * p[idx][on] / norm_p
        np.testing.assert_allclose(xd[idx][on] - p[idx][on], expected, atol=tol)
    assert nonzero_groups > 0
    if l1 == 0:
        same = kernels.prox_group_l1(x, t, groups, weights, backend=backend)
        np.testing.assert_array_equal(same.reshape(-1), p.astype(dtype))


@functools.cache
def _group_problem(case, l1):
    """x (float32 values, exact in both dtypes), the prox objective and the
    best value a derivative-free search finds from several starts; computed
    once, shared by the backends and dtypes."""
    optimize = pytest.importorskip("scipy.optimize")
    shape, groups, weights = GROUP_CASES[case]
    t = 0.9
    rng = np.random.default_rng(zlib.crc32(f"{case} {l1}".encode()))
    x = _group_x(shape, np.float32, rng).astype(np.float64)
    indices = _group_indices(groups, shape)
    w = np.ones(len(indices)) if weights is None else np.asarray(weights, float)
    members = np.zeros((len(indices), x.size))
    for g, idx in enumerate(indices):
        members[g, idx] = 1.0
    xd = x.astype(np.float64).reshape(-1)

    def objective(z):
        norms = np.sqrt(members @ (z * z))
        return 0.5 * np.sum((z - xd) ** 2) + l1 * np.abs(z).sum() + t * (w @ norms)

    reference = kernels.prox_sparse_group_l1(x, l1, t, groups, weights, backend=REF)
    starts = [xd, reference.reshape(-1), rng.normal(size=xd.size)]
    best = min(
        optimize.minimize(
            objective,
            z0,
            method="Powell",
            options={"xtol": 1e-10, "ftol": 1e-14, "maxfev": 10000},
        ).fun
        for z0 in starts
    )
    return x, objective, best


@pytest.mark.parametrize("case", sorted(GROUP_CASES))
@pytest.mark.parametrize("l1", [0.0, 0.4])
def test_group_prox_minimises(case, l1, backend, dtype):
    """No derivative-free search from several starts finds a point with a
    lower prox objective than the result."""
    x, objective, best = _group_problem(case, l1)
    x = x.astype(dtype)
    _, groups, weights = GROUP_CASES[case]
    p = kernels.prox_sparse_group_l1(x, l1, 0.9, groups, weights, backend=backend)
    achieved = objective(p.astype(np.float64).reshape(-1))
    assert achieved <= best + _objective_tolerance(dtype, x), achieved - best


# project_l1_ball --------------------------------------------------------------


def _l1(a):
    return float(np.abs(np.asarray(a, np.float64)).sum())


@pytest.mark.parametrize("radius", [0.1, 1.0, 3.0, 25.0, 1e3])
def test_project_l1_ball_properties(backend, dtype, rng, radius):
    x = _sample((4, 8), dtype, rng)
    p = kernels.project_l1_ball(x, radius, backend=backend)
    assert p.dtype == dtype and p.shape == x.shape
    pd, xd = p.astype(np.float64), x.astype(np.float64)
    slack = 8 * rtol(dtype) * max(radius, 1.0)
    assert _l1(p) <= radius + slack  # in the ball
    if _l1(x) <= radius:
        np.testing.assert_array_equal(p, x)  # x itself when inside
        return
    assert _l1(p) >= radius - slack  # on the sphere when outside
    # a soft threshold: same signs, one common shrinkage tau on the support
    on = pd != 0
    assert np.all(np.sign(pd[on]) == np.sign(xd[on]))
    shrink = np.abs(xd[on]) - np.abs(pd[on])
    np.testing.assert_allclose(shrink, shrink.mean(), atol=slack * magnitude(x))
    assert np.all(np.abs(xd[~on]) <= shrink.mean() + slack * magnitude(x))
    # the optimality certificate of a projection on a convex set:
    # <x - p, z - p> <= 0 for every z in the ball, i.e. (the maximum over the
    # ball being at a vertex) radius * ||x - p||_inf <= <x - p, p>
    g = (xd - pd).reshape(-1)
    assert radius * np.abs(g).max() <= g @ pd.reshape(-1) + slack * magnitude(x) ** 2


def test_project_l1_ball_is_closer_than_points_of_the_ball(backend, dtype, rng):
    radius = 2.0
    x = _sample((10,), dtype, rng) * 3
    p = kernels.project_l1_ball(x, radius, backend=backend).astype(np.float64)
    xd = x.astype(np.float64)
    directions = rng.laplace(size=(2000, 10))
    directions /= np.abs(directions).sum(axis=1, keepdims=True)
    points = directions * radius * rng.random((2000, 1)) ** 0.1
    vertices = np.concatenate([np.eye(10), -np.eye(10)]) * radius
    near = p + rng.normal(scale=1e-2, size=(500, 10))
    near /= np.maximum(1.0, np.abs(near).sum(axis=1, keepdims=True) / radius)
    candidates = np.concatenate([points, vertices, near])
    assert np.all(np.abs(candidates).sum(axis=1) <= radius * (1 + 1e-12))
    achieved = np.sum((p - xd) ** 2)
    distances = np.sum((candidates - xd) ** 2, axis=1)
    assert achieved <= distances.min() + _objective_tolerance(dtype, x)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_project_l1_ball_matches_slsqp(backend, dtype, rng, n):
    """Against SLSQP on the smooth split form z = a - b, a, b >= 0,
    sum(a + b) <= radius."""
    optimize = pytest.importorskip("scipy.optimize")
    radius = 1.5
    x = _sample((n,), dtype, rng) * 2
    x[0] = 4.0
    xd = x.astype(np.float64)

    def objective(ab):
        return 0.5 * np.sum((ab[:n] - ab[n:] - xd) ** 2)

    def gradient(ab):
        r = ab[:n] - ab[n:] - xd
        return np.concatenate([r, -r])

    solution = optimize.minimize(
        objective,
        np.zeros(2 * n),
        jac=gradient,
        method="SLSQP",
        bounds=[(0, None)] * (2 * n),
        constraints=[
            {
                "type": "ineq",
                "fun": lambda ab: radius - ab.sum(),
                "jac": lambda ab: -np.ones(2 * n),
            }
        ],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert solution.success, solution.message
    z = solution.x[:n] - solution.x[n:]
    p = kernels.project_l1_ball(x, radius, backend=backend)
    np.testing.assert_allclose(p, z, atol=1e-5 if dtype == np.float64 else 1e-4)
    assert objective(np.concatenate([np.maximum(p, 0), np.maximum(-p, 0)])) <= (
        solution.fun + _objective_tolerance(dtype, x)
    )


# keep_top_k ---------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 5, 17, 29, 30])
def test_keep_top_k_keeps_the_k_largest(backend, dtype, rng, k):
    magnitudes = rng.permutation(30) + 1.0
    x = (magnitudes * rng.choice([-1.0, 1.0], 30)).astype(dtype).reshape(5, 6)
    result = kernels.keep_top_k(x, k, backend=backend)
    assert result.dtype == dtype and result.shape == x.shape
    kept = result != 0
    assert kept.sum() == k
    np.testing.assert_array_equal(result[kept], x[kept])
    if 0 < k < x.size:
        assert np.abs(x[kept]).min() > np.abs(x[~kept]).max()


@pytest.mark.parametrize("k", range(0, 13))
def test_keep_top_k_ties_go_to_earlier_entries(backend, dtype, rng, k):
    x = rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], size=12).astype(dtype)
    x = x.reshape(3, 4)
    order = np.argsort(-np.abs(x).reshape(-1), kind="stable")
    expected = np.zeros(12, dtype)
    expected[order[:k]] = x.reshape(-1)[order[:k]]
    result = kernels.keep_top_k(x, k, backend=backend)
    np.testing.assert_array_equal(result.reshape(-1), expected)
    assert np.count_nonzero(result) == k


def test_keep_top_k_ties_example(backend):
    x = np.array([1.0, -2.0, 2.0, 1.0, -1.0, 2.0])
    np.testing.assert_array_equal(
        kernels.keep_top_k(x, 2, backend=backend), [0, -2, 2, 0, 0, 0]
    )
    np.testing.assert_array_equal(
        kernels.keep_top_k(x, 4, backend=backend), [1, -2, 2, 0, 0, 2]
    )
    np.testing.assert_array_equal(
        kernels.keep_top_k(x, np.int64(5), backend=backend), [1, -2, 2, 1, 0, 2]
    )


# cumulative_l1 --------------------------------------------------------------------


def _tsuruoka_loop(w, received, total):
    """ALGORITHMS.md section 3, one weight at a time, in w's dtype."""
    w, received = w.copy(), received.copy()
    u = w.dtype.type(total)
    zero = w.dtype.type(0)
    for i in range(w.size):
        z = w.flat[i]
        if z > 0:
            w.flat[i] = max(zero, z - (u + received.flat[i]))
        elif z < 0:
            w.flat[i] = min(zero, z + (u - received.flat[i]))
        received.flat[i] += w.flat[i] - z
    return w, received


def test_cumulative_l1_training_loop(backend, dtype, rng):
    """A simulated training loop: a sparse gradient step, then the penalty
    with a decaying step eta_k = eta_0 * alpha^(k / T)."""
    w = rng.normal(size=(4, 10)).astype(dtype)
    received = np.zeros_like(w)
    total = 0.0
    eta0, alpha, steps, strength, n = 0.5, 0.5, 30, 1.0, 10
    for k in range(steps):
        eta = eta0 * alpha ** (k / steps)
        grad = rng.normal(size=w.shape) * (rng.random(w.shape) < 0.3)
        zero_before = w == 0
        w -= (eta * grad).astype(dtype)
        total += eta * strength / n
        z = w.copy()
        expected_w, expected_received = _tsuruoka_loop(w, received, total)
        assert kernels.cumulative_l1(w, received, total, backend=backend) is w
        assert_close(w, expected_w, magnitude(z))
        assert_close(received, expected_received, magnitude(z, total))
        # clipped at zero, never crossing it, never growing
        assert np.all((w == 0) | (np.sign(w) == np.sign(z)))
        assert np.all(np.abs(w) <= np.abs(z))
        # a zero weight that no gradient moved stays exactly zero
        np.testing.assert_array_equal(w[zero_before & (grad == 0)], 0.0)
        # |q| never exceeds the total penalty
        slack = 4 * rtol(dtype) * magnitude(z, total)
        assert np.all(np.abs(received) <= total + slack)
    assert 0 < np.count_nonzero(w == 0) < w.size  # sparse, not empty


def test_cumulative_l1_without_penalty_is_a_no_op(backend, dtype, rng):
    w = _sample((20,), dtype, rng)
    received = np.zeros_like(w)
    before = w.copy()
    kernels.cumulative_l1(w, received, 0.0, backend=backend)
    np.testing.assert_array_equal(w, before)
    np.testing.assert_array_equal(received, 0.0)


def test_cumulative_l1_example(backend, dtype):
    w = np.array([1.0, -1.0, 0.2, -0.2, 0.0, 0.5], dtype)
    received = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -0.25], dtype)
    kernels.cumulative_l1(w, received, 0.5, backend=backend)
    # 0.5 - (0.5 - 0.25): this weight already received 0.25 of the 0.5
    np.testing.assert_allclose(w, [0.5, -0.5, 0.0, 0.0, 0.0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(received, [-0.5, 0.5, -0.2, 0.2, 0.0, -0.5], rtol=1e-6)


def test_cumulative_l1_empty_and_2d(backend, dtype):
    w, received = np.empty((0, 3), dtype), np.empty((0, 3), dtype)
    assert kernels.cumulative_l1(w, received, 1.0, backend=backend) is w
    w = np.array([[1.0, -3.0], [0.1, 2.0]], dtype)
    received = np.zeros_like(w)
    kernels.cumulative_l1(w, received, 0.5, backend=backend)
    np.testing.assert_allclose(w, [[0.5, -2.5], [0.0, 1.5]])


# Errors ------------------------------------------------------------------------

X = np.array([1.0, -2.0, 3.0, 0.5])
X2 = X.reshape(2, 2)


def _readonly(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


ERRORS = {
    # thresholds
    "negative threshold": (
        lambda b: kernels.prox_l1(X, -1.0, backend=b),
        ValueError,
        r"threshold must be >= 0",
    ),
    "NaN threshold": (
        lambda b: kernels.prox_l1(X, np.nan, backend=b),
        ValueError,
        "threshold must not be NaN",
    ),
    "negative per-coordinate threshold": (
        lambda b: kernels.prox_l1(X, [1, -1, 0, 0], backend=b),
        ValueError,
        "threshold must be >= 0 everywhere",
    ),
    "NaN per-coordinate threshold": (
        lambda b: kernels.prox_l1(X, [1, np.nan, 0, 0], backend=b),
        ValueError,
        "threshold must not contain NaN",
    ),
    "threshold of the wrong shape": (
        lambda b: kernels.prox_l1(X, [1.0, 2.0], backend=b),
        ValueError,
        r"threshold must be a scalar or broadcastable to shape \(4,\)",
    ),
    "string threshold": (
        lambda b: kernels.prox_l1(X, "1", backend=b),
        TypeError,
        "threshold must be a real number",
    ),
    "None threshold": (
        lambda b: kernels.prox_l1(X, None, backend=b),
        TypeError,
        "threshold must be a real number",
    ),
    "complex threshold": (
        lambda b: kernels.prox_l1(X, 1 + 1j, backend=b),
        TypeError,
        "threshold must be a real number",
    ),
    "complex per-coordinate threshold": (
        lambda b: kernels.prox_l1(X, np.ones(4, complex), backend=b),
        TypeError,
        "threshold must hold real numbers",
    ),
    "bool threshold": (
        lambda b: kernels.prox_l1(X, True, backend=b),
        TypeError,
        "threshold must be a real number",
    ),
    "negative elastic l1": (
        lambda b: kernels.prox_elastic_net(X, -1, 0, backend=b),
        ValueError,
        "l1 must be >= 0",
    ),
    "NaN elastic l1 per coordinate": (
        lambda b: kernels.prox_elastic_net(X, np.full(4, np.nan), 0, backend=b),
        ValueError,
        "l1 must not contain NaN",
    ),
    "negative l2": (
        lambda b: kernels.prox_elastic_net(X, 1, -1, backend=b),
        ValueError,
        "l2 must be >= 0",
    ),
    "NaN l2": (
        lambda b: kernels.prox_elastic_net(X, 1, np.nan, backend=b),
        ValueError,
        "l2 must not be NaN",
    ),
    "infinite l2": (
        lambda b: kernels.prox_elastic_net(X, 1, np.inf, backend=b),
        ValueError,
        "l2 must be finite",
    ),
    "negative group threshold": (
        lambda b: kernels.prox_group_l1(X, -1, 2, backend=b),
        ValueError,
        "threshold must be >= 0",
    ),
    "NaN group threshold": (
        lambda b: kernels.prox_group_l1(X, np.nan, 2, backend=b),
        ValueError,
        "threshold must not be NaN",
    ),
    "per-coordinate group threshold": (
        lambda b: kernels.prox_group_l1(X, np.ones(4), 2, backend=b),
        TypeError,
        "threshold must be a real number",
    ),
    "negative sparse-group l1": (
        lambda b: kernels.prox_sparse_group_l1(X, -1, 1, 2, backend=b),
        ValueError,
        "l1 must be >= 0",
    ),
    "NaN sparse-group l1": (
        lambda b: kernels.prox_sparse_group_l1(X, np.nan, 1, 2, backend=b),
        ValueError,
        "l1 must not be NaN",
    ),
    "negative sparse-group threshold": (
        lambda b: kernels.prox_sparse_group_l1(X, 1, -1, 2, backend=b),
        ValueError,
        "threshold must be >= 0",
    ),
    "negative l0 threshold": (
        lambda b: kernels.prox_l0(X, -0.5, backend=b),
        ValueError,
        "threshold must be >= 0",
    ),
    "NaN l0 threshold": (
        lambda b: kernels.prox_l0(X, np.nan, backend=b),
        ValueError,
        "threshold must not be NaN",
    ),
    "negative radius": (
        lambda b: kernels.project_l1_ball(X, -1, backend=b),
        ValueError,
        "radius must be >= 0",
    ),
    "NaN radius": (
        lambda b: kernels.project_l1_ball(X, np.nan, backend=b),
        ValueError,
        "radius must not be NaN",
    ),
    "string radius": (
        lambda b: kernels.project_l1_ball(X, "1", backend=b),
        TypeError,
        "radius must be a real number",
    ),
    # groups
    "sizes not adding up": (
        lambda b: kernels.prox_group_l1(X, 1, [1, 2], backend=b),
        ValueError,
        r"groups \(group sizes\) must add up to x.size=4, got 3",
    ),
    "sizes adding up to more": (
        lambda b: kernels.prox_group_l1(X, 1, [3, 2], backend=b),
        ValueError,
        r"groups \(group sizes\) must add up to x.size=4, got 5",
    ),
    "group size not dividing": (
        lambda b: kernels.prox_group_l1(X, 1, 3, backend=b),
        ValueError,
        "groups=3 must divide x.size=4",
    ),
    "zero group size": (
        lambda b: kernels.prox_group_l1(X, 1, 0, backend=b),
        ValueError,
        "groups must be >= 1",
    ),
    "negative group size": (
        lambda b: kernels.prox_group_l1(X, 1, -2, backend=b),
        ValueError,
        "groups must be >= 1",
    ),
    "float group size": (
        lambda b: kernels.prox_group_l1(X, 1, 2.0, backend=b),
        TypeError,
        "groups must be an integer",
    ),
    "bool group size": (
        lambda b: kernels.prox_group_l1(X, 1, True, backend=b),
        TypeError,
        "groups must be an integer",
    ),
    "rows on 1-D x": (
        lambda b: kernels.prox_group_l1(X, 1, "rows", backend=b),
        ValueError,
        r'groups="rows" needs a 2-D x, got x with shape \(4,\)',
    ),
    "cols on 1-D x": (
        lambda b: kernels.prox_group_l1(X, 1, "cols", backend=b),
        ValueError,
        'groups="cols" needs a 2-D x',
    ),
    "rows on 3-D x": (
        lambda b: kernels.prox_group_l1(np.ones((2, 2, 2)), 1, "rows", backend=b),
        ValueError,
        'groups="rows" needs a 2-D x',
    ),
    "unknown group layout": (
        lambda b: kernels.prox_group_l1(X2, 1, "diag", backend=b),
        ValueError,
        'groups must be "rows", "cols"',
    ),
    "negative sizes": (
        lambda b: kernels.prox_group_l1(X, 1, [3, -1, 2], backend=b),
        ValueError,
        r"groups \(group sizes\) must be non-negative",
    ),
    "float sizes": (
        lambda b: kernels.prox_group_l1(X, 1, [2.0, 2.0], backend=b),
        TypeError,
        r"groups \(group sizes\) must be integers",
    ),
    "2-D sizes": (
        lambda b: kernels.prox_group_l1(X, 1, [[2, 2]], backend=b),
        ValueError,
        "groups must be a 1-D array of integer group sizes",
    ),
    "weights too short": (
        lambda b: kernels.prox_group_l1(X, 1, 2, weights=[1.0], backend=b),
        ValueError,
        r"weights must have one entry per group, shape \(2,\), got shape \(1,\)",
    ),
    "weights too long for rows": (
        lambda b: kernels.prox_group_l1(X2, 1, "rows", weights=[1, 1, 1], backend=b),
        ValueError,
        r"weights must have one entry per group, shape \(2,\)",
    ),
    "weights of sparse group": (
        lambda b: kernels.prox_sparse_group_l1(
            X2, 1, 1, "cols", weights=[[1, 1]], backend=b
        ),
        ValueError,
        r"weights must have one entry per group",
    ),
    "negative weights": (
        lambda b: kernels.prox_group_l1(X, 1, 2, weights=[1.0, -1.0], backend=b),
        ValueError,
        "weights must be finite and non-negative",
    ),
    "NaN weights": (
        lambda b: kernels.prox_group_l1(X, 1, 2, weights=[1.0, np.nan], backend=b),
        ValueError,
        "weights must be finite and non-negative",
    ),
    "infinite weights": (
        lambda b: kernels.prox_group_l1(X, 1, 2, weights=[1.0, np.inf], backend=b),
        ValueError,
        "weights must be finite and non-negative",
    ),
    "complex weights": (
        lambda b: kernels.prox_group_l1(X, 1, 2, weights=[1j, 1], backend=b),
        TypeError,
        "weights must hold real numbers",
    ),
    # box
    "lower above upper": (
        lambda b: kernels.project_box(X, 1.0, 0.0, backend=b),
        ValueError,
        r"lower must be <= upper, got lower=1.0 > upper=0.0",
    ),
    "lower above upper somewhere": (
        lambda b: kernels.project_box(X, [0, 0, 2, 0], 1.0, backend=b),
        ValueError,
        "lower must be <= upper everywhere",
    ),
    "NaN lower": (
        lambda b: kernels.project_box(X, np.nan, 1.0, backend=b),
        ValueError,
        "lower must not be NaN",
    ),
    "NaN upper": (
        lambda b: kernels.project_box(X, 0.0, np.nan, backend=b),
        ValueError,
        "upper must not be NaN",
    ),
    "NaN lower per coordinate": (
        lambda b: kernels.project_box(X, [0, np.nan, 0, 0], 1.0, backend=b),
        ValueError,
        "lower must not contain NaN",
    ),
    "upper of the wrong shape": (
        lambda b: kernels.project_box(X, 0.0, [1.0, 2.0], backend=b),
        ValueError,
        "upper must be a scalar or broadcastable to shape",
    ),
    "string lower": (
        lambda b: kernels.project_box(X, "0", 1.0, backend=b),
        TypeError,
        "lower must be a real number",
    ),
    # k
    "negative k": (
        lambda b: kernels.keep_top_k(X, -1, backend=b),
        ValueError,
        "k must be >= 0",
    ),
    "k above x.size": (
        lambda b: kernels.keep_top_k(X, 5, backend=b),
        ValueError,
        "k must be <= 4",
    ),
    "float k": (
        lambda b: kernels.keep_top_k(X, 2.0, backend=b),
        TypeError,
        "k must be an integer",
    ),
    "bool k": (
        lambda b: kernels.keep_top_k(X, True, backend=b),
        TypeError,
        "k must be an integer",
    ),
    "string k": (
        lambda b: kernels.keep_top_k(X, "2", backend=b),
        TypeError,
        "k must be an integer",
    ),
    "None k": (
        lambda b: kernels.keep_top_k(X, None, backend=b),
        TypeError,
        "k must be an integer",
    ),
    # finite x
    "NaN x for keep_top_k": (
        lambda b: kernels.keep_top_k([1.0, np.nan], 1, backend=b),
        ValueError,
        "x must be finite",
    ),
    "inf x for keep_top_k": (
        lambda b: kernels.keep_top_k([1.0, -np.inf], 1, backend=b),
        ValueError,
        "x must be finite",
    ),
    "NaN x for project_l1_ball": (
        lambda b: kernels.project_l1_ball([np.nan, 1.0], 1.0, backend=b),
        ValueError,
        "x must be finite",
    ),
    "inf x for project_l1_ball": (
        lambda b: kernels.project_l1_ball([np.inf, 1.0], 10.0, backend=b),
        ValueError,
        "x must be finite",
    ),
    "inf x for project_l1_ball inside": (
        lambda b: kernels.project_l1_ball([np.inf, 1.0], np.inf, backend=b),
        ValueError,
        "x must be finite",
    ),
    # x types
    "ragged x": (
        lambda b: kernels.prox_l1([[1.0, 2.0], [3.0]], 1.0, backend=b),
        TypeError,
        "x must be array-like",
    ),
    "string x": (
        lambda b: kernels.prox_l1(np.array(["a", "b"]), 1.0, backend=b),
        TypeError,
        "x must hold real numbers",
    ),
    # cumulative_l1
    "negative total": (
        lambda b: kernels.cumulative_l1(X.copy(), np.zeros(4), -1.0, backend=b),
        ValueError,
        "total must be >= 0",
    ),
    "NaN total": (
        lambda b: kernels.cumulative_l1(X.copy(), np.zeros(4), np.nan, backend=b),
        ValueError,
        "total must not be NaN",
    ),
    "infinite total": (
        lambda b: kernels.cumulative_l1(X.copy(), np.zeros(4), np.inf, backend=b),
        ValueError,
        "total must be finite",
    ),
    "non-contiguous w": (
        lambda b: kernels.cumulative_l1(np.zeros(8)[::2], np.zeros(4), 1.0, backend=b),
        ValueError,
        "w must be C-contiguous",
    ),
    "Fortran-ordered w": (
        lambda b: kernels.cumulative_l1(
            np.zeros((3, 2)).T, np.zeros((2, 3)), 1.0, backend=b
        ),
        ValueError,
        "w must be C-contiguous",
    ),
    "non-contiguous received": (
        lambda b: kernels.cumulative_l1(np.zeros(4), np.zeros(8)[::2], 1.0, backend=b),
        ValueError,
        "received must be C-contiguous",
    ),
    "read-only w": (
        lambda b: kernels.cumulative_l1(_readonly(X), np.zeros(4), 1.0, backend=b),
        ValueError,
        "w must be writable",
    ),
    "read-only received": (
        lambda b: kernels.cumulative_l1(
            X.copy(), _readonly(np.zeros(4)), 1.0, backend=b
        ),
        ValueError,
        "received must be writable",
    ),
    "integer w": (
        lambda b: kernels.cumulative_l1(
            np.zeros(4, np.int64), np.zeros(4), 1.0, backend=b
        ),
        TypeError,
        "w must be float32 or float64, got dtype int64",
    ),
    "float16 w": (
        lambda b: kernels.cumulative_l1(
            np.zeros(4, np.float16), np.zeros(4), 1.0, backend=b
        ),
        TypeError,
        "w must be float32 or float64, got dtype float16",
    ),
    "integer received": (
        lambda b: kernels.cumulative_l1(
            np.zeros(4), np.zeros(4, np.int32), 1.0, backend=b
        ),
        TypeError,
        "received must be float32 or float64",
    ),
    "list w": (
        lambda b: kernels.cumulative_l1([1.0, 2.0], np.zeros(2), 1.0, backend=b),
        TypeError,
        "w must be a NumPy array",
    ),
    "list received": (
        lambda b: kernels.cumulative_l1(np.zeros(2), [0.0, 0.0], 1.0, backend=b),
        TypeError,
        "received must be a NumPy array",
    ),
    "received of another shape": (
        lambda b: kernels.cumulative_l1(np.zeros(4), np.zeros(5), 1.0, backend=b),
        ValueError,
        r"received must have w's shape \(4,\) and dtype float64, got shape \(5,\)",
    ),
    "received transposed": (
        lambda b: kernels.cumulative_l1(
            np.zeros((2, 3)), np.zeros((3, 2)), 1.0, backend=b
        ),
        ValueError,
        r"received must have w's shape \(2, 3\)",
    ),
    "received of another dtype": (
        lambda b: kernels.cumulative_l1(
            np.zeros(4, np.float32), np.zeros(4), 1.0, backend=b
        ),
        ValueError,
        r"received must have w's shape \(4,\) and dtype float32, got shape "
        r"\(4,\) and dtype float64",
    ),
    "received is w": (
        lambda b: (lambda w: kernels.cumulative_l1(w, w, 1.0, backend=b))(np.ones(4)),
        ValueError,
        "received must not share memory with w",
    ),
    "received overlaps w": (
        lambda b: (
            lambda buf: kernels.cumulative_l1(buf[:4], buf[2:6], 1.0, backend=b)
        )(np.ones(8)),
        ValueError,
        "received must not share memory with w",
    ),
    "received is a reshaped w": (
        lambda b: (
            lambda w: kernels.cumulative_l1(
                w, w.reshape(-1).reshape(2, 2), 1.0, backend=b
            )
        )(np.ones((2, 2))),
        ValueError,
        "received must not share memory with w",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error(case, backend):
    call, exception, pattern = ERRORS[case]
    with pytest.raises(exception, match=pattern):
        call(backend)


@pytest.mark.parametrize("op", OP_PARAMS)
@pytest.mark.parametrize(
    "x",
    [
        np.array([1 + 2j, 3j, 1, 0]),
        np.array([1.0, 2.0, 3.0, 4.0], dtype=object),
        np.array([1.0, None, 2.0, 3.0]),
    ],
    ids=["complex", "object", "object with None"],
)
def test_complex_or_object_x_is_a_type_error(op, backend, x):
    if op.ndim2:
        x = x.reshape(2, 2)
    with pytest.raises(TypeError, match="x must hold real numbers"):
        op(x, backend)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_bad_out(op, backend, dtype):
    x = np.arange(6, dtype=dtype).reshape(2, 3) - 2.5
    if not op.ndim2:
        x = x.reshape(-1)
    name = np.dtype(dtype).name
    other = "float32" if name == "float64" else "float64"
    cases = [
        (
            np.empty(x.size + 1, dtype),
            ValueError,
            rf"out must have shape \({x.shape[0]},.*\), got shape \({x.size + 1},\)",
        ),
        (np.empty(x.shape[::-1] + (1,), dtype), ValueError, "out must have shape"),
        (
            np.empty(x.shape, other),
            ValueError,
            f"out must have dtype {name}, got dtype {other}",
        ),
        (np.empty(x.shape, np.int64), ValueError, "out must have dtype"),
        (_readonly(np.empty(x.shape, dtype)), ValueError, "out must be writable"),
        (x.tolist(), TypeError, "out must be a NumPy array or None, got list"),
    ]
    for out, exception, pattern in cases:
        before = np.array(out, copy=True)
        with pytest.raises(exception, match=pattern):
            op(x, backend, out=out)
        np.testing.assert_array_equal(out, before)
    with pytest.raises(ValueError, match="out must be writable"):
        op(_readonly(x), backend, out=_readonly(x))


def test_errors_leave_the_arrays_alone(backend):
    w, received = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="total"):
        kernels.cumulative_l1(w, received, -1.0, backend=backend)
    np.testing.assert_array_equal(w, [1.0, -2.0])
    np.testing.assert_array_equal(received, [0.5, 0.5])
    out = np.full(4, 7.0)
    with pytest.raises(ValueError, match="threshold"):
        kernels.prox_l1(X, -1.0, out=out, backend=backend)
    np.testing.assert_array_equal(out, 7.0)


# No hidden copies ------------------------------------------------------------------

COMPILED = [b for b in BACKENDS if b != REF]

COPY_FREE = {
    "prox_l1": lambda x, b, **o: kernels.prox_l1(x, 0.5, backend=b, **o),
    "prox_elastic_net": lambda x, b, **o: kernels.prox_elastic_net(
        x, 0.5, 1.0, backend=b, **o
    ),
    "prox_group_l1 rows": lambda x, b, **o: kernels.prox_group_l1(
        x, 0.5, "rows", backend=b, **o
    ),
    "prox_group_l1 sizes": lambda x, b, **o: kernels.prox_group_l1(
        x, 0.5, 1000, backend=b, **o
    ),
    "prox_sparse_group_l1 cols": lambda x, b, **o: kernels.prox_sparse_group_l1(
        x, 0.1, 0.5, "cols", backend=b, **o
    ),
    "prox_l0": lambda x, b, **o: kernels.prox_l0(x, 0.5, backend=b, **o),
    "project_box": lambda x, b, **o: kernels.project_box(x, -0.5, 0.5, backend=b, **o),
    "cumulative_l1": lambda x, b, **o: kernels.cumulative_l1(
        x, o.get("received"), 0.5, backend=b
    ),
}


@pytest.mark.skipif(not COMPILED, reason="no compiled backend here")
@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("name", sorted(COPY_FREE))
def test_no_hidden_copies(compiled, dtype, name):
    """In place, a compiled backend allocates nothing of x's size; with
    out=None, only the result."""
    call = COPY_FREE[name]
    shape = (250, 1000)
    x = np.full(shape, 0.75, dtype)
    extra = {"received": np.zeros(shape, dtype)} if name == "cumulative_l1" else {}
    small = np.full((2, 1000), 0.75, dtype)
    call(
        small,
        compiled,
        out=small,
        **({"received": np.zeros_like(small)} if extra else {}),
    )  # compile / warm up
    tracemalloc.start()
    try:
        call(x, compiled, out=x, **extra)
        in_place = tracemalloc.get_traced_memory()[1]
        if not extra:
            tracemalloc.reset_peak()
            result = call(x, compiled)
            allocated = tracemalloc.get_traced_memory()[1]
            del result
    finally:
        tracemalloc.stop()
    assert in_place < x.nbytes / 8, in_place
    if not extra:
        assert allocated < x.nbytes * 1.05, allocated
