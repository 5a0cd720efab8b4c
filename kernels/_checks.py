"""Input validation shared by every public function.

Compiled kernels run without bounds checks, so everything a kernel trusts is
checked here, once, at the API boundary.  Bad values and shapes raise
ValueError, bad types TypeError, and every message names the argument, what
was expected and what was given.

dtype rules (DESIGN.md): float32 and float64 are kept as they are; integer,
boolean and other real floating dtypes are converted (float16 to float32,
everything else to float64); complex, object and string data are a
TypeError.

Byte order: an array in non-native byte order (a big-endian file read on a
little-endian machine) is of the dtype its kind and size say: ``>f4`` is
float32, converted to native order by the copy any conversion makes.

Shapes: a 0-d array (or a Python scalar) stays 0-d.

Index arrays: int32 and int64 are both accepted and kept.  NumPy's
``bincount``, ``repeat`` (its counts) and ``ufunc.reduceat`` take only
integers that convert to ``np.intp`` under 'safe' casting, and ``np.intp``
is int32 on 32-bit platforms (armv7), so an int64 index array is cast to
``np.intp`` right before such a call (a no-op on 64-bit platforms; the
values always fit, as they index an array in memory).
"""

import math
import numbers
import operator
import os

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}"


def _native(dtype):
    """``dtype`` in native byte order (the same dtype for other kinds)."""
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def result_dtype(dtype, name):
    """The floating dtype an input of ``dtype`` is computed in (native
    byte order)."""
    dtype = _native(np.dtype(dtype))
    if dtype in FLOAT_DTYPES:
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise TypeError(
        f"{name} must hold real numbers (float32 or float64, or a type "
        f"converted to them), got dtype {dtype}"
    )


