"""How the project times code, in one place: the timing loops, the copy
bandwidth that memory-bound kernels are compared with, and BLAS pinning.

Used by ``python -m kernels bench``, the asv suite in bench/, its scripts,
and the latency figures of the compression pipeline (``kernels.compress``,
``python -m kernels predict``).

Every loop here times calls that are warmed up already: the caller makes
the first call (where Numba compiles, or loads its cache, and the pages of
the inputs are first touched) before any timed one.  A sample loops over
its call until it lasts ``SAMPLE_SECONDS``, so that the clock's resolution
and overhead do not matter for microsecond calls; the figure is the median
of the samples, which a burst of load on a shared machine moves less than
the mean.  Several calls compared with each other are timed in rounds of
one sample of every call (``interleaved_medians``), so that all of them see
the same state of the machine (clock frequency, other processes).
"""

import statistics
import time

import numpy as np

__all__ = [
    "SAMPLE_SECONDS",
    "BlasLimit",
    "calls_per_sample",
    "copy_gbps",
    "copy_gbps_of_bytes",
    "copy_source",
    "interleaved_medians",
    "interleaved_samples",
    "marginal_seconds",
    "median_seconds",
    "seconds_per_call",
    "single_thread_blas",
]

SAMPLE_SECONDS = 1e-3


def seconds_per_call(call, number=1):
    """Wall seconds per call of ``number`` calls of ``call()`` in a row."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def calls_per_sample(call):
    """How many calls of ``call()`` make a sample of about
    ``SAMPLE_SECONDS``, from one timed call (at least 1)."""
    return max(1, int(SAMPLE_SECONDS / max(seconds_per_call(call), 1e-9)))


def interleaved_samples(
    measures, *, budget=0.0, min_rounds=5, max_rounds=100, errors=None
):
    """Samples of each of ``measures`` (a dict name -> a function that takes
    one sample and returns it, e.g. seconds), taken in rounds of one sample
    of every measure: at least ``min_rounds`` rounds, more while ``budget``
    seconds last, at most ``max_rounds``.  Returns name -> list of samples.

    A measure that raises propagates its exception, unless ``errors`` is a
    dict: the measure is then left out of the rest of the run and of the
    result, and its exception is stored in ``errors`` under its name."""
    samples = {name: [] for name in measures}
    deadline = time.perf_counter() + budget
    rounds = 0
    while samples and rounds < max_rounds:
        if rounds >= min_rounds and time.perf_counter() > deadline:
            break
        for name in list(samples):
            try:
                samples[name].append(measures[name]())
            except Exception as exc:
                if errors is None:
                    raise
                errors[name] = exc
                del samples[name]
        rounds += 1
    return samples


def interleaved_medians(
    calls, *, budget, min_rounds=5, max_rounds=100, number=None, errors=None
):
    """Median seconds per call of each of ``calls`` (a dict name -> call,
    warmed up already), timed by ``interleaved_samples``, a sample being
    ``number`` calls in a row (default: ``calls_per_sample`` of each call).
    Returns name -> seconds; ``errors`` as for ``interleaved_samples``."""
    measures = {}
    for name, call in calls.items():
        try:
            count = calls_per_sample(call) if number is None else number
        except Exception as exc:
            if errors is None:
                raise
            errors[name] = exc
            continue
        measures[name] = lambda call=call, count=count: seconds_per_call(call, count)
    samples = interleaved_samples(
        measures,
        budget=budget,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        errors=errors,
    )
    return {name: statistics.median(values) for name, values in samples.items()}


def median_seconds(call, *, budget=0.1, min_samples=3, max_samples=25):
    """Median seconds per call of ``call()`` (warmed up already): at least
    ``min_samples`` samples of ``SAMPLE_SECONDS``, more while ``budget``
    seconds last, at most ``max_samples``."""
    return interleaved_medians(
        {"call": call},
        budget=budget,
        min_rounds=min_samples,
        max_rounds=max_samples,
    )["call"]


def marginal_seconds(run, units):
    """Seconds per unit of work of ``run(k)``, a call doing ``k`` units
    (epochs, say) after a fixed cost (a compilation, a set-up): the
    difference of the wall times of ``run(1)`` and ``run(1 + units)``,
    over ``units``, so that the fixed cost cancels out."""
    seconds = []
    for count in (1, 1 + units):
        start = time.perf_counter()
        run(count)
        seconds.append(time.perf_counter() - start)
    return (seconds[1] - seconds[0]) / units


def copy_gbps(array, seconds=median_seconds):
    """GB/s of ``np.copyto`` of ``array`` into a preallocated array (read +
    write: 2 * array.nbytes per copy): the machine's streaming bandwidth
    for exactly this working set.  ``seconds(call)`` times the copy."""
    target = np.empty_like(array)
    np.copyto(target, array)
    return 2 * array.nbytes / seconds(lambda: np.copyto(target, array)) / 1e9


def copy_gbps_of_bytes(nbytes, seconds=median_seconds):
    """``copy_gbps`` of a copy that moves (reads + writes) ``nbytes``, as
    many as a kernel of ``nbytes`` in the cost model, through a working set
    of the same size."""
    return copy_gbps(copy_source(nbytes), seconds)


def copy_source(nbytes):
    """The array whose copy moves (reads + writes) about ``nbytes``."""
    return np.ones(max(1, nbytes // 16))


def single_thread_blas():
    """Limit BLAS to one thread, from this call on, through threadpoolctl
    when it is installed (nothing otherwise), so that a NumPy expression or
    a peer that reaches BLAS is compared single thread to single thread.

    Returns a ``BlasLimit``: as a context manager, the previous limits come
    back at its exit; called on its own (in asv's ``setup``), the limit
    lasts for the rest of the process."""
    return BlasLimit()


class BlasLimit:
    """BLAS limited to one thread (see ``single_thread_blas``);
    ``description`` says whether it is: "1 thread (threadpoolctl)" or
    "not pinned (threadpoolctl is not installed)"."""

    def __init__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self._limits = None
            self.description = "not pinned (threadpoolctl is not installed)"
        else:
            self._limits = threadpool_limits(limits=1, user_api="blas")
            self.description = "1 thread (threadpoolctl)"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._limits is not None:
            self._limits.restore_original_limits()
