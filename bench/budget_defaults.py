"""How the accuracy budget's defaults were chosen (issue 16): the demo's
pipeline (digits, LeNet-300-100, a 1-point budget, the search) on seeds
0-4 for each validation fraction and confidence of ``--grid``, with the
test split's verdict (``result.met``), the drop in points and the
compression ratio by file bytes.

    python -m bench.budget_defaults [--grid 0.2:0,0.2:1,0.33:0] [--seeds 0,1,2,3,4]
        [--data digits]

About 25 s per run on one core of the 2-core development VM.
"""

import argparse

from kernels.benchmarks import datasets
from kernels.compress import compress

GRID = "0.2:0,0.2:1,0.33:0,0.33:0.5,0.33:1,0.4:0,0.5:0"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=GRID, help="VALIDATION:CONFIDENCE,...")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--data", default="digits")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| validation | confidence | met | per seed: ratio, drop (points) |")
    print("|---:|---:|---:|---|")
    for item in args.grid.split(","):
        validation, confidence = (float(v) for v in item.split(":"))
        runs = [
            compress(
                datasets.load(args.data, seed),
                seed=seed,
                validation=validation,
                confidence=confidence,
                latency_budget=0.001,
            )
            for seed in seeds
        ]
        met = sum(r.met for r in runs)
        cells = ", ".join(
            f"{r.compression_ratio:.0f}x {r.budget['test_drop']:+.2f}"
            + ("" if r.met else " MISS")
            for r in runs
        )
        print(
            f"| {validation:g} | {confidence:g} | {met}/{len(runs)} | {cells} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