def as_float_array(x, name="x", dtype=None):
    """``x`` as a C-contiguous float32 or float64 array of its own shape (a
    0-d input stays 0-d; no copy when it already is one), converted by the
    module's dtype rules or to ``dtype``."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be array-like, got {_describe(x)}") from exc
    natural = result_dtype(x.dtype, name)
    target = natural if dtype is None else np.dtype(dtype)
    # not np.ascontiguousarray, which turns a 0-d array into shape (1,)
    return np.asarray(x, dtype=target, order="C")


def require_finite(x, name):
    """ValueError unless every entry of ``x`` is finite."""
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite, but it contains NaN or inf")


def scalar(value, name, *, minimum=None, allow_inf=True):
    """A real scalar as a Python float: not NaN, at least ``minimum``,
    finite unless ``allow_inf``."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    if not allow_inf and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def integer(value, name, *, minimum=None, maximum=None):
    """An integer (Python or NumPy, not bool) within the given bounds."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {_describe(value)}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# The most threads a caller may ask for.  The compiled kernels take a C int
# and allocate scratch per thread, and an OpenMP runtime that cannot create
# a thread aborts the process, so an absurd count is refused here rather
# than passed on; no machine this library targets has more CPUs.
MAX_THREADS = 1024
# The CPUs this process may run on (its affinity mask, read at import): the
# most threads a kernel is ever started on.
USABLE_CPUS = max(1, min(_usable_cpus(), MAX_THREADS))


def threads(value, name="threads"):
    """A thread count asked for: None (automatic) or an integer in [1,
    MAX_THREADS], as a Python int.  TypeError for a non-integer (bool
    included), ValueError outside the range."""
    if value is None:
        return None
    return integer(value, name, minimum=1, maximum=MAX_THREADS)


def started_threads(value):
    """The threads a parallel kernel runs on for the valid request ``value``
    (an int from ``threads``): at most the usable CPUs, as more threads
    than CPUs only wait for each other."""
    return min(value, USABLE_CPUS)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def cast(value, dtype):
    """A Python float as a scalar of ``dtype``; values beyond float32's range
    become +-inf without a warning (a threshold of 1e300 zeroes everything
    in float32 as it does in float64)."""
    if dtype is np.float32 and abs(value) > _FLOAT32_MAX:
        value = math.copysign(math.inf, value)
    return dtype(value)


def is_scalar(value):
    return isinstance(value, float | int) or np.ndim(value) == 0


def per_coordinate(value, name, shape, dtype, *, minimum=None):
    """An array broadcastable to ``shape``, returned C-contiguous with that
    shape and ``dtype`` (broadcasting materialises a full-size copy).  A
    scalar given where arrays are accepted (``lower=0.0`` beside an array
    ``upper``) follows the rules of ``scalar``: a bool is a TypeError there
    as everywhere else."""
    if is_scalar(value):
        value = scalar(value, name, minimum=minimum)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if np.isnan(array).any():
        raise ValueError(f"{name} must not contain NaN")
    if minimum is not None and (array < minimum).any():
        raise ValueError(f"{name} must be >= {minimum} everywhere")
    try:
        array = np.broadcast_to(array, shape)
    except ValueError:
        raise ValueError(
            f"{name} must be a scalar or broadcastable to shape {shape}, "
            f"got shape {array.shape}"
        ) from None
    with np.errstate(over="ignore"):
        return np.asarray(array, dtype=dtype, order="C")


def output_buffer(out, x, name="out"):
    """The C-contiguous array a kernel writes into for output ``out``.

    ``out=None`` allocates; ``out`` must otherwise be a writable ndarray of
    ``x``'s shape and dtype.  ``out`` may be ``x`` itself (in place).  When
    ``out`` is not C-contiguous, or overlaps ``x`` without being it, the
    kernel writes a temporary that ``deliver`` copies into ``out``.
    """
    if out is None:
        return np.empty_like(x)
    if out is x and out.flags.writeable:
        return out
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array or None, got {_describe(out)}")
    if out.shape != x.shape:
        raise ValueError(f"{name} must have shape {x.shape}, got shape {out.shape}")
    if out.dtype != x.dtype:
        raise ValueError(f"{name} must have dtype {x.dtype}, got dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writable")
    if not out.flags.c_contiguous or np.may_share_memory(out, x):
        return np.empty_like(x)
    return out


def deliver(out, buffer):
    """Return the result of a kernel that wrote ``buffer`` for ``out``."""
    if out is None or out is buffer:
        return buffer
    out[...] = buffer
    return out


def inplace_array(w, name):
    """A floating array that a kernel updates in place: float32 or float64,
    C-contiguous and writable (no conversion is possible in place)."""
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {_describe(w)}")
    if w.dtype not in FLOAT_DTYPES:
        given = (
            w.dtype
            if w.dtype.isnative
            else f"{w.dtype.str} (non-native byte order, which cannot be updated "
            "in place)"
        )
        raise TypeError(f"{name} must be float32 or float64, got dtype {given}")
    if not w.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous to be updated in place")
    if not w.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return w


def float_dtype(dtype, name):
    """``dtype`` as float32 or float64 (the dtypes a kernel computes in)."""
    try:
        dtype = _native(np.dtype(dtype))
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {dtype}")
    return dtype


# The largest dimension an array in memory can have (2**63 - 1 on 64-bit
# machines, 2**31 - 1 on 32-bit boards): a larger one can be neither
# allocated nor indexed, and overflows the C integers of the kernels.
_INTP_MAX = int(np.iinfo(np.intp).max)


def shape2(shape, name="shape"):
    """A matrix shape: a pair of non-negative integers, each at most the
    largest ``np.intp``, as a tuple of ints."""
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(
            f"{name} must be a pair of integers (m, n), got {_describe(shape)}"
        ) from None
    if len(items) != 2:
        raise ValueError(f"{name} must be a pair (m, n), got {shape!r}")
    return tuple(integer(value, name, minimum=0, maximum=_INTP_MAX) for value in items)


def index_array(a, name):
    """``a`` as a 1-D NumPy array of any integer dtype (no copy, no cast)."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be array-like, got {_describe(a)}") from exc
        if a.size == 0 and a.dtype == np.float64:  # [] says nothing about type
            a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def compressed_structure(indices, indptr, n_major, n_minor, nnz, *, full=True):
    """Validate a compressed sparse structure (CSR over rows, or BSR over
    block rows): ``indptr`` has ``n_major + 1`` entries, starts at 0, never
    decreases and ends at ``nnz == len(indices)``; every entry of
    ``indices`` lies in [0, n_minor).

    The lengths are always checked (O(1)); ``full=False`` skips the O(nnz)
    pass over the values.  Comparisons are made in the arrays' own integer
    dtypes, so no value wraps around before it is checked.
    """
    if indptr.size != n_major + 1:
        raise ValueError(
            f"indptr must have {n_major + 1} entries (one per row, plus one), "
            f"got {indptr.size}"
        )
    if indices.size != nnz:
        raise ValueError(
            f"indices must have one entry per stored value (len(data) = {nnz}), "
            f"got {indices.size}"
        )
    if not full:
        return
    if indptr[0] != 0:
        raise ValueError(f"indptr must start at 0, got indptr[0] = {indptr[0]}")
    if indptr[-1] != nnz:
        raise ValueError(
            f"indptr must end at the number of stored values ({nnz}), "
            f"got indptr[-1] = {indptr[-1]}"
        )
    decreasing = np.flatnonzero(indptr[1:] < indptr[:-1])
    if decreasing.size:
        i = int(decreasing[0])
        raise ValueError(
            f"indptr must never decrease, got indptr[{i}] = {indptr[i]} > "
            f"indptr[{i + 1}] = {indptr[i + 1]}"
        )
    if nnz:
        low, high = indices.min(), indices.max()
        if low < 0 or high >= n_minor:
            bad = low if low < 0 else high
            raise ValueError(
                f"indices must lie in [0, {n_minor}), got {bad} at position "
                f"{int(np.flatnonzero(indices == bad)[0])}"
            )


