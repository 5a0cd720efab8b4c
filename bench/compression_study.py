"""The compression pipeline's study on the embedded digits (issue 5):

* the Pareto curve, test accuracy against compression ratio, per optimizer
  and penalty over a sweep of the penalty's strength;
* the lambda-estimator (lam 0.6, 0.7, 0.8) against plain SVRG and SGD at
  an equal IFO budget, on the dense and on the sparse-regularised problem:
  final training loss and test accuracy.

    python -m bench.compression_study --out docs/compression [--seeds 3]

writes ``pareto.md``, ``lambda.md``, ``results.json`` and, when matplotlib
is installed, ``pareto.png`` into ``--out``.  Every point is the mean over
``--seeds`` seeds (each seed its own stratified split and initialisation)
with the dense baseline of the same seed.  About 10 s per point per seed
on one core of the 2-core development VM.
"""

import argparse
import json
import os
import time

import numpy as np

from kernels.benchmarks.timing import single_thread_blas
from kernels.compress import compress, load_digits, standardised, train_dense
from kernels.train import train_mlp

# (label, optimizer, lam)
OPTIMIZERS = (
    ("sgd", "sgd", None),
    ("svrg", "svrg", None),
    ("lambda 0.7", "svrg", 0.7),
    ("saga", "saga", None),
    ("vcsg", "vcsg", None),
)
# (penalty, group_beta as a fraction of beta)
PENALTIES = (
    ("cumulative_l1", 0.0),
    ("l1", 0.0),
    ("cumulative_l1+group_l1", 0.25),
)
# The strengths swept per optimizer: each method's range from little
# compression to collapse (a method that takes fewer steps per IFO, as
# SVRG's 3 IFOs per sample and step, needs a larger beta for the same
# sparsity); chosen from a coarser sweep (5e-3 .. 8e-2, every method).
BETAS = {
    "sgd": (5e-3, 7.5e-3, 1e-2, 1.25e-2, 1.5e-2, 2e-2),
    "saga": (5e-3, 7.5e-3, 1e-2, 1.25e-2, 1.5e-2, 2e-2),
    "svrg": (1e-2, 1.25e-2, 1.5e-2, 2e-2),
    "lambda 0.7": (1e-2, 1.25e-2, 1.5e-2, 2e-2),
    "vcsg": (2e-2, 2.5e-2, 3e-2, 3.5e-2),
}
STEPS = (0.05, 0.1, 0.2, 0.4, 0.8)
LAMBDAS = (("sgd", "sgd", None), ("svrg", "svrg", None)) + tuple(
    (f"lambda {lam}", "svrg", lam) for lam in (0.6, 0.7, 0.8)
)


def pareto(seeds, log):
    rows = []
    datasets = [load_digits(seed) for seed in seeds]
    denses = [train_dense(d, seed=s) for d, s in zip(datasets, seeds, strict=True)]
    for label, optimizer, lam in OPTIMIZERS:
        for penalty, group in PENALTIES:
            for beta in BETAS[label]:
                runs = [
                    compress(
                        d,
                        optimizer=optimizer,
                        lam=lam,
                        penalty=penalty,
                        beta=beta,
                        group_beta=group * beta,
                        seed=s,
                        dense=dense,
                        latency_budget=0.005,
                    )
                    for d, s, dense in zip(datasets, seeds, denses, strict=True)
                ]
                row = {
                    "optimizer": label,
                    "penalty": penalty,
                    "beta": beta,
                    "group_beta": group * beta,
                    "dense_accuracy": float(np.mean([r.dense_accuracy for r in runs])),
                    "accuracy": float(np.mean([r.accuracy for r in runs])),
                    "accuracies": [r.accuracy for r in runs],
                    "ratio": float(np.mean([r.compression_ratio for r in runs])),
                    "ratios": [r.compression_ratio for r in runs],
                    "bytes": float(np.mean([r.bytes for r in runs])),
                    "nnz": float(np.mean([r.nnz for r in runs])),
                    "hidden": [r.hidden for r in runs],
                }
                rows.append(row)
                log(
                    f"{label:11s} {penalty:24s} beta {beta:.3g}: accuracy "
                    f"{100 * row['accuracy']:.2f}% (dense "
                    f"{100 * row['dense_accuracy']:.2f}%), ratio {row['ratio']:.0f}x"
                )
    return rows


def lambda_study(seeds, epochs, beta, log):
    """Each method at each step of ``STEPS`` (a step at which a run
    diverges is left out); the row keeps the step with the lowest mean
    final training objective (the loss, plus the penalty on the sparse
    problem), so no method is judged at a step that suits another."""
    rows = []
    for problem, penalty in (("dense", None), ("sparse", "cumulative_l1")):
        for label, optimizer, lam in LAMBDAS:
            candidates = []
            for step in STEPS:
                try:
                    candidates.append(
                        _lambda_row(
                            seeds,
                            epochs,
                            beta,
                            problem,
                            penalty,
                            label,
                            optimizer,
                            lam,
                            step,
                        )
                    )
                except FloatingPointError:  # diverged at this step
                    pass
            row = min(candidates, key=lambda r: r["objective"])
            rows.append(row)
            log(
                f"{problem:6s} {label:11s}: step {row['step']}, loss "
                f"{row['loss']:.4f}, objective {row['objective']:.4f}, accuracy "
                f"{100 * row['accuracy']:.2f}%, nnz {row['nnz']:.0f}"
            )
    return rows


