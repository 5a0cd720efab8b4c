"""The side-by-side speed table of ``python -m kernels bench``.

A row of the table is a case of ``kernels.benchmarks`` (one kernel of
ours on one input) and the baseline it is compared with: one of the
case's peers (the NumPy expression a user would write, scipy.sparse, the
dense model), or, for a threaded row, the same kernel of each backend on
one thread.  ``rows(quick)`` is the table's selection; the runner times
each row's baseline, each available backend and ``np.copyto`` of the same
bytes, all in one process and one run.  The asv suite in bench/ runs the
same cases over its own grids of parameters.

Timings: ``kernels.benchmarks.timing.interleaved_medians`` (medians of
repeated samples, the implementations of a row interleaved, so that they
all see the same state of a noisy machine) after a warm-up call (where
Numba compiles, or loads its cache, and the result is checked where the
case has a check), with BLAS pinned to one thread.
"""

import datetime
import json
import math
from typing import NamedTuple

import numpy as np

import kernels
from kernels import _info
from kernels._progress import ProgressBar
from kernels.benchmarks import nn, prox, sparse, update
from kernels.benchmarks.case import EXPRESSION, Case
from kernels.benchmarks.timing import interleaved_medians, single_thread_blas


class Row(NamedTuple):
    """``case`` against ``baseline``: the name of one of its peers, or a
    ``Case`` of ours timed per backend (each backend's speed-up is over its
    own time on that case)."""

    case: Case
    baseline: "str | Case"
    baseline_name: str


def _against(case, peer=EXPRESSION):
    return Row(case, peer, case.peers[peer].label)


def _prox_rows(quick):
    n = 10**6 if quick else 10**7
    rows = 1024 if quick else 4096
    f32, f64 = "float32", "float64"
    sizes = [n] if quick else [10**3, 10**5, n]
    return [
        *(_against(prox.prox_l1(size, f32)) for size in sizes),
        _against(prox.prox_l1(n, f64)),
        _against(prox.prox_elastic_net(n, f32)),
        _against(prox.prox_l0(n, f32)),
        _against(prox.project_box(n, f32)),
        _against(prox.prox_group_l1((rows, 1024), f32, "rows")),
        _against(prox.prox_group_l1((rows, 1024), f32, "rows", 1e-3, in_place=True)),
        _against(prox.prox_group_l1((rows, 1024), f32, "cols")),
        _against(prox.keep_top_k(n, f32)),
        _against(prox.project_l1_ball(n, f32)),
        _against(prox.cumulative_l1(n, f32)),
    ]


def _sparse_rows(quick):
    """SpMV on one random float32 matrix per shape, at 1%: CSR and
    QuantizedCSR on one thread against scipy (dense NumPy where scipy is
    not installed), and CSR on 2 threads against the same backend on 1."""
    result = []
    for shape in ((4096, 4096) if quick else (20000, 20000), (300, 784)):
        one_thread = sparse.product("csr", shape, 0.01)
        peer = "scipy" if one_thread.peers["scipy"].available else "dense"
        result += [
            _against(one_thread, peer),
            Row(sparse.product("csr", shape, 0.01, threads=2), one_thread, "1 thread"),
            _against(sparse.product("int8", shape, 0.01), peer),
        ]
    return result


def _mlp_rows():
    density = 0.05
    cases = {
        (fmt, batch): nn.mlp_forward(fmt, density, batch)
        for fmt, batch in (("csr", 1), ("csr", 64), ("int8", 1))
    }
    result = [_against(case, "dense") for case in cases.values()]
    if cases["csr", 1].peers["onnxruntime"].available:
        result += [_against(cases["csr", b], "onnxruntime") for b in (1, 64)]
    return result


def _update_rows(quick):
    f32 = "float32"
    lam_l1 = update.prox_gradient_step(10**6, f32)
    result = [
        _against(lam_l1),
        _against(lam_l1, update.NUMPY_PROX),
        _against(update.prox_gradient_step(10**6, f32, penalty="cumulative_l1")),
        _against(update.prox_gradient_step(10**6, f32, estimator="sgd")),
    ]
    if not quick:
        result += [
            _against(update.prox_gradient_step(10**6, "float64")),
            _against(update.prox_gradient_step(10**7, f32)),
        ]
    return result


def rows(quick):
    """The table's rows (``quick``: inputs small enough for a run of
    seconds)."""
    return [
        *_prox_rows(quick),
        *_sparse_rows(quick),
        *_mlp_rows(),
        *_update_rows(quick),
    ]


# Timing ---------------------------------------------------------------


def _error(exc):
    return f"{type(exc).__name__}: {exc}"


def _run_row(row, backends, budget, bar, position):
    """Time one row: np.copyto of its bytes, the baseline, each backend."""
    case = row.case
    name = f"{case.kernel} {_size(case.shape)} {case.dtype}"
    inputs = case.setup()
    source = case.copy_source(inputs)
    target = np.empty_like(source)
    per_backend = isinstance(row.baseline, Case)
    # label -> (the case, the implementation, its inputs)
    bindings = {}
    if per_backend:
        baseline_inputs = row.baseline.setup()
        for b in backends:
            bindings[f"baseline {b}"] = (row.baseline, b, baseline_inputs)
    else:
        bindings["baseline"] = (case, row.baseline, inputs)
    bindings.update({b: (case, b, inputs) for b in backends})
    calls = {"copy": lambda: np.copyto(target, source)}
    errors = {}
    for label, (owner, implementation, owner_inputs) in bindings.items():
        bar.update(*position, after=f"{position[0]}/{position[1]} {name}: {label}")
        try:
            call = owner.bind(implementation, owner_inputs)
            # where Numba compiles (or loads its cache); the result is checked
            owner.warm_up(call, owner_inputs)
        except Exception as exc:  # one broken kernel must not hide the others
            errors[label] = exc
        else:
            calls[label] = call
    bar.update(*position, after=f"{position[0]}/{position[1]} {name}: timing")
    timed = interleaved_medians(calls, budget=budget, errors=errors)
    measured = {label: {"seconds": seconds} for label, seconds in timed.items()}
    measured.update({label: {"error": _error(exc)} for label, exc in errors.items()})
    copy_gbps = _gbps(2 * source.nbytes, measured["copy"])
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
        "baseline_name": row.baseline_name,
        # per backend: each backend's result holds its own "baseline"
        "baseline": {"per_backend": True} if per_backend else baseline,
        "backends": results,
    }


def run(quick=False, progress=True):
    """Time every row; return the results as a JSON-able dict."""
    backends = kernels.available_backends()
    budget = 0.2 if quick else 2.0
    bar = ProgressBar(progress)
    with single_thread_blas() as blas:
        table = rows(quick)
        results = [
            _run_row(row, backends, budget, bar, (i, len(table)))
            for i, row in enumerate(table)
        ]
    bar.close()
    return {"header": _header(quick, backends, blas.description), "rows": results}


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
            "(JIT compiled before timing; the results of sparse products and "
            "MLPs checked against float64 dense math); speedup = baseline time "
            "/ backend time (baseline: the NumPy expression, scipy.sparse for sparse "
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
