"""A benchmark case: one kernel of ours on one input, and the peers (the
NumPy expression a user would write instead, scipy.sparse, the dense
model, onnxruntime) that it is compared with.

A ``Case`` holds no arrays: ``setup()`` makes fresh inputs (outputs
preallocated, so that the kernel is timed and not the allocation), and
``bind(implementation, inputs)`` returns the call that a timing loop
repeats, for a backend of ours or for a peer.  Every call returns its
result, which ``warm_up`` checks where the case has a ``check``.
"""

import dataclasses
import functools
import importlib.util
import types
from collections.abc import Callable, Mapping

import numpy as np

import kernels
from kernels.benchmarks.timing import copy_source

__all__ = ["BACKENDS", "EXPRESSION", "Case", "Peer", "expression", "random_array"]

# Our implementations: every backend, available here or not (a case of an
# unavailable one cannot be bound: see ``Case.bind``).
BACKENDS = ("cython", "numba", "numpy")
# The name of the peer that is the NumPy expression a user would write.
EXPRESSION = "numpy-expression"


@dataclasses.dataclass(frozen=True)
class Peer:
    """An implementation that is not ours.  ``prepare(inputs)`` does what a
    user of the peer would do once (build a scipy matrix, a dense matrix,
    an onnxruntime session) and returns the call to time; ``label`` is its
    name in the table of ``python -m kernels bench``; ``requires`` the
    modules it needs; ``bytes_moved``, when not None, what the peer's call
    moves in the cost model, where it differs from the case's (a dense
    matrix moves all its m * n values)."""

    label: str
    prepare: Callable[[types.SimpleNamespace], Callable[[], object]]
    requires: tuple = ()
    bytes_moved: int | None = None

    @property
    def available(self):
        """Whether every module of ``requires`` is installed."""
        return all(importlib.util.find_spec(name) for name in self.requires)


def expression(function, label="NumPy expr"):
    """The ``Peer`` that calls ``function(inputs)``: a NumPy expression,
    which needs nothing prepared."""
    return Peer(label, lambda inputs: functools.partial(function, inputs))


@dataclasses.dataclass(frozen=True)
class Case:
    """``kernel`` (the name the table shows) on an input of ``shape`` and
    ``dtype``.

    * ``setup()``: fresh inputs, a namespace (outputs preallocated);
    * ``ours(inputs, backend)``: the public function of this library with
      ``backend=``, returning its result;
    * ``peers``: name -> ``Peer``, what ours is compared with;
    * ``bytes_moved``: what our kernel must move in the cost model
      (ALGORITHMS.md section 6), for GB/s;
    * ``copy_of``: the input whose ``np.copyto`` bandwidth the kernel is
      compared with, or None for a copy of ``bytes_moved`` through a
      working set of the same size (sparse products, models);
    * ``check(inputs, result)``: raises AssertionError when the result of
      a first call is wrong (None: no check).
    """

    kernel: str
    shape: tuple
    dtype: str
    setup: Callable[[], types.SimpleNamespace]
    ours: Callable[[types.SimpleNamespace, str], object]
    peers: Mapping[str, Peer]
    bytes_moved: int
    copy_of: str | None = "x"
    check: Callable[[types.SimpleNamespace, object], None] | None = None

    @property
    def implementations(self):
        """Every implementation's name: our backends, then the peers."""
        return (*BACKENDS, *self.peers)

    def bind(self, implementation, inputs=None):
        """The call of ``implementation`` (a backend or a peer's name) on
        ``inputs`` (default: fresh ones), with nothing left to prepare.
        Raises NotImplementedError, asv's "skip", for an implementation
        that cannot run here (a backend not built, a peer not installed)."""
        if inputs is None:
            inputs = self.setup()
        if implementation in self.peers:
            peer = self.peers[implementation]
            if not peer.available:
                missing = ", ".join(peer.requires)
                raise NotImplementedError(f"{implementation} needs {missing}")
            return peer.prepare(inputs)
        if implementation not in BACKENDS:
            raise ValueError(
                f"implementation must be one of {self.implementations}, "
                f"got {implementation!r}"
            )
        if implementation not in kernels.available_backends():
            raise NotImplementedError(f"backend {implementation!r} is not available")
        return functools.partial(self.ours, inputs, implementation)

    def bytes_of(self, implementation):
        """``bytes_moved`` of ``implementation``'s call."""
        peer = self.peers.get(implementation)
        if peer is not None and peer.bytes_moved is not None:
            return peer.bytes_moved
        return self.bytes_moved

    def warm_up(self, call, inputs):
        """The first call of ``call`` (bound on ``inputs``), where Numba
        compiles (or loads its cache) and pages are first touched, never in
        a timed region; its result goes through ``check``."""
        result = call()
        if self.check is not None:
            self.check(inputs, result)
        return result

    def copy_source(self, inputs):
        """The array whose ``np.copyto`` the kernel is compared with."""
        if self.copy_of is None:
            return copy_source(self.bytes_moved)
        return getattr(inputs, self.copy_of)


def random_array(shape, dtype, seed=0):
    """Standard normal values of ``dtype``, reproducible."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.dtype(dtype))
