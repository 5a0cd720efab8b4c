"""Training a multi-layer perceptron with a sparsity penalty
(ALGORITHMS.md sections 2 and 3): the first stage of the compression
pipeline (``kernels.compress``).

The network is ReLU hidden layers and a softmax output trained on the mean
cross-entropy, in float32.  Backpropagation is NumPy BLAS (a few matrix
products per mini-batch); every parameter update is one call of the fused
kernel ``kernels.prox_gradient_step`` per parameter array, which forms the
step direction of the optimizer and applies the penalty's prox in one pass.

Optimizers: the baselines "sgd", "momentum" (heavy ball) and "adam", and
the variance-reduced "svrg", "saga" and "vcsg".  ``lam`` turns SVRG and
SAGA into the source's lambda-estimator (I-SVRG, I-SAGA).  "saga" keeps
one gradient per mini-batch of a fixed partition of the samples (a table
of n / batch_size gradients, not n): a per-sample table of an MLP would be
n copies of the network.

Penalties on the weights (never the biases): "l1" (soft thresholding),
"cumulative_l1" (the cumulative penalty of Tsuruoka et al., the source's
method, which clips at zero), "group_l1" over neurons (a hidden unit's
incoming row and outgoing column shrunk together, so whole units vanish),
and the sums "l1+group_l1", "cumulative_l1+group_l1".

The step decays as eta = step * step_decay ** (ifos / budget): from
``step`` to ``step * step_decay`` over the run.  Work is counted in IFOs
(one sample's gradient), and the budget is ``epochs * n`` IFOs whatever
the optimizer, so that runs of different methods compare at equal work.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from kernels import _checks
from kernels._penalties import (
    CUMULATIVE_L1,
    GROUP_L1,
    L1,
    group_l1_value,
    l1_value,
    require,
    split,
    with_groups,
)
from kernels._vcsg import VCSGSchedule
from kernels.prox import prox_group_l1
from kernels.update import CumulativeL1, prox_gradient_step

__all__ = ["MLP", "TrainResult", "train_mlp", "OPTIMIZERS", "PENALTIES"]

OPTIMIZERS = ("sgd", "momentum", "adam", "svrg", "saga", "vcsg")
_ELEMENTWISE = (None, L1, CUMULATIVE_L1)
# None, "l1", "cumulative_l1", "group_l1", "l1+group_l1", "cumulative_l1+group_l1"
PENALTIES = (
    *_ELEMENTWISE,
    GROUP_L1,
    *(with_groups(penalty) for penalty in _ELEMENTWISE if penalty),
)


class MLP:
    """A dense ReLU network with a softmax output, in float32: ``weights[l]``
    of shape (out, in) as PyTorch stores it and ``biases[l]`` of shape
    (out,).  ``MLP.initial(sizes, seed)`` draws He-initialised weights."""

    def __init__(self, weights, biases):
        self.weights = [np.ascontiguousarray(W, np.float32) for W in weights]
        self.biases = [np.ascontiguousarray(b, np.float32) for b in biases]
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if W.ndim != 2 or b.shape != (W.shape[0],):
                raise ValueError(
                    f"layer {i}: weight must be 2-D (out, in) and bias (out,), got "
                    f"{W.shape} and {b.shape}"
                )
            if i and W.shape[1] != self.weights[i - 1].shape[0]:
                raise ValueError(
                    f"layer {i} takes {W.shape[1]} inputs but layer {i - 1} has "
                    f"{self.weights[i - 1].shape[0]} outputs"
                )

    @classmethod
    def initial(cls, sizes, seed=0):
        """A network of layer widths ``sizes`` (inputs, hidden..., classes)
        with He-initialised weights drawn from ``seed`` and zero biases."""
        rng = np.random.default_rng(seed)
        weights = [
            rng.standard_normal((m, n)) * math.sqrt(2.0 / n)
            for n, m in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        return cls(weights, [np.zeros(m) for m in sizes[1:]])

    @property
    def sizes(self):
        """The layer widths: inputs, each hidden layer, outputs."""
        return [self.weights[0].shape[1]] + [W.shape[0] for W in self.weights]

    @property
    def params(self):
        """[W0, b0, W1, b1, ...]: the arrays every optimizer updates."""
        return [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]

    @property
    def nnz(self):
        """The number of non-zero weights (biases not counted)."""
        return int(sum(np.count_nonzero(W) for W in self.weights))

    def copy(self):
        """A network with copies of the weights and biases."""
        return MLP([W.copy() for W in self.weights], [b.copy() for b in self.biases])

    def logits(self, X):
        """The output layer's values (n, classes) for the inputs ``X``, before
        the softmax."""
        A = np.asarray(X, np.float32)
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            A = A @ W.T + b
            if i < len(self.weights) - 1:
                np.maximum(A, 0.0, out=A)
        return A

    def predict(self, X):
        """The class index of largest logit for each row of ``X``."""
        return np.argmax(self.logits(X), axis=1)

    def accuracy(self, X, y):
        """The fraction of rows of ``X`` whose predicted class is ``y``."""
        return float(np.mean(self.predict(X) == y))

    def loss(self, X, y):
        """Mean cross-entropy on (X, y), y class indices."""
        log_p = _log_softmax(self.logits(X))
        return float(-np.mean(log_p[np.arange(len(y)), y]))

    def gradient(self, X, y, grads, sample_norms=False):
        """Write the gradient of the mean cross-entropy on (X, y) into
        ``grads`` (arrays shaped like ``params``) and return the loss; with
        ``sample_norms`` also return the squared norm of each sample's
        gradient, sum over layers of ||delta||^2 * (||a||^2 + 1) (a
        sample's weight gradient is the outer product delta a^T)."""
        activations = [np.asarray(X, np.float32)]
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            Z = activations[-1] @ W.T + b
            if i < last:
                np.maximum(Z, 0.0, out=Z)
            activations.append(Z)
        log_p = _log_softmax(activations.pop())
        rows = np.arange(len(y))
        loss = float(-np.mean(log_p[rows, y]))
        delta = np.exp(log_p, out=log_p)  # the softmax, then minus the one-hot
        delta[rows, y] -= 1.0
        norms = np.zeros(len(y)) if sample_norms else None
        k = float(len(y))
        for i in range(last, -1, -1):
            A = activations[i]
            if sample_norms:
                norms += np.einsum("ij,ij->i", delta, delta) * (
                    np.einsum("ij,ij->i", A, A) + 1.0
                )
            np.matmul(delta.T, A, out=grads[2 * i])
            grads[2 * i] /= k
            np.sum(delta, axis=0, out=grads[2 * i + 1])
            grads[2 * i + 1] /= k
            if i:
                delta = delta @ self.weights[i]
                delta *= A > 0
        return (loss, norms) if sample_norms else loss


def _log_softmax(Z):
    """log softmax of each row of the logits Z, max-subtracted so that it
    never overflows; the loss reads it, the gradient exponentiates it."""
    shifted = Z - Z.max(axis=1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


@dataclass
class TrainResult:
    """The trained network and one history row per epoch (or stage):
    ``ifos`` so far, ``seconds`` of training, training ``loss`` (mean
    cross-entropy), ``objective`` (loss + penalty), ``nnz`` of the weights,
    ``step`` in force."""

    network: MLP
    history: list = field(default_factory=list)
    ifos: int = 0
    seconds: float = 0.0


def _shrink_neurons(weights, t, backend):
    """Group soft thresholding over hidden neurons (ALGORITHMS.md section
    4): unit j of layer l owns row j of weights[l] and column j of
    weights[l + 1], shrunk together by ``kernels.prox_group_l1`` as one row
    of the two side by side."""
    for i in range(len(weights) - 1):
        incoming, outgoing = weights[i], weights[i + 1]
        units = np.concatenate((incoming, outgoing.T), axis=1)
        prox_group_l1(units, t, "rows", out=units, backend=backend)
        incoming[...] = units[:, : incoming.shape[1]]
        outgoing[...] = units[:, incoming.shape[1] :].T


def _neuron_norms(incoming, outgoing):
    """||(row j of incoming, column j of outgoing)|| for each hidden unit j
    between two layers."""
    return np.sqrt(
        np.einsum("ij,ij->i", incoming, incoming)
        + np.einsum("ij,ij->j", outgoing, outgoing)
    )


def _group_penalty(weights):
    return sum(
        group_l1_value(_neuron_norms(weights[i], weights[i + 1]))
        for i in range(len(weights) - 1)
    )


class _Updater:
    """Applies one step of a direction to every parameter array through
    ``prox_gradient_step``, with the element-wise penalty on the weights,
    then the group penalty; keeps the cumulative penalty's state and, for
    fine-tuning, the sparsity mask."""

    def __init__(self, network, penalty, beta, group_beta, mask, backend, density=None):
        self.network = network
        self.density = density
        self.params = network.params
        self.elementwise, self.grouped = split(penalty)
        self.beta = beta
        self.group_beta = group_beta
        self.backend = backend
        self.cumulative = [
            CumulativeL1(W) if self.elementwise == CUMULATIVE_L1 else None
            for W in network.weights
        ]
        self.mask = [W != 0 for W in network.weights] if mask else None

    def step(self, step, g, s=None, mu=None, lam=None):
        for i, p in enumerate(self.params):
            weight = i % 2 == 0
            penalty = self.elementwise if weight else None
            prox_gradient_step(
                p,
                g[i],
                None if s is None else s[i],
                None if mu is None else mu[i],
                step=step,
                lam=lam,
                penalty=penalty,
                beta=self.beta if penalty else 0.0,
                cumulative=self.cumulative[i // 2] if weight else None,
                out=p,
                backend=self.backend,
            )
        if self.grouped:
            _shrink_neurons(self.network.weights, step * self.group_beta, self.backend)
        if self.mask is not None:
            for W, m in zip(self.network.weights, self.mask, strict=True):
                W *= m

    def prune(self, progress):
        """Gradual magnitude pruning (Zhu & Gupta 2017): at ``progress``
        (the fraction of the budget spent) each weight matrix keeps its
        largest ``1 - s`` of entries by magnitude, with the sparsity
        s = s_f (1 - (1 - progress / 0.75) ** 3) rising to s_f = 1 -
        ``density`` at three quarters of the budget; the pruned entries
        stay zero (the mask) for the rest of the run."""
        if self.density is None:
            return
        ramp = min(1.0, progress / 0.75)
        kept = 1.0 - (1.0 - self.density) * (1.0 - (1.0 - ramp) ** 3)
        masks = []
        for W in self.network.weights:
            keep = max(1, math.ceil(kept * W.size))
            mask = np.zeros(W.size, bool)
            if keep >= W.size:
                mask[:] = True
            else:
                magnitude = np.abs(W).ravel()
                mask[np.argpartition(magnitude, W.size - keep)[W.size - keep :]] = True
            mask = mask.reshape(W.shape)
            W *= mask
            masks.append(mask)
        self.mask = masks

    def objective(self, loss):
        weights = self.network.weights
        value = loss
        if self.elementwise:
            value += self.beta * l1_value(weights)
        if self.grouped:
            value += self.group_beta * _group_penalty(weights)
        return value


def train_mlp(
    X,
    y,
    hidden=(300, 100),
    *,
    optimizer="svrg",
    lam=None,
    penalty=None,
    beta=0.0,
    group_beta=0.0,
    step=None,
    step_decay=0.1,
    epochs=30,
    batch_size=32,
    momentum=0.9,
    network=None,
    fine_tune=False,
    seed=0,
    progress=None,
    backend=None,
    vcsg_options=None,
    density=None,
):
    """Train a ReLU MLP classifier on ``X`` (n, d) and class indices ``y``
    (0 .. k-1) and return a ``TrainResult``.

    ``hidden``: the hidden layer widths (ignored when ``network``, an
    ``MLP`` to continue from, is given).  ``optimizer`` one of
    ``OPTIMIZERS``; ``lam`` None for textbook SVRG / SAGA, a number in
    [0, 1] for the lambda-estimator (ALGORITHMS.md section 2; for "vcsg"
    the regime sets lam).  ``penalty`` one of ``PENALTIES`` with strength
    ``beta`` (element-wise l1 part) and ``group_beta`` (neuron groups).
    ``step`` the initial step (None: 0.001 for Adam, 0.05 otherwise),
    decaying to ``step * step_decay``.
    ``epochs`` the IFO budget in passes over the data.  ``density``: gradual
    magnitude pruning (Zhu & Gupta 2017) to that fraction of each weight
    matrix, on their cubic schedule over the first three quarters of the
    budget, pruned weights then held at zero (``_Updater.prune``), alone or
    with a penalty.  ``fine_tune``
    keeps the zeros of the starting network's weights (train the survivors
    only; use with ``penalty=None``).  ``progress(ifos, budget, loss)`` is
    called after every epoch.  ``vcsg_options``: a dict overriding VCSG's
    constants, the keywords of ``kernels.solvers.vcsg`` from
    ``warmup_stages`` on, whose defaults are the same (ALGORITHMS.md
    section 2).  With ``eps`` None VCSG's stage batch bounds the sampling
    variance by theta * ||mu||^2, mu the previous stage's mean gradient (of
    the loss, without the penalty), with sigma^2 from that batch's
    per-sample gradient norms (``MLP.gradient(sample_norms=True)``).
    """
    X = np.ascontiguousarray(_checks.as_float_array(X, "X"), np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(
            f"X must be 2-D (n, d) and y (n,), got {X.shape} and {y.shape}"
        )
    if X.shape[0] == 0:
        raise ValueError("X has no samples")
    _checks.require_finite(X, "X")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("y must hold class indices 0 .. k-1")
    y = y.astype(np.intp)
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}"
        )
    require(penalty, PENALTIES)
    if lam is not None and optimizer not in ("svrg", "saga"):
        raise ValueError(f"lam applies to svrg and saga, not {optimizer!r}")
    beta = _checks.scalar(beta, "beta", minimum=0.0, allow_inf=False)
    group_beta = _checks.scalar(group_beta, "group_beta", minimum=0.0, allow_inf=False)
    if step is None:
        step = 0.001 if optimizer == "adam" else 0.05
    step = _checks.scalar(step, "step", minimum=0.0, allow_inf=False)
    step_decay = _checks.scalar(step_decay, "step_decay", minimum=0.0, allow_inf=False)
    epochs = _checks.scalar(epochs, "epochs", minimum=0.0, allow_inf=False)
    if optimizer == "vcsg":
        schedule = VCSGSchedule.from_options(dict(vcsg_options or {}))
    n = X.shape[0]
    batch_size = min(n, _checks.integer(batch_size, "batch_size", minimum=1))
    if network is None:
        sizes = [X.shape[1], *(int(h) for h in hidden), int(y.max()) + 1]
        if min(sizes) < 1:
            raise ValueError(f"layer widths must be positive, got {sizes}")
        network = MLP.initial(sizes, seed)
    else:
        network = network.copy()
        if network.sizes[0] != X.shape[1] or network.sizes[-1] <= y.max():
            raise ValueError(
                f"network {network.sizes} does not fit X with {X.shape[1]} "
                f"features and {int(y.max()) + 1} classes"
            )
    if density is not None:
        density = _checks.scalar(density, "density", minimum=0.0, allow_inf=False)
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if fine_tune:
            raise ValueError(
                "density (pruning) and fine_tune (a fixed mask) exclude each other"
            )
    updater = _Updater(network, penalty, beta, group_beta, fine_tune, backend, density)
    run = _TrainingRun(
        X, y, network, updater, step, step_decay, epochs * n, seed, progress
    )
    # a diverging run overflows before its loss is checked at the end of the
    # epoch, which raises the error that names the step
    with np.errstate(over="ignore", invalid="ignore"):
        if optimizer in ("sgd", "momentum", "adam"):
            _first_order(run, optimizer, batch_size, momentum)
        elif optimizer == "svrg":
            _svrg(run, batch_size, lam)
        elif optimizer == "saga":
            _saga(run, batch_size, lam)
        else:
            _vcsg(run, schedule)
    return run.result


class _TrainingRun:
    """The state every optimizer shares: data, network, IFO budget, the
    decaying step, the history."""

    def __init__(self, X, y, network, updater, step, decay, budget, seed, progress):
        self.X, self.y, self.n = X, y, X.shape[0]
        self.network = network
        self.updater = updater
        self.step0, self.decay = step, decay
        self.budget = max(1, int(round(budget)))
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.ifos = 0
        self.start = time.perf_counter()
        self.seconds = 0.0
        self.result = TrainResult(network)
        self.grads = [np.empty_like(p) for p in network.params]
        self.record()

    @property
    def done(self):
        return self.ifos >= self.budget

    @property
    def step(self):
        return self.step0 * self.decay ** min(1.0, self.ifos / self.budget)

    def gradient(self, samples, grads=None, sample_norms=False):
        self.ifos += len(samples)
        return self.network.gradient(
            self.X[samples],
            self.y[samples],
            self.grads if grads is None else grads,
            sample_norms,
        )

    def batches(self, batch_size):
        order = self.rng.permutation(self.n)
        return [order[i : i + batch_size] for i in range(0, self.n, batch_size)]

    def record(self):
        """One history row (the full loss is not counted as IFOs: it is
        monitoring, and it is timed out of ``seconds``)."""
        self.seconds += time.perf_counter() - self.start
        loss = self.network.loss(self.X, self.y)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training diverged (loss {loss}) at step size {self.step:.3g}; "
                "try a smaller step"
            )
        self.result.history.append(
            {
                "ifos": self.ifos,
                "seconds": self.seconds,
                "loss": loss,
                "objective": self.updater.objective(loss),
                "nnz": self.network.nnz,
                "step": self.step,
            }
        )
        self.result.ifos, self.result.seconds = self.ifos, self.seconds
        self.updater.prune(self.ifos / self.budget)
        if self.progress is not None:
            self.progress(self.ifos, self.budget, loss)
        self.start = time.perf_counter()


def _first_order(run, optimizer, batch_size, momentum):
    params = run.network.params
    velocity = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    direction = [np.empty_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    t = 0
    while not run.done:
        for batch in run.batches(batch_size):
            run.gradient(batch)
            g = run.grads
            if optimizer == "momentum":
                for v, gi in zip(velocity, g, strict=True):
                    v *= momentum
                    v += gi
                g = velocity
            elif optimizer == "adam":
                t += 1
                c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
                for m, v, gi, d in zip(velocity, second, g, direction, strict=True):
                    m *= beta1
                    m += (1.0 - beta1) * gi
                    v *= beta2
                    v += (1.0 - beta2) * gi * gi
                    np.sqrt(v / c2, out=d)
                    d += eps
                    np.divide(m / c1, d, out=d)
                g = direction
            run.updater.step(run.step, g)
            if run.done:
                break
        run.record()


def _snapshot_stage(run, anchor, mu, batch_size, lam, samples, scale=1.0):
    """Inner lambda-estimator / SVRG steps around the snapshot ``anchor``
    (a network) with mean gradient ``mu``, over ``samples`` in mini-batches;
    2 IFOs per sample; the step is ``scale`` times the run's."""
    s = [np.empty_like(p) for p in mu]
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        run.gradient(batch)
        run.ifos += len(batch)
        anchor.gradient(run.X[batch], run.y[batch], s)
        run.updater.step(scale * run.step, run.grads, s, mu, lam)
        if run.done:
            return


def _svrg(run, batch_size, lam):
    mu = [np.empty_like(p) for p in run.network.params]
    while not run.done:
        anchor = run.network.copy()
        run.gradient(np.arange(run.n), mu)
        _snapshot_stage(run, anchor, mu, batch_size, lam, run.rng.permutation(run.n))
        run.record()


def _saga(run, batch_size, lam):
    """SAGA over a fixed partition of the samples into mini-batches: the
    table holds each block's last gradient; v mixes the block's fresh
    gradient g, its table entry s and the table mean mu (by lam)."""
    blocks = run.batches(batch_size)
    weights = np.array([len(b) for b in blocks], float) / run.n
    table = []
    for block in blocks:
        run.gradient(block)
        table.append([g.copy() for g in run.grads])
    mean = [
        sum(w * t[i] for w, t in zip(weights, table, strict=True))
        for i in range(len(run.grads))
    ]
    mean = [m.astype(np.float32) for m in mean]
    while not run.done:
        for k in run.rng.permutation(len(blocks)):
            run.gradient(blocks[k])
            run.updater.step(run.step, run.grads, table[k], mean, lam)
            for c, old, new in zip(mean, table[k], run.grads, strict=True):
                # mean += w_k (new - old), then the entry becomes new; no
                # temporaries (old holds the scaled difference in between)
                np.subtract(new, old, out=old)
                old *= weights[k]
                c += old
                old[...] = new
            if run.done:
                break
        run.record()


def _vcsg(run, schedule):
    """VCSG on the MLP (``kernels._vcsg``): the stage batch bounds the
    sampling variance by theta * ||mu||^2, mu the previous stage's mean
    gradient, with sigma^2 from that batch's per-sample gradient norms."""
    n = run.n
    mu = [np.empty_like(p) for p in run.network.params]
    sigma2 = target = None
    stage = 0
    while not run.done:
        big, lam, exponent = schedule.stage(n, stage, sigma2, target)
        scale = n**-exponent
        batch = run.rng.permutation(n)[:big]
        anchor = run.network.copy()
        _, norms = run.gradient(batch, mu, sample_norms=True)
        mu_norm2 = sum(float(np.sum(m * m)) for m in mu)
        sigma2 = schedule.per_sample_variance(float(np.mean(norms)), mu_norm2)
        target = mu_norm2
        b, steps = schedule.inner_batches(big)
        inner = run.rng.choice(n, size=b * steps, replace=True)
        _snapshot_stage(run, anchor, mu, b, lam, inner, scale)
        stage += 1
        run.record()
