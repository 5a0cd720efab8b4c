"""Latency of one-sample inference: ``SparseMLP.forward`` / ``predict`` /
``predict_proba`` on a 1-D float32 input, beside the dense NumPy forward
of a 64-300-100-10 float32 network (``kernels.benchmarks.nn``'s
``dense_forward``: ``x @ W.T + b``, an in-place ReLU per hidden layer).

A script, not an asv benchmark (asv's own timing loop adds more than the
microsecond measured here)::

    python -m bench.one_sample_latency [MODEL.bin] [--backend cython]
        [--repeat 31] [--number 20000]

MODEL.bin is a file written by ``SparseMLP.save`` (default
/tmp/digits_model.bin; when it does not exist, a 64-25-28-10 int8 model of
random weights at about 15% density stands in).  Each figure is the median
over ``repeat`` samples of ``number`` calls each, in microseconds per
call, with the fastest sample beside it (on a shared machine the median
moves with the other load, the minimum much less); the samples of the four
calls interleaved (``kernels.benchmarks.timing``); BLAS pinned to one
thread when threadpoolctl is installed.  Also prints the dense
baseline's median time over our forward's.
"""

import argparse
import functools
import os
import platform
import statistics

import numpy as np

from kernels.benchmarks.nn import dense_forward
from kernels.benchmarks.timing import (
    interleaved_samples,
    seconds_per_call,
    single_thread_blas,
)

DENSE_LAYERS = (64, 300, 100, 10)


def dense_network(seed=0):
    """(weights, biases) of a random float32 64-300-100-10 network."""
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for n_in, n_out in zip(DENSE_LAYERS[:-1], DENSE_LAYERS[1:], strict=True):
        weights.append(rng.standard_normal((n_out, n_in), dtype=np.float32))
        biases.append(rng.standard_normal(n_out, dtype=np.float32))
    return weights, biases


def stand_in_model(seed=0):
    from kernels.nn import SparseMLP

    rng = np.random.default_rng(seed)
    sizes = (64, 25, 28, 10)
    weights = [
        rng.standard_normal((n_out, n_in))
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    biases = [rng.standard_normal(n_out) for n_out in sizes[1:]]
    return SparseMLP.from_dense(weights, biases, density=0.15, fmt="int8")


def timings_us(calls, repeat, number):
    """name -> (median, minimum) over ``repeat`` samples of ``number``
    calls each, in us per call; the calls' samples interleaved."""
    for call in calls.values():
        call()  # warm up: first-call set-up out of the timed runs
    samples = interleaved_samples(
        {
            name: functools.partial(seconds_per_call, call, number)
            for name, call in calls.items()
        },
        min_rounds=repeat,
        max_rounds=repeat,
    )
    return {
        name: (1e6 * statistics.median(values), 1e6 * min(values))
        for name, values in samples.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="/tmp/digits_model.bin")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    # imported here, not at the top: asv imports every module of bench/ at
    # every commit it benchmarks, some from before kernels.nn
    from kernels.nn import SparseMLP

    if os.path.exists(args.model):
        model, source = SparseMLP.load(args.model, backend=args.backend), args.model
    else:
        model, source = stand_in_model(), "random stand-in (file not found)"
        model.backend = args.backend
    x = np.random.default_rng(1).standard_normal(model.in_features)
    x = x.astype(np.float32)
    weights, biases = dense_network()
    xd = np.random.default_rng(2).standard_normal(DENSE_LAYERS[0]).astype(np.float32)

    with single_thread_blas():
        calls = {
            "dense numpy forward (64-300-100-10)": functools.partial(
                dense_forward, xd, weights, biases
            ),
            "forward": functools.partial(model.forward, x),
            "predict": functools.partial(model.predict, x),
            "predict_proba": functools.partial(model.predict_proba, x),
        }
        rows = timings_us(calls, args.repeat, args.number)
    print(f"model: {model!r} from {source}; backend {model.backend or 'default'}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}; median of {args.repeat} x {args.number} calls"
    )
    print(f"  {'':40s} {'median':>8s}    {'min':>8s}")
    for name, (median, fastest) in rows.items():
        print(f"  {name:40s} {median:8.3f} us {fastest:8.3f} us")
    dense = rows["dense numpy forward (64-300-100-10)"][0]
    print(f"  dense / forward (medians): {dense / rows['forward'][0]:.1f}x")


if __name__ == "__main__":
    main()
