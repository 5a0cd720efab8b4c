"""How much a second thread can buy a memory-bound product on this machine.

    python -m bench.thread_scaling [--size 20000] [--density 0.01] [--rounds 7]

Times, interleaved round by round (``kernels.benchmarks.timing``;
``--repeats`` calls per sample, the median of ``--rounds`` samples),
``np.copyto`` of an array of the matrix's bytes on one thread and on two
(two Python threads copying a half each: NumPy releases the GIL while it
copies), and ``kernels.spmv`` of a
random float32 CSR matrix (the case ``kernels.benchmarks.sparse.product``)
with ``threads=1`` and ``threads=2`` on every compiled backend.  Prints
the medians, the read bandwidth (bytes of the matrix per second for the
product; bytes read per second for the copy) and the two-thread
speed-ups: the copy's is what the memory system gives two cores, the
ceiling for a product that streams its matrix once.
"""

import argparse
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import kernels
from kernels.benchmarks import sparse
from kernels.benchmarks.timing import interleaved_medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20000, help="m = n")
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=15, help="calls per round")
    args = parser.parse_args(argv)

    shape = (args.size, args.size)
    # the spmv case of kernels.benchmarks (python -m kernels bench, asv)
    cases = {t: sparse.product("csr", shape, args.density, threads=t) for t in (1, 2)}
    A = cases[1].setup().A
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
        for threads, case in cases.items():
            inputs = case.setup()
            call = case.bind(backend, inputs)
            case.warm_up(call, inputs)  # Numba's compilation
            calls[f"spmv {backend}, {threads} thread{'s' * (threads > 1)}"] = call
    for name in ("copy, 1 thread", "copy, 2 threads"):
        calls[name]()  # warm-up
    median = interleaved_medians(
        calls,
        budget=0.0,
        min_rounds=args.rounds,
        max_rounds=args.rounds,
        number=args.repeats,
    )
    pool.shutdown()

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
