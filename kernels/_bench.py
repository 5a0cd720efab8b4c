"""The side-by-side speed table of ``python -m kernels bench``.

A row of the table is a ``BenchCase``: one kernel on one input, with the
NumPy expression a user would write instead as its baseline.  Each family
registers a function that returns its cases (``@register("prox")``); the
runner times every case with the baseline, each available backend and
``np.copyto`` of the same array, all in one process and one run.  A new
family (sparse products, solvers) adds its rows by registering such a
function; the runner and the table do not change.

Timings are medians of repeated samples after a warm-up call (which is
where Numba compiles, or loads its cache), with BLAS pinned to one thread;
the samples of a row's implementations are interleaved, so that they all
see the same state of a noisy machine.
The asv suite in bench/ keeps its own copy of this timing loop on purpose:
asv runs the working tree's benchmarks against builds of older commits, so
they must not import a private module of the package.
"""

import dataclasses
import datetime
import functools
import itertools
import json
import math
import shutil
import statistics
import sys
import time
import types
from collections.abc import Callable

import numpy as np

import kernels
from kernels import _info
from kernels._backend import available_backends

# A timed sample loops over the call until it lasts this long, so that the
# clock's resolution and overhead do not matter for microsecond calls.
SAMPLE_SECONDS = 1e-3


@dataclasses.dataclass(frozen=True)
class BenchCase:
    """One row: ``kernel`` (the name shown) on an input of ``shape`` and
    ``dtype``.

    ``make_inputs()`` returns the inputs as a namespace, outputs
    preallocated so that the kernel is timed, not the allocation; it is
    called once per run of the case.  ``baseline(inputs)`` is the plain
    NumPy expression, ``ours(inputs, backend)`` the public function with
    ``backend=``.  ``bytes_moved`` is what the kernel must move in the cost
    model (ALGORITHMS.md section 6), ``copy_of`` the input whose
    ``np.copyto`` bandwidth it is compared with.

    ``baseline_name`` is what the table calls the baseline (a sparse
    product's is scipy.sparse, a model's the dense NumPy one).  With
    ``baseline_per_backend``, the baseline is ours too, timed for every
    backend as ``baseline(inputs, backend)`` (e.g. the same kernel on one
    thread, for a row on two): each backend's speedup is over its own
    baseline.
    """

    kernel: str
    shape: tuple
    dtype: str
    make_inputs: Callable[[], types.SimpleNamespace]
    baseline: Callable[[types.SimpleNamespace], object]
    ours: Callable[[types.SimpleNamespace, str], object]
    bytes_moved: int
    copy_of: str = "x"
    baseline_name: str = "NumPy expr"
    baseline_per_backend: bool = False


_FAMILIES = {}


def register(family):
    """Decorator: ``cases(quick)`` of a family, a list of ``BenchCase``
    (``quick`` asks for inputs small enough for a run of seconds)."""

    def decorate(cases):
        _FAMILIES[family] = cases
        return cases

    return decorate


def all_cases(quick):
    return [case for cases in _FAMILIES.values() for case in cases(quick)]


# Timing ---------------------------------------------------------------


def _seconds_per_call(call, number):
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def _error(exc):
    return f"{type(exc).__name__}: {exc}"


def interleaved_medians(calls, *, budget, min_rounds=5, max_rounds=100):
    """Median seconds per call of each of ``calls`` (a dict name -> call,
    each warmed up already), timed in rounds of one sample of every call,
    so that all of them see the same state of the machine (clock frequency,
    other processes).  At least ``min_rounds``, more while ``budget``
    seconds last.  A sample loops over its call for at least
    ``SAMPLE_SECONDS``.  Returns name -> {"seconds": median} or, for a call
    that raised, name -> {"error": message}."""
    results, numbers = {}, {}
    for name, call in calls.items():
        try:
            first = _seconds_per_call(call, 1)
        except Exception as exc:
            results[name] = {"error": _error(exc)}
        else:
            numbers[name] = max(1, int(SAMPLE_SECONDS / max(first, 1e-9)))
    samples = {name: [] for name in numbers}
    deadline = time.perf_counter() + budget
    rounds = 0
    while samples and rounds < max_rounds:
        if rounds >= min_rounds and time.perf_counter() > deadline:
            break
        for name in list(samples):
            try:
                samples[name].append(_seconds_per_call(calls[name], numbers[name]))
            except Exception as exc:
                results[name] = {"error": _error(exc)}
                del samples[name]
        rounds += 1
    for name, times in samples.items():
        results[name] = {"seconds": statistics.median(times)}
    return {name: results[name] for name in calls}


