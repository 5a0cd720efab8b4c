"""The compression pipeline's search (``kernels.compress``): what to aim
for (a ``Goal``), the quantisation of one trained network chosen against
it (``choose_deployment``), and the regularisation strength searched on a
log scale (``search_strength``).

Two goals, both judged on a validation split the training never sees:

* an accuracy budget (``max_drop``, in percentage points): a deployment
  is acceptable when its validation accuracy is at most ``max_drop``
  points below the dense model's; the best acceptable one has the fewest
  model-file bytes;
* a size budget (``target_bytes``): acceptable when the model file fits;
  the best acceptable one has the highest validation accuracy.

Neither goal is monotone in the data (validation accuracy is noisy), so
the search keeps every point it evaluated and picks the best acceptable
deployment among all of them, not only the last.
"""

import math
from dataclasses import dataclass

import numpy as np

from kernels.nn import SparseMLP

# Value precisions a layer may take: integers on these bits, float16, float32.
INT_BITS = (8, 6, 5, 4, 3, 2)
PRECISIONS = (*INT_BITS, "float16", "float32")


@dataclass(frozen=True)
class Goal:
    """An accuracy budget (``max_drop`` points below ``reference``, the
    dense model's validation accuracy as a fraction) or a size budget
    (``target_bytes``): exactly one of the two.  Under an accuracy budget
    a candidate must meet it by ``confidence`` standard errors of its
    difference with the dense model (``Candidate.spread``): a lower
    confidence bound, not the estimate itself, since the budget has to
    hold on data the search never saw."""

    reference: float
    max_drop: float = None
    target_bytes: int = None
    confidence: float = 0.0

    def __post_init__(self):
        if (self.max_drop is None) == (self.target_bytes is None):
            raise ValueError("give exactly one of max_drop and target_bytes")

    def accepts(self, candidate):
        """Whether a candidate (``Candidate``) meets the goal."""
        if self.max_drop is not None:
            # a hair of slack: k / n_val compared in floating point
            bound = candidate.accuracy - self.confidence * candidate.spread
            return bound >= self.reference - self.max_drop / 100 - 1e-9
        return candidate.file_bytes <= self.target_bytes

    def key(self, candidate):
        """Sort key, best first, among acceptable candidates."""
        if self.max_drop is not None:
            return (candidate.file_bytes, -candidate.accuracy)
        return (-candidate.accuracy, candidate.file_bytes)

    def closeness(self, candidate):
        """Sort key, nearest the goal first, among candidates that miss it."""
        if self.max_drop is not None:
            return (-candidate.accuracy, candidate.file_bytes)
        return (candidate.file_bytes, -candidate.accuracy)

    def rank(self, candidate):
        """Sort key over all candidates, best first: the acceptable ones by
        ``key``, then the others by ``closeness``."""
        if self.accepts(candidate):
            return (0, self.key(candidate))
        return (1, self.closeness(candidate))

    def describe(self):
        """The goal in words."""
        if self.max_drop is not None:
            unit = "point" if self.max_drop == 1 else "points"
            return f"at most {self.max_drop:g} {unit} below the dense model"
        return f"a model file of at most {self.target_bytes:,} bytes"


@dataclass
class Candidate:
    """One deployment of one trained network: ``precisions`` per layer (int
    bits, "float16" or "float32"), its model, its estimated validation
    accuracy (``choose_deployment``), its file bytes, and ``spread``, the
    standard error of its accuracy difference with the dense model on the
    validation split (from the samples where the two disagree)."""

    precisions: tuple
    model: SparseMLP
    accuracy: float
    file_bytes: int
    spread: float = 0.0

    @property
    def label(self):
        """The precisions in words: "int4" or "int4,int6,float16"."""
        names = [p if isinstance(p, str) else f"int{p}" for p in self.precisions]
        return names[0] if len(set(names)) == 1 else ",".join(names)


def deployment(network, classes, precisions, dense_size=None):
    """The ``SparseMLP`` of ``network`` with ``precisions`` per layer, each
    layer in its layout of fewest bytes."""
    codecs = [p if isinstance(p, str) else "int" for p in precisions]
    bits = [None if isinstance(p, str) else p for p in precisions]
    return SparseMLP.from_dense(
        network.weights,
        network.biases,
        fmt="auto",
        codec=codecs,
        bits=bits,
        classes=classes,
        dense_size=dense_size,
    )


