"""The penalties h of the objective F = f + h (ALGORITHMS.md sections 1, 3
and 4): their names, how a name is checked, and their values, the penalty
term of the objective that the solvers and the training report.

Each family accepts the names its kernels apply: ``kernels.update`` the
element-wise penalties of the fused step, ``kernels.solvers`` those of a
linear model, ``kernels.train`` the element-wise penalties of an MLP, the
neuron groups and their sums ("l1+group_l1").  Their proxes are
``kernels.prox`` and, fused into the update and epoch kernels, the codes of
``kernels._codes``.
"""

import numpy as np

L1 = "l1"  # beta * ||w||_1
ELASTIC_NET = "elastic_net"  # beta * ||w||_1 + (l2 / 2) * ||w||^2
GROUP_L1 = "group_l1"  # beta * sum_g weight_g * ||w_g||_2
L0 = "l0"  # beta * (number of non-zeros of w)
CUMULATIVE_L1 = "cumulative_l1"  # beta * ||w||_1, Tsuruoka et al.'s clipped steps


def require(penalty, accepted):
    """``penalty`` if it is one of ``accepted``, else a ValueError that
    lists them."""
    if penalty not in accepted:
        raise ValueError(
            f"penalty must be one of {', '.join(map(repr, accepted))}, got {penalty!r}"
        )
    return penalty


def with_groups(elementwise):
    """The name of the sum of an element-wise penalty and the group
    penalty: "l1" -> "l1+group_l1"."""
    return f"{elementwise}+{GROUP_L1}"


def split(penalty):
    """(element-wise part or None, whether the group penalty is in it) of a
    name made by ``with_groups`` or of a single penalty."""
    if penalty is None:
        return None, False
    elementwise, _, last = penalty.rpartition("+")
    if last == GROUP_L1:
        return elementwise or None, True
    return penalty, False


def ridge_value(arrays):
    """0.5 * sum of ||a||^2 over ``arrays``: the ridge term of strength 1."""
    return 0.5 * sum(float(np.sum(a * a)) for a in arrays)


def l1_value(arrays):
    """sum of ||a||_1 over ``arrays``: the l1 penalty of strength 1."""
    return sum(float(np.abs(a).sum()) for a in arrays)


def l0_value(arrays):
    """The number of non-zeros over ``arrays``: the l0 penalty of strength 1."""
    return float(sum(np.count_nonzero(a) for a in arrays))


def group_l1_value(norms, weights=None):
    """sum_g weights[g] * norms[g] (weights 1 by default): the group penalty
    of strength 1, given each group's Euclidean norm."""
    if weights is None:
        return float(np.sum(norms))
    return float(weights @ norms)