class _SingleThreadBlas:
    """Limit BLAS to one thread for the run, when threadpoolctl is there."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self.limits = None
            return "not pinned (threadpoolctl is not installed)"
        self.limits = threadpool_limits(limits=1, user_api="blas")
        return "1 thread (threadpoolctl)"

    def __exit__(self, *exc_info):
        if self.limits is not None:
            self.limits.restore_original_limits()


class _Progress:
    """A one-line progress bar, redrawn with carriage returns, on a
    terminal only (a log file would get every redraw)."""

    def __init__(self, total, stream=sys.stderr, width=30):
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.active = total > 0 and stream.isatty()
        self.columns = shutil.get_terminal_size().columns - 1

    def show(self, label):
        if self.active:
            filled = self.width * self.done // self.total
            bar = "#" * filled + "." * (self.width - filled)
            line = f"[{bar}] {self.done}/{self.total} {label}"
            self.stream.write(f"\r{line[: self.columns]:<{self.columns}}")
            self.stream.flush()

    def advance(self):
        self.done += 1

    def close(self):
        if self.active:
            self.stream.write("\r" + " " * self.columns + "\r")
            self.stream.flush()


def _run_case(case, backends, budget, bar):
    """Time one case: np.copyto of its array, the baseline, each backend."""
    name = f"{case.kernel} {_size(case.shape)} {case.dtype}"
    inputs = case.make_inputs()
    source = getattr(inputs, case.copy_of)
    target = np.empty_like(source)
    calls = {"copy": lambda: np.copyto(target, source)}
    if case.baseline_per_backend:
        for b in backends:
            calls[f"baseline {b}"] = functools.partial(case.baseline, inputs, b)
    else:
        calls["baseline"] = lambda: case.baseline(inputs)
    calls.update({b: functools.partial(case.ours, inputs, b) for b in backends})
    warm = {}
    for label, call in calls.items():
        bar.show(f"{name}: warm-up {label}")
        try:
            call()  # where Numba compiles (or loads its cache)
        except Exception as exc:  # one broken kernel must not hide the others
            warm[label] = {"error": _error(exc)}
    bar.show(f"{name}: timing")
    timed = interleaved_medians(
        {label: call for label, call in calls.items() if label not in warm},
        budget=budget,
    )
    bar.advance()
    measured = {**warm, **timed}
    copy_gbps = _gbps(2 * source.nbytes, measured["copy"])
    per_backend = case.baseline_per_backend
    baseline = None if per_backend else measured["baseline"]
    results = {}
    for backend in backends:
        result = measured[backend]
        if per_backend:
            baseline = result["baseline"] = measured[f"baseline {backend}"]
        if "seconds" in result:
            result["gbps"] = _gbps(case.bytes_moved, result)
            if "seconds" in baseline:
                result["speedup"] = baseline["seconds"] / result["seconds"]
            if copy_gbps:
                result["percent_of_copy"] = 100 * result["gbps"] / copy_gbps
        results[backend] = result
    return {
        "kernel": case.kernel,
        "shape": list(case.shape),
        "dtype": case.dtype,
        "bytes_moved": case.bytes_moved,
        "copy_gbps": copy_gbps,
        "baseline_name": case.baseline_name,
        # per backend: each backend's result holds its own "baseline"
        "baseline": {"per_backend": True} if per_backend else baseline,
        "backends": results,
    }


def run(quick=False, progress=True):
    """Time every registered case; return the results as a JSON-able dict."""
    backends = available_backends()
    cases = all_cases(quick)
    budget = 0.2 if quick else 2.0
    bar = _Progress(len(cases) if progress else 0)
    with _SingleThreadBlas() as blas:
        rows = [_run_case(case, backends, budget, bar) for case in cases]
    bar.close()
    return {"header": _header(quick, backends, blas), "rows": rows}


def _gbps(nbytes, measured):
    seconds = measured.get("seconds")
    return nbytes / seconds / 1e9 if seconds else None


def _header(quick, backends, blas):
    threads = f"BLAS {blas}"
    if "cython" in backends:
        try:
            threads += f"; cython backend built with OpenMP {_info.openmp()}"
        except Exception as exc:
            threads += f"; cython backend OpenMP unknown ({_error(exc)})"
    return {
        "title": f"embedded-kernels {kernels.__version__}: python -m kernels bench"
        + (" --quick" if quick else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "machine": _info.machine(),
        "versions": _info.versions(),
        "backends": backends,
        "threads": threads,
        "method": (
            "medians of repeated timings, interleaved, after a warm-up call "
            "(JIT compiled before timing); speedup = baseline time / backend "
            "time (baseline: the NumPy expression, scipy.sparse for sparse "
            "products, the dense model in NumPy or onnxruntime for MLPs; "
            "'2 threads' rows: the same backend on 1 thread); ours on 1 "
            "thread (threads=1) unless the row says otherwise; GB/s = bytes "
            "the kernel must move (read x + write out; cumulative_l1 reads and "
            "writes w and received; prox_gradient_step reads w, g (s, mu) and "
            "writes w, + the cumulative state; sparse products: the matrix's "
            "arrays + x + y; MLPs: weights + activations) / time; % copy = that "
            "GB/s over np.copyto's GB/s, timed alongside, on the same array "
            "(sparse and MLP rows: through a working set of the same bytes)"
        ),
    }


# Formatting -----------------------------------------------------------


def _size(shape):
    if len(shape) == 1:
        n = shape[0]
        exponent = round(math.log10(n)) if n > 0 else 0
        return f"1e{exponent}" if n == 10**exponent and n >= 1000 else str(n)
    return "x".join(str(n) for n in shape)


def _time(measured):
    seconds = measured.get("seconds")
    if seconds is None:
        return "error"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            return f"{seconds / scale:.3g} {unit}"


def _number(value, template):
    return "-" if value is None else template.format(value)


def format_table(results):
    """The results as header lines and a Markdown table, columns aligned."""
    header = results["header"]
    backends = header["backends"]
    columns = ["kernel", "size", "dtype", "baseline", "time", "copy GB/s"]
    for backend in backends:
        columns += [backend, "speedup", "GB/s", "% copy"]
    table = []
    for row in results["rows"]:
        per_backend = row["baseline"].get("per_backend")
        cells = [
            row["kernel"],
            _size(row["shape"]),
            row["dtype"],
            row.get("baseline_name", "NumPy expr"),
            "per backend" if per_backend else _time(row["baseline"]),
            _number(row["copy_gbps"], "{:.1f}"),
        ]
        for backend in backends:
            result = row["backends"][backend]
            cells += [
                _time(result),
                _number(result.get("speedup"), "{:.3g}x"),
                _number(result.get("gbps"), "{:.1f}"),
                _number(result.get("percent_of_copy"), "{:.0f}%"),
            ]
        table.append(cells)
    widths = [
        max(len(c) for c in column) for column in zip(columns, *table, strict=True)
    ]
    left = 4  # kernel, size, dtype and baseline are text; the rest numbers

    def line(cells):
        padded = (
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ":" + "-" * (w + 1) if i < left else "-" * (w + 1) + ":"
            for i, w in enumerate(widths)
        )
        + "|"
    )
    lines = [
        header["title"],
        f"date: {header['date']}",
        f"machine: {header['machine']}",
        f"versions: {header['versions']}",
        f"threads: {header['threads']}",
        f"method: {header['method']}",
        "",
        line(columns),
        rule,
        *(line(cells) for cells in table),
    ]
    errors = [
        f"{row['kernel']} {_size(row['shape'])} {row['dtype']}, {name}: {error}"
        for row in results["rows"]
        for name, error in _errors(row)
    ]
    if errors:
        lines += ["", "errors:", *errors]
    return "\n".join(lines)


def _errors(row):
    name = row.get("baseline_name", "NumPy expr")
    measured = [(name, row["baseline"]), *row["backends"].items()]
    measured += [
        (f"{name} ({backend})", result["baseline"])
        for backend, result in row["backends"].items()
        if "baseline" in result
    ]
    return [(name, result["error"]) for name, result in measured if "error" in result]


def failed(results):
    """Whether any measurement of the run raised."""
    return any(_errors(row) for row in results["rows"])


def main(quick=False, as_json=False):
    results = run(quick=quick)
    print(json.dumps(results, indent=2) if as_json else format_table(results))
    return 1 if failed(results) else 0


# Cases: proximal operators (kernels.prox) -----------------------------


def _inputs(shape, dtype, **extra):
    """A standard normal ``x`` (reproducible), a preallocated ``out``, and
    ``extra`` values (a callable is given ``x``)."""
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.dtype(dtype))
    values = {k: v(x) if callable(v) else v for k, v in extra.items()}
    return types.SimpleNamespace(x=x, out=np.empty_like(x), **values)


def _streaming(kernel, shape, dtype, baseline, ours, **extra):
    """A case whose kernel reads ``x`` once and writes ``out`` once."""
    itemsize = np.dtype(dtype).itemsize
    return BenchCase(
        kernel=kernel,
        shape=tuple(shape),
        dtype=np.dtype(dtype).name,
        make_inputs=lambda: _inputs(shape, dtype, **extra),
        baseline=baseline,
        ours=ours,
        bytes_moved=2 * math.prod(shape) * itemsize,
    )


def _soft_threshold_expression(x, threshold, out):
    np.multiply(np.sign(x), np.maximum(np.abs(x) - threshold, 0), out=out)


def _group_expression(x, threshold, axis, out):
    norms = np.linalg.norm(x, axis=axis, keepdims=True)
    np.multiply(x, np.maximum(1 - threshold / norms, 0), out=out)


def _top_k_expression(x, k, out):
    keep = np.argpartition(np.abs(x), x.size - k)[x.size - k :]
    out.fill(0)
    out[keep] = x[keep]


def _l1_ball_expression(x, radius, out):
    """Duchi et al. (2008): sort the magnitudes, find the threshold."""
    u = np.sort(np.abs(x))[::-1]
    excess = np.cumsum(u) - radius
    rho = np.flatnonzero(u * np.arange(1, u.size + 1) > excess)[-1]
    _soft_threshold_expression(x, excess[rho] / (rho + 1), out)


def _cumulative_l1_expression(w, received, total):
    z = w.copy()
    w[...] = np.where(
        z > 0,
        np.maximum(z - (total + received), 0),
        np.where(z < 0, np.minimum(z + (total - received), 0), z),
    )
    received += w - z


def _cumulative_l1(n, dtype):
    """In place on w and received: reads and writes both.  ``total``
    alternates between two values, so that every non-zero weight moves on
    every call, as in training (with ``total`` fixed, the calls after the
    first would change nothing, and a kernel could skip its writes)."""
    itemsize = np.dtype(dtype).itemsize

    def make_inputs():
        w = np.random.default_rng(0).standard_normal(n, dtype=np.dtype(dtype))
        totals = itertools.cycle((0.1, 0.2))
        return types.SimpleNamespace(w=w, received=np.zeros_like(w), totals=totals)

    return BenchCase(
        kernel="cumulative_l1",
        shape=(n,),
        dtype=np.dtype(dtype).name,
        make_inputs=make_inputs,
        baseline=lambda a: _cumulative_l1_expression(a.w, a.received, next(a.totals)),
        ours=lambda a, b: kernels.cumulative_l1(
            a.w, a.received, next(a.totals), backend=b
        ),
        bytes_moved=4 * n * itemsize,
        copy_of="w",
    )


@register("prox")
def prox_cases(quick):
    n = 10**6 if quick else 10**7
    rows = 1024 if quick else 4096
    f32, f64 = np.float32, np.float64
    sizes = [n] if quick else [10**3, 10**5, n]
    prox_l1 = [(size, f32) for size in sizes] + [(n, f64)]
    return [
        *(
            _streaming(
                "prox_l1",
                (size,),
                dtype,
                lambda a: _soft_threshold_expression(a.x, a.t, a.out),
                lambda a, b: kernels.prox_l1(a.x, a.t, out=a.out, backend=b),
                t=0.5,
            )
            for size, dtype in prox_l1
        ),
        _streaming(
            "prox_elastic_net",
            (n,),
            f32,
            lambda a: np.divide(
                np.sign(a.x) * np.maximum(np.abs(a.x) - a.l1, 0), 1 + a.l2, out=a.out
            ),
            lambda a, b: kernels.prox_elastic_net(
                a.x, a.l1, a.l2, out=a.out, backend=b
            ),
            l1=0.5,
            l2=0.1,
        ),
        _streaming(
            "prox_l0",
            (n,),
            f32,
            lambda a: np.multiply(a.x, np.abs(a.x) > np.sqrt(2 * a.t), out=a.out),
            lambda a, b: kernels.prox_l0(a.x, a.t, out=a.out, backend=b),
            t=0.5,
        ),
        _streaming(
            "project_box",
            (n,),
            f32,
            lambda a: np.clip(a.x, -1.0, 1.0, out=a.out),
            lambda a, b: kernels.project_box(a.x, -1.0, 1.0, out=a.out, backend=b),
        ),
        # Thresholds near a typical group norm: about half the groups vanish.
        _streaming(
            "prox_group_l1 rows",
            (rows, 1024),
            f32,
            lambda a: _group_expression(a.x, 32.0, 1, a.out),
            lambda a, b: kernels.prox_group_l1(a.x, 32.0, "rows", out=a.out, backend=b),
        ),
        # In place, as a training loop applies it (W <- prox(W)); a small
        # threshold keeps the rows alive over thousands of calls.
        _streaming(
            "prox_group_l1 rows in place",
            (rows, 1024),
            f32,
            lambda a: _group_expression(a.x, 1e-3, 1, a.x),
            lambda a, b: kernels.prox_group_l1(a.x, 1e-3, "rows", out=a.x, backend=b),
        ),
        _streaming(
            "prox_group_l1 cols",
            (rows, 1024),
            f32,
            lambda a: _group_expression(a.x, math.sqrt(rows), 0, a.out),
            lambda a, b: kernels.prox_group_l1(
                a.x, math.sqrt(rows), "cols", out=a.out, backend=b
            ),
        ),
        _streaming(
            "keep_top_k 10%",
            (n,),
            f32,
            lambda a: _top_k_expression(a.x, n // 10, a.out),
            lambda a, b: kernels.keep_top_k(a.x, n // 10, out=a.out, backend=b),
        ),
        _streaming(
            "project_l1_ball",
            (n,),
            f32,
            lambda a: _l1_ball_expression(a.x, a.radius, a.out),
            lambda a, b: kernels.project_l1_ball(a.x, a.radius, out=a.out, backend=b),
            radius=lambda x: 0.1 * float(np.abs(x).sum(dtype=np.float64)),
        ),
        _cumulative_l1(n, f32),
    ]


# Cases: sparse products (kernels.sparse) ------------------------------


def _scipy_sparse():
    """scipy.sparse, or None when it is not installed (the sparse rows then
    compare with the dense product)."""
    try:
        import scipy.sparse
    except ImportError:
        return None
    return scipy.sparse


def _random_csr(shape, density, seed=0):
    """A random float32 ``CSRMatrix``: every entry stored with probability
    ``density``, independently, standard normal values, int32 indices,
    columns sorted.  O(nnz) to draw: the gaps between stored entries, in
    row-major order, are geometric."""
    m, n = shape
    rng = np.random.default_rng(seed)
    expected = density * m * n
    count = int(expected + 8 * math.sqrt(expected) + 16)
    positions = np.cumsum(rng.geometric(density, size=count), dtype=np.int64) - 1
    while positions[-1] < m * n:  # (almost) never: 8 standard deviations
        gaps = rng.geometric(density, size=count)
        positions = np.concatenate([positions, positions[-1] + np.cumsum(gaps)])
    rows, cols = np.divmod(positions[: np.searchsorted(positions, m * n)], n)
    indptr = np.zeros(m + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows.astype(np.intp), minlength=m), out=indptr[1:])
    data = rng.standard_normal(cols.size, dtype=np.float32)
    return kernels.CSRMatrix(data, cols.astype(np.int32), indptr, shape)


def _percent(density):
    return f"{100 * density:g}%"


def _sparse_baseline(scipy_sparse):
    """(name, make, call): scipy.sparse's ``A @ x`` when it is installed,
    else the dense ``np.matmul`` into a preallocated y."""
    if scipy_sparse is not None:
        return (
            "scipy",
            lambda a: setattr(a, "S", a.A.to_scipy()),
            lambda a: a.S @ a.x,
        )

    def make_dense(a):
        a.W = a.A.to_dense()
        a.y_dense = np.empty_like(a.y)

    return "dense NumPy", make_dense, lambda a: np.matmul(a.W, a.x, out=a.y_dense)


def _spmv_cases(shape, density, scipy_sparse):
    """SpMV rows on one random float32 matrix: CSR and QuantizedCSR on one
    thread against scipy (or dense), and CSR on 2 threads against the same
    backend on 1."""
    m, n = shape
    A = _random_csr(shape, density)
    Q = kernels.QuantizedCSR.from_csr(A)
    name, make_baseline, baseline = _sparse_baseline(scipy_sparse)

    def inputs_for(matrix, bytes_moved, own_baseline):
        def make_inputs():
            a = types.SimpleNamespace(
                A=A,
                matrix=matrix,
                x=np.random.default_rng(1).standard_normal(n, dtype=np.float32),
                y=np.empty(m, dtype=np.float32),
                # np.copyto between two halves of the kernel's bytes: the
                # same traffic through a working set of the same size
                copy=np.ones(max(1, bytes_moved // 16)),
            )
            if not own_baseline:
                make_baseline(a)
            return a

        return make_inputs

    def spmv(threads):
        return lambda a, b: kernels.spmv(
            a.matrix, a.x, out=a.y, threads=threads, backend=b
        )

    def case(kernel, matrix, ours, own_baseline=None):
        """A row; ``own_baseline``: ours on one thread, per backend, instead
        of scipy (or dense)."""
        bytes_moved = matrix.nbytes + (m + n) * 4  # + x read + y written
        return BenchCase(
            kernel=kernel,
            shape=shape,
            dtype="float32",
            make_inputs=inputs_for(matrix, bytes_moved, own_baseline is not None),
            baseline=baseline if own_baseline is None else own_baseline,
            ours=ours,
            bytes_moved=bytes_moved,
            copy_of="copy",
            baseline_name=name if own_baseline is None else "1 thread",
            baseline_per_backend=own_baseline is not None,
        )

    return [
        case(f"spmv csr {_percent(density)}", A, spmv(1)),
        case(f"spmv csr {_percent(density)}, 2 threads", A, spmv(2), spmv(1)),
        case(f"spmv int8 {_percent(density)}", Q, spmv(1)),
    ]


@register("sparse")
def sparse_cases(quick):
    scipy_sparse = _scipy_sparse()
    large = (4096, 4096) if quick else (20000, 20000)
    return [
        *_spmv_cases(large, 0.01, scipy_sparse),
        *_spmv_cases((300, 784), 0.01, scipy_sparse),
    ]


# Cases: sparse MLP inference (kernels.nn) ------------------------------

LENET = (784, 300, 100, 10)


def _lenet_weights(density, seed=0):
    """float32 weights (out, in) and biases of LeNet-300-100, He-scaled
    normal, each weight matrix pruned to its ``round(density * size)``
    entries of largest magnitude, as ``SparseMLP.from_dense`` prunes."""
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for n_in, n_out in itertools.pairwise(LENET):
        W = rng.standard_normal((n_out, n_in), dtype=np.float32)
        W *= np.float32(math.sqrt(2.0 / n_in))
        keep = round(density * W.size)
        magnitude = np.abs(W).reshape(-1)
        W[np.abs(W) < np.partition(magnitude, W.size - keep)[W.size - keep]] = 0
        weights.append(W)
        biases.append(rng.standard_normal(n_out, dtype=np.float32) * np.float32(0.1))
    return weights, biases


def _dense_forward(X, weights, biases):
    """The dense model as a user writes it in NumPy: X @ W.T + b, ReLU."""
    H = X
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        H = H @ W.T + b
        if i < len(weights) - 1:
            np.maximum(H, 0, out=H)
    return H


def _onnx_available():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_session(weights, biases):
    """The dense model in onnxruntime, one thread: Gemm (transB=1) + Relu
    per layer, an ONNX graph built with onnx.helper."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers, source = [], [], "X"
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        initializers += [
            numpy_helper.from_array(W, f"W{i}"),
            numpy_helper.from_array(b, f"b{i}"),
        ]
        last = i == len(weights) - 1
        gemm = "Y" if last else f"gemm{i}"
        inputs = [source, f"W{i}", f"b{i}"]
        nodes.append(helper.make_node("Gemm", inputs, [gemm], transB=1))
        if not last:
            source = f"relu{i}"
            nodes.append(helper.make_node("Relu", [gemm], [source]))
    graph = helper.make_graph(
        nodes,
        "lenet_300_100",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", LENET[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", LENET[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _mlp_case(weights, biases, density, batch, fmt, baseline):
    """LeNet-300-100 forward pass of a (batch, 784) float32 input: our
    ``SparseMLP`` (format ``fmt``, one thread) against the dense model in
    NumPy (``baseline="numpy"``) or onnxruntime."""
    from kernels.nn import SparseMLP

    model = SparseMLP.from_dense(
        weights, biases, activation="relu", density=density, fmt=fmt
    )
    activations = batch * (LENET[0] + 2 * sum(LENET[1:-1]) + LENET[-1]) * 4
    bytes_moved = model.nbytes + activations

    def make_inputs():
        X = np.random.default_rng(1).standard_normal((batch, LENET[0]), np.float32)
        a = types.SimpleNamespace(
            X=X,
            feed={"X": X},
            model=model,
            weights=weights,
            biases=biases,
            copy=np.ones(max(1, bytes_moved // 16)),
        )
        if baseline == "onnxruntime":
            a.session = _onnx_session(weights, biases)
        return a

    if baseline == "onnxruntime":
        name, call = "onnxruntime dense", lambda a: a.session.run(None, a.feed)
    else:
        name, call = "dense NumPy", lambda a: _dense_forward(a.X, a.weights, a.biases)
    sizes = "-".join(map(str, LENET))
    return BenchCase(
        kernel=f"mlp {sizes} {_percent(density)} {fmt}",
        shape=(batch, LENET[0]),
        dtype="float32",
        make_inputs=make_inputs,
        baseline=call,
        ours=lambda a, b: a.model.forward(a.X, backend=b, threads=1),
        bytes_moved=bytes_moved,
        copy_of="copy",
        baseline_name=name,
    )


@register("mlp")
def mlp_cases(quick):
    density = 0.05
    weights, biases = _lenet_weights(density)
    cases = [
        _mlp_case(weights, biases, density, 1, "csr", "numpy"),
        _mlp_case(weights, biases, density, 64, "csr", "numpy"),
        _mlp_case(weights, biases, density, 1, "int8", "numpy"),
    ]
    if _onnx_available():
        cases += [
            _mlp_case(weights, biases, density, 1, "csr", "onnxruntime"),
            _mlp_case(weights, biases, density, 64, "csr", "onnxruntime"),
        ]
    return cases


# Cases: the fused proximal gradient step (kernels.update) -------------


def _lambda_step_expression(a):
    """The lambda-estimator step as a user writes it with NumPy (and
    kernels.prox_l1 or kernels.cumulative_l1 for the penalty)."""
    v = (1 - a.lam) * (a.g - a.s) + a.lam * a.mu
    a.w -= a.step * v
    if a.state is None:
        kernels.prox_l1(a.w, a.step * a.beta, out=a.w)
    else:
        a.state.total += a.step * a.beta
        kernels.cumulative_l1(a.w, a.state.received, a.state.total)


def _lambda_step_numpy(a):
    """The same step in NumPy alone: the soft-threshold written out."""
    v = (1 - a.lam) * (a.g - a.s) + a.lam * a.mu
    a.w -= a.step * v
    np.multiply(np.sign(a.w), np.maximum(np.abs(a.w) - a.step * a.beta, 0), out=a.w)


def _sgd_step_expression(a):
    a.w -= a.step * a.g
    kernels.prox_l1(a.w, a.step * a.beta, out=a.w)


def _update_case(kernel, n, dtype, penalty="l1", sgd=False, numpy_prox=False):
    """One in-place step on n parameters, as a training loop runs it.  The
    step and beta are small, so that thousands of timed calls leave the
    weights of the same size.  Bytes: read w and g (and s, mu), write w
    (and read and write the cumulative penalty's state).  The baseline
    takes the penalty from this library (``kernels.prox_l1`` or
    ``kernels.cumulative_l1``), or with ``numpy_prox`` writes the l1
    soft-threshold in NumPy."""
    itemsize = np.dtype(dtype).itemsize
    arrays = 3 if sgd else 5
    if penalty == "cumulative_l1":
        arrays += 2

    def make_inputs():
        rng = np.random.default_rng(0)
        w, g, s, mu = (rng.standard_normal(n, dtype=np.dtype(dtype)) for _ in "wgsm")
        state = kernels.CumulativeL1(w) if penalty == "cumulative_l1" else None
        return types.SimpleNamespace(
            w=w, g=g, s=s, mu=mu, lam=0.7, step=1e-3, beta=1e-3, state=state
        )

    def ours(a, backend):
        snapshot = () if sgd else (a.s, a.mu)
        lam = {} if sgd else {"lam": a.lam}
        kernels.prox_gradient_step(
            a.w, a.g, *snapshot, step=a.step, penalty=penalty, beta=a.beta,
            cumulative=a.state, out=a.w, backend=backend, **lam,
        )  # fmt: skip

    return BenchCase(
        kernel=kernel,
        shape=(n,),
        dtype=np.dtype(dtype).name,
        make_inputs=make_inputs,
        baseline=(
            _sgd_step_expression
            if sgd
            else _lambda_step_numpy
            if numpy_prox
            else _lambda_step_expression
        ),
        baseline_name="NumPy expr, NumPy prox" if numpy_prox else "NumPy expr",
        ours=ours,
        bytes_moved=arrays * n * itemsize,
        copy_of="w",
    )


@register("update")
def update_cases(quick):
    f32, f64 = np.float32, np.float64
    cases = [
        _update_case("prox_gradient_step lam l1", 10**6, f32),
        _update_case("prox_gradient_step lam l1", 10**6, f32, numpy_prox=True),
        _update_case("prox_gradient_step lam cumulative", 10**6, f32, "cumulative_l1"),
        _update_case("prox_gradient_step sgd l1", 10**6, f32, sgd=True),
    ]
    if not quick:
        cases += [
            _update_case("prox_gradient_step lam l1", 10**6, f64),
            _update_case("prox_gradient_step lam l1", 10**7, f32),
        ]
    return cases
