"""Latency of one-sample inference: ``SparseMLP.forward`` / ``predict`` /
``predict_proba`` on a 1-D float32 input, beside the dense NumPy forward
of a 64-300-100-10 float32 network (``W @ x + b``, ``np.maximum`` per
layer).

A script, not an asv benchmark (asv's own timing loop adds more than the
microsecond measured here)::

    python -m bench.one_sample_latency [MODEL.npz] [--backend cython]
        [--repeat 31] [--number 20000]

MODEL.npz is a file written by ``SparseMLP.save`` (default
/tmp/digits_model.npz; when it does not exist, a 64-25-28-10 int8 model of
random weights at about 15% density stands in).  Each figure is the median
over ``repeat`` runs of ``timeit`` with ``number`` calls each, in
microseconds per call, with the fastest run beside it (on a shared machine
the median moves with the other load, the minimum much less); BLAS pinned
to one thread when threadpoolctl is installed.  Also prints the dense
baseline's median time over our forward's.
"""

import argparse
import contextlib
import os
import platform
import timeit

import numpy as np

DENSE_LAYERS = (64, 300, 100, 10)


def dense_network(seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((n_out, n_in), dtype=np.float32),
            rng.standard_normal(n_out, dtype=np.float32),
        )
        for n_in, n_out in zip(DENSE_LAYERS[:-1], DENSE_LAYERS[1:], strict=True)
    ]


def dense_forward(x, layers):
    """The dense forward a NumPy user writes (ReLU on the hidden layers)."""
    last = len(layers) - 1
    for i, (W, b) in enumerate(layers):
        x = W @ x + b
        if i < last:
            x = np.maximum(x, 0)
    return x


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


def timing_us(call, repeat, number):
    """(median, minimum) over ``repeat`` runs, in us per call."""
    call()  # warm up: first-call set-up out of the timed runs
    times = np.array(timeit.repeat(call, repeat=repeat, number=number))
    return 1e6 * float(np.median(times)) / number, 1e6 * times.min() / number


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="/tmp/digits_model.npz")
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
    layers = dense_network()
    xd = np.random.default_rng(2).standard_normal(DENSE_LAYERS[0]).astype(np.float32)

    limits = contextlib.nullcontext()
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(1)
    with limits:
        rows = {
            "dense numpy forward (64-300-100-10)": timing_us(
                lambda: dense_forward(xd, layers), args.repeat, args.number
            ),
            "forward": timing_us(lambda: model.forward(x), args.repeat, args.number),
            "predict": timing_us(lambda: model.predict(x), args.repeat, args.number),
            "predict_proba": timing_us(
                lambda: model.predict_proba(x), args.repeat, args.number
            ),
        }
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