def group_pointer(groups, size, of):
    """The group pointer of ``groups`` over ``size`` entries: int64 offsets,
    n_groups + 1 of them from 0 to ``size``, group g being entries
    pointer[g]:pointer[g + 1].  ``groups`` is a group size (equal contiguous
    groups, which must divide ``size``) or a 1-D array of group sizes
    (non-negative integers adding up to ``size``; the pointer is their
    cumulative sum).  ``of`` names ``size`` in the error messages.

    Sizes are checked before they are summed, and the sum is checked for
    wrapping around: sizes whose int64 sum wraps to ``size`` (2**63 - 1
    twice and 14, say) are refused, not turned into a pointer that runs out
    of the array."""
    if is_scalar(groups):
        group_size = integer(groups, "groups", minimum=1)
        if size % group_size:
            raise ValueError(
                f"groups={group_size} must divide {of}={size} into equal groups"
            )
        return np.arange(0, size + 1, group_size, dtype=np.int64)
    try:
        sizes = np.asarray(groups)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"groups must be an int or a 1-D array of integer group sizes, got "
            f"{_describe(groups)}"
        ) from exc
    if sizes.ndim != 1:
        raise ValueError(
            f"groups must be a 1-D array of integer group sizes, got {sizes.dtype} "
            f"array of shape {sizes.shape}"
        )
    if (
        sizes.size
        and sizes.dtype.kind in "fO"
        and not isinstance(groups, np.ndarray)
        and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)
            for v in groups
        )
    ):
        # Python ints that NumPy rounded to float64 (a list mixing negative
        # values or values below 2**63 with values from 2**63 on) or kept as
        # objects (beyond uint64): checked exactly, as Python ints
        values = [int(v) for v in groups]
        if min(values) < 0:
            raise ValueError("groups (group sizes) must be non-negative")
        if max(values) > size:
            raise ValueError(
                f"groups (group sizes) must each be at most {of}={size}, got "
                f"{max(values)}"
            )
        sizes = np.array(values, dtype=np.int64)
    if sizes.size and sizes.dtype.kind not in "iu":
        raise TypeError(
            f"groups (group sizes) must be integers, got dtype {sizes.dtype}"
        )
    if sizes.size:
        if sizes.min() < 0:
            raise ValueError("groups (group sizes) must be non-negative")
        if sizes.max() > size:
            raise ValueError(
                f"groups (group sizes) must each be at most {of}={size}, got "
                f"{sizes.max()}"
            )
    pointer = np.zeros(sizes.size + 1, dtype=np.int64)
    # each size fits in int64 now; a partial sum past 2**63 - 1 wraps to a
    # negative value, which the pointer's decrease reveals
    np.cumsum(sizes, out=pointer[1:], dtype=np.int64)
    if (pointer[1:] < pointer[:-1]).any():
        raise ValueError(
            f"groups (group sizes) must add up to {of}={size}, got a sum beyond "
            "2**63 - 1"
        )
    if pointer[-1] != size:
        raise ValueError(
            f"groups (group sizes) must add up to {of}={size}, got {pointer[-1]}"
        )
    return pointer


def segment_sums(values, pointer):
    """The sum of ``values`` over each segment pointer[g]:pointer[g + 1] of
    a valid pointer (a CSR indptr, a group pointer), 0 for an empty
    segment, as float64.  O(len(values) + segments).

    ``np.add.reduceat`` alone gives an empty segment the value at its start
    (and fails when that start is len(values), as for an empty last row),
    so it is given the starts of the non-empty segments only."""
    pointer = pointer.astype(np.intp, copy=False)
    sums = np.zeros(pointer.size - 1)
    nonempty = np.flatnonzero(pointer[1:] > pointer[:-1])
    if nonempty.size:
        sums[nonempty] = np.add.reduceat(values, pointer[nonempty], dtype=np.float64)
    return sums


