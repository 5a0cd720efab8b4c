"""Convergence plots of the solvers: relative suboptimality (F - F*) / F*
against IFOs (single-sample gradient evaluations) and against seconds, one
PNG pair per problem of bench/bench_solvers.py, every solver of ours (one
backend) beside scikit-learn's SAGA and copt's (when installed).

    python -m bench.plot_solvers --out plots              # the three small problems
    python -m bench.plot_solvers --out plots --sparse     # and the 50,000 x 100,000 one

Needs matplotlib and scikit-learn (pip install -e ".[bench,plot]").  F* is
the smallest objective reached by any run or by a run of SAGA 20 times as
long (so that no plotted run defines its own target), lowered by 1e-12
relative so that the best point stays on the log axis.  Our curves come from
SolverResult.history (each epoch's IFO count, seconds and objective); the
peers have no per-epoch hook, so each of their points is a separate run of
k epochs (k = 1, 2, 4, ...), timed from scratch.  The run prints the IFOs
and seconds each solver needed to reach 1e-6 relative suboptimality.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from .bench_solvers import (
    OURS,
    load_problem,
    objective,
    solve_copt,
    solve_ours,
    solve_sklearn,
)

SMALL = ("breast_cancer", "digits_l2", "digits_l1")
TOLERANCE = 1e-6


def _our_curve(name, problem, backend, epochs):
    options = {"batch_size": problem[0].shape[0]} if name == "sgd" else {}
    if name == "vcsg":
        options.update(lam_unbiased=0.5, eps=0.0)
    result = solve_ours(
        name, problem, backend, max_epochs=epochs, tol=0.0, seed=0, **options
    )
    history = np.asarray(result.history, dtype=np.float64)
    return history[:, 0], history[:, 1], history[:, 2]


def _peer_curve(run, coef_of, problem, epochs):
    ifos, seconds, objectives = [], [], []
    n = problem[0].shape[0]
    k = 1
    while k <= epochs:
        started = time.perf_counter()
        coef = coef_of(run(problem, k))
        seconds.append(time.perf_counter() - started)
        ifos.append(k * n)
        objectives.append(objective(problem, coef))
        k *= 2
    return np.array(ifos, float), np.array(seconds), np.array(objectives)


def _curves(problem_name, backend, epochs):
    problem = load_problem(problem_name)
    long_run = solve_ours(
        "saga", problem, backend, max_epochs=20 * epochs, tol=0.0, seed=1
    )
    curves = {}
    for name in OURS:
        curves[f"{name} ({backend})"] = _our_curve(name, problem, backend, epochs)
    curves["scikit-learn saga"] = _peer_curve(
        solve_sklearn, lambda model: model.coef_, problem, epochs
    )
    if not problem_name.startswith("digits"):  # copt has no multinomial loss
        try:
            curves["copt saga"] = _peer_curve(
                solve_copt, lambda result: result.x, problem, epochs
            )
        except ImportError:
            pass
    return curves, long_run.objective


def _first_reaching(values, target):
    hits = np.flatnonzero(values <= target)
    return hits[0] if hits.size else None


def _plot(problem_name, curves, long_run_objective, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = min(values.min() for _, _, values in curves.values())
    best = min(best, long_run_objective)
    best *= 1 - 1e-12
    print(f"\n{problem_name}: F* = {best:.12g}")
    print(f"  {'solver':24s} {'IFOs to 1e-6':>14s} {'seconds to 1e-6':>16s}")
    for axis_name, column in (("IFOs", 0), ("seconds", 1)):
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for label, curve in curves.items():
            gap = (curve[2] - best) / abs(best)
            axes.semilogy(curve[column], gap, marker=".", label=label)
            if column == 0:
                hit = _first_reaching(gap, TOLERANCE)
                ifos = "not reached" if hit is None else f"{curve[0][hit]:.3g}"
                secs = "" if hit is None else f"{curve[1][hit]:.3g}"
                print(f"  {label:24s} {ifos:>14s} {secs:>16s}")
        axes.axhline(TOLERANCE, color="grey", linewidth=0.5)
        axes.set_xlabel(axis_name)
        axes.set_ylabel("(F - F*) / F*")
        axes.set_title(f"{problem_name}: objective against {axis_name}")
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = out / f"{problem_name}-{axis_name}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        print(f"  wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("plots"))
    parser.add_argument("--backend", default="cython")
    parser.add_argument("--epochs", type=int, default=256)
    parser.add_argument(
        "--sparse", action="store_true", help="add the 50,000 x 100,000 problem"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    problems = SMALL + (("sparse_l1",) if args.sparse else ())
    for problem_name in problems:
        epochs = min(args.epochs, 16) if problem_name == "sparse_l1" else args.epochs
        _plot(problem_name, *_curves(problem_name, args.backend, epochs), args.out)


if __name__ == "__main__":
    main()
