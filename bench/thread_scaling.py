"""How much a second thread can buy a memory-bound product on this machine.

    python -m bench.thread_scaling [--size 20000] [--density 0.01] [--rounds 7]

Times, interleaved round by round, ``np.copyto`` of an array of the
matrix's bytes on one thread and on two (two Python threads copying a half
each: NumPy releases the GIL while it copies), and ``kernels.spmv`` of a
random float32 CSR matrix with ``threads=1`` and ``threads=2`` on every
compiled backend.  Prints the medians, the read bandwidth (bytes of the
matrix per second for the product; bytes read per second for the copy)
and the two-thread speed-ups: the copy's is what the memory system gives
two cores, the ceiling for a product that streams its matrix once.
"""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import kernels
from kernels import _bench


def _median_seconds(call, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20000, help="m = n")
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=15, help="calls per round")
    args = parser.parse_args(argv)

    A = _bench._random_csr((args.size, args.size), args.density)
    x = np.random.default_rng(1).standard_normal(args.size, dtype=np.float32)
    y = np.empty(args.size, np.float32)
    source = np.ones(A.nbytes // 8)
    target = np.empty_like(source)
    half = source.size // 2
    pool = ThreadPoolExecutor(2)

    def copy_two_threads():
        first = pool.submit(np.copyto, target[:half], source[:half])
        np.copyto(target[half:], source[half:])
        first.result()

    calls = {
        "copy, 1 thread": lambda: np.copyto(target, source),
        "copy, 2 threads": copy_two_threads,
    }
    backends = [b for b in ("cython", "numba") if b in kernels.available_backends()]
    for backend in backends:
        for threads in (1, 2):
            calls[f"spmv {backend}, {threads} thread{'s' * (threads > 1)}"] = (
                lambda b=backend, t=threads: kernels.spmv(
                    A, x, out=y, threads=t, backend=b
                )
            )
    for call in calls.values():
        call()  # warm-up (and Numba's compilation)
    seconds = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            seconds[name].append(_median_seconds(call, args.repeats))
    pool.shutdown()

    median = {name: float(np.median(values)) for name, values in seconds.items()}
    print(
        f"{args.size}x{args.size} float32 CSR at {args.density:g}: nnz {A.nnz:,}, "
        f"{A.nbytes / 1e6:.1f} MB; medians of {args.rounds} interleaved rounds"
    )
    for name, value in median.items():
        print(f"  {name:24s} {value * 1e3:8.3f} ms  {A.nbytes / value / 1e9:6.1f} GB/s")
    ratios = [("copy", median["copy, 1 thread"] / median["copy, 2 threads"])]
    for b in backends:
        ratios.append(
            (
                f"spmv {b}",
                median[f"spmv {b}, 1 thread"] / median[f"spmv {b}, 2 threads"],
            )
        )
    print("two threads / one: " + ", ".join(f"{n} {r:.2f}x" for n, r in ratios))


if __name__ == "__main__":
    main()
