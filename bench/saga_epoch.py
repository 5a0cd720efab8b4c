"""SAGA + l1 epoch time on the issue's sparse problem, ours against copt's.

    python -m bench.saga_epoch [--rounds 5] [--epochs 5] [--small]

The problem is bench_solvers' "sparse_l1": logistic loss, 50,000 x 100,000
CSR at 0.1% density, beta 1e-5, no intercept (``--small``: the 2,000 x
5,000 smoke version).  Each round times, in turn, ours on every compiled
backend with float64 data, cython with float32 data, and copt's
minimize_saga (when installed); the rounds interleave them so that load on
a shared machine falls on all alike (``kernels.benchmarks.timing``).
Ours: the median of the epoch-to-epoch differences of
``SolverResult.history`` (the solver's clock, which leaves out its
monitoring passes) over ``--epochs`` epochs (``bench_solvers``'s
``epoch_seconds``, as in ``SecondsPerEpoch``).  copt's: the difference of
a 1-epoch and a (1 + epochs)-epoch call divided by ``epochs``, so that its
per-call compilation (about 0.9 s) cancels out (``marginal_seconds``).
Prints the median seconds per epoch of each and the ratio to copt's (the
issue's floor is 0.5x for cython float64, and float32 no slower than
float64).
"""

import argparse
import functools
import os
import statistics

import numpy as np

import kernels
from kernels.benchmarks.timing import interleaved_samples, marginal_seconds


def _problem(small):
    if small:
        os.environ["KERNELS_BENCH_SMOKE"] = "1"
    from . import bench_solvers

    return bench_solvers, bench_solvers.load_problem("sparse_l1")


def _ours_seconds(bench_solvers, problem, backend, epochs):
    result = bench_solvers.solve_ours(
        "saga", problem, backend, max_epochs=epochs, tol=0.0, seed=0
    )
    return bench_solvers.epoch_seconds(result)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="2,000 x 5,000")
    args = parser.parse_args(argv)
    bench_solvers, problem = _problem(args.small)
    X, *rest = problem
    rows = {}
    for backend in ("cython", "numba"):
        if backend in kernels.available_backends():
            rows[f"{backend} float64"] = (backend, problem)
    if "cython float64" in rows:
        rows["cython float32"] = ("cython", (X.astype(np.float32), *rest))
    try:
        import copt  # noqa: F401

        rows["copt minimize_saga"] = ("copt", problem)
    except ImportError:
        print("copt is not installed: no baseline (pip install -e '.[bench]')")
    measures = {}
    for name, (backend, data) in rows.items():
        if backend == "copt":
            bench_solvers.solve_copt(data, 1)  # compile and warm up
            run = functools.partial(bench_solvers.solve_copt, data)
            measures[name] = functools.partial(marginal_seconds, run, args.epochs)
        else:
            _ours_seconds(bench_solvers, data, backend, 2)  # warm up
            measures[name] = functools.partial(
                _ours_seconds, bench_solvers, data, backend, args.epochs + 1
            )
    times = interleaved_samples(
        measures, min_rounds=args.rounds, max_rounds=args.rounds
    )
    for round_ in range(args.rounds):
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{name} {times[name][round_] * 1e3:.1f} ms" for name in rows)
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians.get("copt minimize_saga")
    print(f"\nSAGA + l1, {X.shape[0]:,} x {X.shape[1]:,} CSR, {X.nnz:,} non-zeros")
    print(f"median of {args.rounds} rounds, seconds per epoch")
    for name, seconds in medians.items():
        ratio = f"  {seconds / baseline:.3f}x copt" if baseline else ""
        print(f"  {name:<20} {seconds * 1e3:8.1f} ms{ratio}")
    if "cython float32" in medians:
        ratio = medians["cython float32"] / medians["cython float64"]
        print(f"  cython float32 / float64: {ratio:.3f}")


if __name__ == "__main__":
    main()
