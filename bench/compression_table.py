"""The compression pipeline with its defaults on data it was not tuned on
(issue 16): every data set of ``kernels.benchmarks.datasets`` through
``kernels.compress.compress`` with no per-data-set option (LeNet-300-100,
the 1-point budget, the search), one row per data set and seed.

    python -m bench.compression_table --out docs/compression [--seeds 0,1,2,3,4]
        [--data digits,wine] [--max-drop 1.0] [--sparsifier gmp] [--beta B]

writes ``table.md`` and ``table.json`` into ``--out`` and prints the table.
Columns: dense and compressed test accuracy, the drop in points, whether
the budget held on test (the tool's own verdict, ``result.met``), the
three size ratios of ``SparseMLP.sizes`` (parameters, value bits, model
file bytes), the strength the search chose, its points, and seconds.
"""

import argparse
import json
import os

from kernels.benchmarks import datasets
from kernels.compress import compress


def run(names, seeds, max_drop, **options):
    rows = []
    for name in names:
        for seed in seeds:
            data = datasets.load(name, seed)
            r = compress(
                data, seed=seed, max_drop=max_drop, latency_budget=0.01, **options
            )
            s = r.sizes
            rows.append(
                {
                    "data": name,
                    "sparsifier": r.settings["sparsifier"],
                    "seed": seed,
                    "dense_accuracy": r.dense_accuracy,
                    "accuracy": r.accuracy,
                    "drop": r.budget["test_drop"],
                    "met": r.met,
                    "parameter_ratio": s["parameter_ratio"],
                    "bit_ratio": s["bit_ratio"],
                    "byte_ratio": s["byte_ratio"],
                    "file_bytes": s["file_bytes"],
                    "precision": r.fmt,
                    "beta": r.settings["beta"],
                    "density": r.settings["density"],
                    "points": len(r.search),
                    "seconds": r.seconds,
                }
            )
            print(_row(rows[-1]), flush=True)
    return rows


HEADER = (
    "| data | sparsifier | seed | dense | compressed | drop (points) | budget "
    "| parameters | value bits | file bytes | file | precision | beta | density "
    "| points | seconds |\n"
    "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"
)


def _row(r):
    return (
        f"| {r['data']} | {r['sparsifier']} | {r['seed']} | "
        f"{100 * r['dense_accuracy']:.2f}% | "
        f"{100 * r['accuracy']:.2f}% | {r['drop']:.2f} | "
        f"{'met' if r['met'] else 'MISS'} | {r['parameter_ratio']:.1f}x | "
        f"{r['bit_ratio']:.1f}x | {r['byte_ratio']:.1f}x | {r['file_bytes']:,} | "
        f"{r['precision']} | {r['beta']:.3g} | "
        + ("" if r["density"] is None else f"{r['density']:.3g}")
        + f" | {r['points']} | {r['seconds']:.0f} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--data", default=",".join(datasets.NAMES))
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--sparsifier", default="l1")
    parser.add_argument("--beta", type=float, default=None)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(HEADER)
    rows = run(
        args.data.split(","),
        seeds,
        args.max_drop,
        sparsifier=args.sparsifier,
        beta=args.beta,
    )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        command = "python -m bench.compression_table " + " ".join(
            argv if argv is not None else __import__("sys").argv[1:]
        )
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(f"Produced by `{command}`.\n\n{HEADER}\n")
            f.write("\n".join(_row(r) for r in rows) + "\n")
        with open(os.path.join(args.out, "table.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