def class_labels(y, name="y"):
    """(classes, codes) of the labels ``y`` (1-D): the sorted distinct
    labels and each entry's index among them (``np.unique``).  Labels may be
    numbers, strings or other sortable objects; NaN and infinities are a
    ValueError (np.unique would make NaN one more class), labels that cannot
    be sorted a TypeError."""
    if y.dtype.kind in "fc":
        if not np.isfinite(y).all():
            raise ValueError(
                f"{name} (labels) must not contain NaN or inf, got "
                f"{np.count_nonzero(~np.isfinite(y))} such entries"
            )
    elif y.dtype.kind in "mM":
        if np.isnat(y).any():
            raise ValueError(f"{name} (labels) must not contain NaT")
    elif y.dtype == object:
        with np.errstate(invalid="ignore"):
            differs = np.asarray(y != y)
        if differs.shape == y.shape and differs.dtype == bool and differs.any():
            raise ValueError(
                f"{name} (labels) must not contain NaN (a label unequal to itself)"
            )
    try:
        return np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise TypeError(
            f"{name} (labels) must be of one sortable type (numbers or "
            f"strings), got {exc}"
        ) from None


def row_ids(indptr):
    """The row of every stored entry of a compressed structure (length
    nnz), as ``np.intp``: row i repeated indptr[i+1] - indptr[i] times.
    O(nnz + m)."""
    counts = np.diff(indptr).astype(np.intp, copy=False)
    return np.repeat(np.arange(indptr.size - 1, dtype=np.intp), counts)


def check_output(out, shape, dtype, name="out"):
    """TypeError/ValueError unless ``out`` is a writable ndarray of ``shape``
    and ``dtype``."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array or None, got {_describe(out)}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writable")


def output_array(out, shape, dtype, inputs=(), name="out", read=False):
    """The C-contiguous array a kernel writes into for output ``out`` of
    ``shape`` and ``dtype``, when the output is not shaped like an input
    (``output_buffer`` is for that case).

    ``out=None`` allocates (uninitialised).  Otherwise ``out`` is used
    directly when it is C-contiguous and shares no memory with ``inputs``;
    if not, the kernel writes a temporary that ``deliver`` copies into
    ``out``.  ``read=True`` (the kernel reads the output, e.g. beta != 0)
    starts that temporary as a copy of ``out``.
    """
    if out is None:
        return np.empty(shape, dtype=dtype)
    check_output(out, shape, dtype, name)
    if out.flags.c_contiguous:
        for a in inputs:
            if np.may_share_memory(out, a):
                break
        else:
            return out
    return np.array(out, order="C") if read else np.empty(shape, dtype=dtype)


def real_array(x, name="x"):
    """``x`` as an ndarray of a real dtype, in its own layout (no copy for an
    ndarray): for callers that choose the layout of the copy themselves."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be array-like, got {_describe(x)}") from exc
    result_dtype(x.dtype, name)
    return x


_PLAN_INPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def sample_vector(x, size, dtype):
    """The input of a one-sample plan: x as a C-contiguous vector of
    ``dtype`` (converted as np.copyto converts, when its dtype or stride
    differs) if x is a 1-D float32 or float64 ndarray of ``size`` entries,
    else None (the caller's general path then converts or rejects x)."""
    if (
        type(x) is not np.ndarray
        or x.ndim != 1
        or x.shape[0] != size
        or x.dtype not in _PLAN_INPUT_DTYPES
    ):
        return None
    if x.dtype != dtype or not x.flags.c_contiguous:
        return x.astype(dtype, order="C")
    return x


def plan_matvec_output(x, out, beta, shape, dtype):
    """The y a plan's matvec writes (``out``, or a new vector when ``out``
    is None and beta == 0) when x and out are the simple case of the
    contract, else None."""
    m, n = shape
    if not (
        type(x) is np.ndarray
        and x.ndim == 1
        and x.shape[0] == n
        and x.dtype == dtype
        and x.flags.c_contiguous
    ):
        return None
    if out is None:
        return np.empty(m, dtype) if beta == 0 else None
    if (
        type(out) is np.ndarray
        and out.ndim == 1
        and out.shape[0] == m
        and out.dtype == dtype
        and out.flags.c_contiguous
        and out.flags.writeable
        and not np.may_share_memory(out, x)
    ):
        return out
    return None
