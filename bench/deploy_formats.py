"""The deployment formats (``kernels.packed.PackedMatrix``) against each
other on one matrix, and the demo model's file: the figures of the
deployment-format issue, each a ratio of medians from one interleaved run.

    python -m bench.deploy_formats [--backend cython] [--budget 2]
        [--model FILE]

Products (one-sample ``kernels.spmv``, float32 x, one thread), 300x784,
standard normal values, the positions drawn independently:

* int4 against int8 values, CSR layout, at 10% and 60% density;
* the bitmask layout against CSR, int8 values, at 60% density;
* int8 against float32 values, CSR layout, at 10% and 60% density; and
  the older matrix classes beside them (``QuantizedCSR`` int8 against
  ``CSRMatrix`` float32).

The model file: the demo's model (``kernels.compress.compress`` on digits
with its defaults, seed 0; or ``--model FILE``, a file of
``SparseMLP.save``), its bytes and three size ratios, and the time of
``SparseMLP.load`` (memory-mapped) plus the first one-sample ``predict``,
in a warm process with the file in the page cache.
"""

import argparse
import os
import tempfile

import numpy as np

import kernels
from kernels.benchmarks.timing import interleaved_medians, single_thread_blas
from kernels.nn import SparseMLP, size_ratios
from kernels.packed import PackedMatrix
from kernels.sparse import CSRMatrix, QuantizedCSR

SHAPE = (300, 784)


def matrix(density, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(SHAPE)
    return np.where(rng.random(SHAPE) < density, W, 0.0)


def products(backend, budget):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SHAPE[1]).astype(np.float32)
    rows = []
    for density in (0.1, 0.6):
        W = matrix(density)
        candidates = {
            "csr float32": PackedMatrix.from_dense(W, layout="csr", codec="float32"),
            "csr int8": PackedMatrix.from_dense(W, layout="csr", codec="int8"),
            "csr int4": PackedMatrix.from_dense(W, layout="csr", codec="int4"),
            "bitmask int8": PackedMatrix.from_dense(W, layout="bitmask", codec="int8"),
            "CSRMatrix float32": CSRMatrix.from_dense(W.astype(np.float32)),
            "QuantizedCSR int8": QuantizedCSR.from_csr(
                CSRMatrix.from_dense(W.astype(np.float32))
            ),
        }
        calls = {}
        for name, A in candidates.items():
            out = np.empty(SHAPE[0], np.float32)

            def call(A=A, out=out):
                return kernels.spmv(A, x, out=out, threads=1, backend=backend)

            call()
            calls[name] = call
        seconds = interleaved_medians(calls, budget=budget)
        nbytes = {name: A.nbytes for name, A in candidates.items()}
        rows.append((density, seconds, nbytes))
    return rows


def demo_model(path):
    if path is not None:
        return SparseMLP.load(path)
    from kernels.compress import compress, load_digits

    return compress(load_digits(), latency_budget=0.01).model


def load_and_predict(model, budget):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.bin")
        model.save(path)
        x = np.zeros(model.in_features, np.float32)

        def call():
            return SparseMLP.load(path, backend="cython").predict(x)

        call()
        return interleaved_medians({"load + predict": call}, budget=budget)[
            "load + predict"
        ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    backend = args.backend or kernels.get_backend()
    print(f"backend {backend}; 300x784, one sample, float32, one thread")
    with single_thread_blas():
        for density, seconds, nbytes in products(backend, args.budget):
            print(f"\ndensity {density:.0%}")
            print(f"{'format':<20} {'us':>8} {'bytes':>8}")
            for name, s in seconds.items():
                print(f"{name:<20} {1e6 * s:8.2f} {nbytes[name]:8,}")
            pairs = [
                ("csr int4", "csr int8", "int4 / int8 time (floor <= 1.5)"),
                ("bitmask int8", "csr int8", "bitmask / CSR time (floor <= 1.0)"),
                ("csr int8", "csr float32", "int8 / float32 CSR time (floor <= 1.0)"),
                ("QuantizedCSR int8", "CSRMatrix float32", "QuantizedCSR / CSRMatrix"),
            ]
            for a, b, what in pairs:
                print(f"  {what}: {seconds[a] / seconds[b]:.2f}")
        model = demo_model(args.model)
        sizes = model.sizes()
        print(f"\n{model.summary()}")
        print(
            f"\ndemo model file: {sizes['file_bytes']:,} bytes; {size_ratios(sizes)}"
            " (floor: 250x fewer bytes)"
        )
        if "cython" in kernels.available_backends():
            seconds = load_and_predict(model, args.budget)
            print(
                f"load (mmap) + first predict, cython: {1e3 * seconds:.3f} ms "
                "(floor < 2 ms)"
            )


if __name__ == "__main__":
    main()