def _lambda_row(seeds, epochs, beta, problem, penalty, label, optimizer, lam, step):
    losses, objectives, accuracies, nnz = [], [], [], []
    for seed in seeds:
        data = load_digits(seed)
        X, X_test, _, _ = standardised(data)
        result = train_mlp(
            X,
            data.y_train,
            (300, 100),
            optimizer=optimizer,
            lam=lam,
            penalty=penalty,
            beta=beta if penalty else 0.0,
            step=step,
            epochs=epochs,
            seed=seed,
        )
        losses.append(result.history[-1]["loss"])
        objectives.append(result.history[-1]["objective"])
        accuracies.append(result.network.accuracy(X_test, data.y_test))
        nnz.append(result.network.nnz)
    return {
        "problem": problem,
        "method": label,
        "step": step,
        "ifos": int(epochs * len(data.y_train)),
        "loss": float(np.mean(losses)),
        "objective": float(np.mean(objectives)),
        "accuracy": float(np.mean(accuracies)),
        "nnz": float(np.mean(nnz)),
    }


def pareto_table(rows):
    lines = [
        "| optimizer | penalty | beta | test accuracy | dense | compression | "
        "bytes | non-zeros |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['optimizer']} | {r['penalty']} | {r['beta']:.3g} | "
            f"{100 * r['accuracy']:.2f}% | {100 * r['dense_accuracy']:.2f}% | "
            f"{r['ratio']:.0f}x | {r['bytes']:.0f} | {r['nnz']:.0f} |"
        )
    return "\n".join(lines)


def lambda_table(rows):
    lines = [
        "| problem | method | best step | IFOs | final training loss | objective "
        "| test accuracy | non-zeros |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['method']} | {r['step']} | {r['ifos']:,} | "
            f"{r['loss']:.4f} | {r['objective']:.4f} | {100 * r['accuracy']:.2f}% | "
            f"{r['nnz']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(PENALTIES), figsize=(15, 4.5), sharey=True)
    for ax, (penalty, _) in zip(axes, PENALTIES, strict=True):
        for label, _, _ in OPTIMIZERS:
            points = sorted(
                (r["ratio"], 100 * r["accuracy"])
                for r in rows
                if r["optimizer"] == label and r["penalty"] == penalty
            )
            ax.plot(*zip(*points, strict=True), "o-", label=label)
        dense = 100 * np.mean([r["dense_accuracy"] for r in rows])
        ax.axhline(dense, color="gray", ls="--", label="dense")
        ax.axhline(dense - 1, color="gray", ls=":", label="dense - 1 point")
        ax.set_xscale("log")
        ax.set_ylim(dense - 6, dense + 1)  # collapsed models (10%) off the chart
        ax.set_title(penalty)
        ax.set_xlabel("compression ratio")
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/compression")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lambda-epochs", type=float, default=60)
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw pareto.png and rewrite pareto.md from --out's results.json, "
        "without training",
    )
    args = parser.parse_args(argv)
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as file:
            results = json.load(file)
        plot(results["pareto"], os.path.join(args.out, "pareto.png"))
        path = os.path.join(args.out, "pareto.md")
        with open(path) as file:
            header = file.read().split("\n\n")[0]
        with open(path, "w") as file:
            file.write(header + "\n\n" + pareto_table(results["pareto"]) + "\n")
        return
    os.makedirs(args.out, exist_ok=True)
    seeds = list(range(args.seeds))
    started = time.perf_counter()

    def log(line):
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True)

    with single_thread_blas():
        lambdas = lambda_study(seeds, args.lambda_epochs, 8e-3, log)
        rows = pareto(seeds, log)
    header = (
        f"Digits (64-300-100-10), mean of {len(seeds)} seeds; written by "
        f"`python -m bench.compression_study --out {args.out} --seeds "
        f"{args.seeds}` in {time.perf_counter() - started:.0f} s.\n\n"
    )
    with open(os.path.join(args.out, "pareto.md"), "w") as file:
        file.write(header + pareto_table(rows) + "\n")
    with open(os.path.join(args.out, "lambda.md"), "w") as file:
        file.write(header + lambda_table(lambdas) + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump({"seeds": seeds, "pareto": rows, "lambda": lambdas}, file, indent=1)
    plot(rows, os.path.join(args.out, "pareto.png"))
    log("done")


if __name__ == "__main__":
    main()
