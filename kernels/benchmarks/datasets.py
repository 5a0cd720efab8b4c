"""The data sets of the compression table (docs/compressing.md, issue 16):
the pipeline's defaults are judged on all of them, none downloaded.

* ``digits``: the 8x8 digits shipped with the package (64 inputs);
* ``digits28``: the same images bilinearly upsampled to 28x28 (784
  inputs, the input size of LeNet-300-100 on MNIST);
* ``wine`` and ``breast_cancer``: scikit-learn's copies (13 and 30
  inputs; need scikit-learn);
* ``teacher784``: a synthetic 784-input, 10-class problem: 32 latent
  factors, each input a random mix of all of them plus noise of half
  their size, the class the argmax of a random linear function of the
  factors.  Every input carries a little of every factor, so a model
  needs many inputs (and weights) to average the noise away: pruning
  costs accuracy early, and a search must stop before it prunes to
  nothing.

Each is a ``kernels.compress.Dataset``, split 75/25 stratified by ``seed``.
"""

import numpy as np

from kernels.compress import Dataset, _stratified_split, load_digits

__all__ = ["NAMES", "load", "upsample"]

NAMES = ("digits", "digits28", "wine", "breast_cancer", "teacher784")


def upsample(X, side=8, to=28):
    """Square images of ``side`` x ``side`` pixels, one per row of ``X``,
    bilinearly resampled to ``to`` x ``to`` (corners kept), float32."""
    images = np.asarray(X, np.float64).reshape(len(X), side, side)
    source = np.linspace(0, side - 1, to)
    low = np.floor(source).astype(np.intp)
    high = np.minimum(low + 1, side - 1)
    weight = source - low
    rows = images[:, low, :] * (1 - weight)[None, :, None]
    rows += images[:, high, :] * weight[None, :, None]
    out = rows[:, :, low] * (1 - weight)[None, None, :]
    out += rows[:, :, high] * weight[None, None, :]
    return out.reshape(len(X), to * to).astype(np.float32)


def _split(X, y, name, seed, test_size=0.25):
    classes, y = np.unique(y, return_inverse=True)
    train, test = _stratified_split(y, test_size, seed)
    X = np.asarray(X, np.float32)
    return Dataset(X[train], y[train], X[test], y[test], classes, name=name)


def _teacher(seed, n=4000, d=784, k=10, latent=32):
    rng = np.random.default_rng(12345)  # the problem is fixed; seed splits it
    z = rng.standard_normal((n, latent))
    X = z @ rng.standard_normal((latent, d)) / np.sqrt(latent)
    X += 0.5 * rng.standard_normal((n, d))
    y = np.argmax(z @ rng.standard_normal((latent, k)), axis=1)
    return _split(X, y, "teacher784", seed)


def load(name, seed=0):
    """The data set ``name`` (one of ``NAMES``) split with ``seed``."""
    if name == "digits":
        return load_digits(seed)
    if name == "digits28":
        data = load_digits(seed)
        return Dataset(
            upsample(data.X_train), data.y_train, upsample(data.X_test),
            data.y_test, data.classes, name="digits28",
        )  # fmt: skip
    if name in ("wine", "breast_cancer"):
        from sklearn import datasets

        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        return _split(X, y, name, seed)
    if name == "teacher784":
        return _teacher(seed)
    raise ValueError(f"unknown data set {name!r}; one of {', '.join(NAMES)}")