def choose_deployment(
    network,
    classes,
    validation,
    check,
    goal,
    dense_size=None,
    precisions=PRECISIONS,
):
    """The best deployment of ``network`` (an ``MLP`` on raw inputs, class
    indices into ``classes``) for ``goal`` on ``validation`` (X, y, the
    dense model's predicted class indices): every precision of
    ``precisions`` for all layers, then, from the best of those, one layer
    at a time moved to another precision while that improves on the goal
    (two passes).

    A candidate's accuracy is a cautious estimate of what it would score
    on unseen data: the float network's accuracy on ``validation`` (X, y),
    no higher than the dense model's (``goal.reference``), less what
    quantising costs, the larger of its cost on ``validation`` and on
    ``check`` (X, y), a larger set (the training and validation data
    together).  Measured on digits (270 validation samples, one sample
    0.37 points): a sparse network 1.5 points above the dense model on
    validation was 0.2 above it on test, and the quantisations judged by
    validation accuracy alone lost 0.4-0.6 points there and 1.6-2.7 on
    test; on another split the cost on validation was the better guide
    (2.2 points there, none on test, 0.4 on the larger set).  The budget
    has to hold on test, so neither surplus nor the smaller cost counts.

    Returns (best, tried): ``best`` the best acceptable ``Candidate``, or
    the one nearest the goal when none is acceptable; ``tried`` every
    candidate evaluated."""
    X_val, y_val, dense_val = validation
    X_check, y_check = check
    float_val = network.accuracy(X_val, y_val)
    float_check = network.accuracy(X_check, y_check)
    start = min(float_val, goal.reference)
    cache = {}

    def candidate(precisions):
        if precisions not in cache:
            model = deployment(network, classes, precisions, dense_size)
            predicted = model.predict(X_val)
            disagree = np.count_nonzero(predicted != classes[dense_val])
            cost = max(
                float_val - np.mean(predicted == classes[y_val]),
                float_check - np.mean(model.predict(X_check) == classes[y_check]),
                0.0,
            )
            cache[precisions] = Candidate(
                precisions,
                model,
                float(start - cost),
                model.sizes()["file_bytes"],
                float(np.sqrt(disagree) / len(y_val)),
            )
        return cache[precisions]

    layers = len(network.weights)
    rank = goal.rank
    best = min((candidate((p,) * layers) for p in precisions), key=rank)
    for _ in range(2):
        improved = False
        for i in range(layers):
            for p in precisions:
                if p == best.precisions[i]:
                    continue
                trial = candidate(best.precisions[:i] + (p,) + best.precisions[i + 1 :])
                if rank(trial) < rank(best):
                    best, improved = trial, True
        if not improved:
            break
    return best, list(cache.values())


def search_strength(
    evaluate, acceptable, start, factor=2.0, refine=3, bounds=(1e-6, 1.0), limit=14
):
    """Search the strength ``beta`` on a log scale for the boundary of
    ``acceptable(evaluate(beta))``, which is assumed True for weak
    strengths and False for strong ones (an accuracy budget), or the
    reverse (a size budget: pass ``acceptable`` negated).

    From ``start``: multiply by ``factor`` while acceptable (divide while
    not) until the outcome flips or a bound of ``bounds`` is passed, then
    bisect log beta between the last two ``refine`` times (resolution
    ``factor ** (1 / 2 ** refine)``).  At most ``limit`` evaluations.
    Returns {beta: evaluate(beta)} of every point evaluated, in order."""
    low, high = bounds
    if not (low > 0 and high > low and low <= start <= high):
        raise ValueError(f"start {start!r} must lie in the bounds {bounds}")
    points = {}

    def passes(beta):
        if beta not in points:
            points[beta] = evaluate(beta)
        return acceptable(points[beta])

    weak, strong = (start, None) if passes(start) else (None, start)
    while (weak is None or strong is None) and len(points) < limit:
        if strong is None:
            beta = weak * factor
            if beta > high:
                break
            weak, strong = (beta, None) if passes(beta) else (weak, beta)
        else:
            beta = strong / factor
            if beta < low:
                break
            weak, strong = (beta, strong) if passes(beta) else (None, beta)
    if weak is not None and strong is not None:
        for _ in range(refine):
            if len(points) >= limit:
                break
            middle = math.sqrt(weak * strong)
            if passes(middle):
                weak = middle
            else:
                strong = middle
    return points
