"""The sparsifiers against each other under the accuracy budget (issue 16):
each configuration of ``CONFIGS`` through ``kernels.compress.compress``
with the 1-point budget and the search, on seeds of one data set.

    python -m bench.sparsifiers --out docs/compression [--data digits] [--seeds 0,1,2]

writes ``sparsifiers.md`` (per configuration: the budget's verdicts on
test, each seed's compression ratio by file bytes and drop) and
``sparsifiers.json`` (every point every search trained, with the test
accuracy of its best deployment, computed for this study only: the
search never sees it), and with matplotlib ``sparsifiers.png``, the
Pareto points, test accuracy against compression, per configuration,
with the source's 300x and the literature's LeNet-300-100 figures marked
(ALGORITHMS.md section 3; weight-count ratios marked as such).
"""

import argparse
import json
import os

import numpy as np

from kernels.benchmarks import datasets
from kernels.compress import compress

# (label, options of compress)
CONFIGS = (
    ("prox l1 (SGD), the default", {}),
    ("cumulative l1 (SGD)", {"penalty": "cumulative_l1"}),
    (
        "the source: cumulative l1, SAGA",
        {"penalty": "cumulative_l1", "optimizer": "saga"},
    ),
    ("l1 + neuron group l1", {"penalty": "l1+group_l1", "group_beta": 1e-3}),
    ("gradual magnitude pruning", {"sparsifier": "gmp"}),
    ("gradual magnitude pruning + l1 2e-3", {"sparsifier": "gmp", "beta": 2e-3}),
)
# The literature on LeNet-300-100 / MNIST: (label, ratio)
LITERATURE = (
    ("Han 2015 pruning (weights)", 12),
    ("Deep Compression (bytes)", 40),
    ("RigL+ (bytes)", 66),
    ("Sparse VD (weights)", 68),
    ("the source", 300),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, points = [], []
    for label, options in CONFIGS:
        runs = []
        for seed in seeds:
            data = datasets.load(args.data, seed)
            trained = []
            r = compress(
                data,
                seed=seed,
                latency_budget=0.001,
                on_point=trained.append,
                **options,
            )
            runs.append(r)
            for p in trained:
                test = float(np.mean(p.best.model.predict(data.X_test) == data.y_test))
                points.append(
                    {
                        "config": label,
                        "seed": seed,
                        "ratio": p.dense_bytes / p.best.file_bytes,
                        "test_drop": 100 * (r.dense_accuracy - test),
                        "acceptable": p.accepted,
                    }
                )
        met = [r for r in runs if r.met]
        rows.append(
            f"| {label} | {len(met)}/{len(runs)} | "
            + ", ".join(
                f"{r.compression_ratio:.0f}x {r.budget['test_drop']:+.2f}"
                + ("" if r.met else " MISS")
                for r in runs
            )
            + f" | {np.mean([r.compression_ratio for r in met]) if met else 0:.0f}x |"
        )
        print(rows[-1], flush=True)
    header = (
        "| sparsifier | budget met on test | per seed: ratio, drop (points) "
        "| mean ratio where met |\n|---|---:|---|---:|"
    )
    if not args.out:
        return
    os.makedirs(args.out, exist_ok=True)
    command = "python -m bench.sparsifiers " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]
    )
    with open(os.path.join(args.out, "sparsifiers.md"), "w") as f:
        f.write(
            f"Produced by `{command}` ({args.data}, the 1-point budget, the "
            "search, each seed its own split).\n\n" + header + "\n"
        )
        f.write("\n".join(rows) + "\n")
    with open(os.path.join(args.out, "sparsifiers.json"), "w") as f:
        json.dump(points, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, _ in CONFIGS:
        mine = [p for p in points if p["config"] == label]
        ax.scatter(
            [p["ratio"] for p in mine],
            [-p["test_drop"] for p in mine],
            s=12,
            label=label,
        )
    for name, ratio in LITERATURE:
        ax.axvline(ratio, color="gray", ls=":", lw=0.8)
        ax.annotate(name, (ratio, 0.5), rotation=90, fontsize=6, va="bottom")
    ax.axhline(-1.0, color="red", ls="--", lw=0.8, label="the 1-point budget")
    ax.set_xscale("log")
    ax.set_ylim(-10, 3)
    ax.set_xlabel("compression ratio (dense float32 bytes / model file bytes)")
    ax.set_ylabel("test accuracy against the dense model (points)")
    ax.set_title(f"{args.data}: every point of every search, seeds {args.seeds}")
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "sparsifiers.png"), dpi=120)


if __name__ == "__main__":
    main()
