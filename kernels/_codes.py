"""Integer codes the kernels dispatch on (never Python functions).

The one table of every code, shared by the three backends: the NumPy
reference and the Numba kernels import them from here, and setup.py writes
them for the Cython modules (pyx/_codes.pxi, generated at build time from
this file, which it reads without importing: every top-level
``NAME = <int>`` is a code).  ``tests/test_build.py`` checks that the
compiled modules hold these numbers.
"""

# Losses of a linear model with margins m = x @ W + b (K columns).
LOSS_SQUARED = 0  # 0.5 * (m - y)^2, K = 1
LOSS_LOGISTIC = 1  # log(1 + exp(-y * m)), y in {-1, +1}, K = 1
LOSS_MULTINOMIAL = 2  # logsumexp(m) - m[y], y in {0, ..., K - 1}

# Penalties applied by the prox at every step, on top of the ridge term.
PENALTY_NONE = 0
PENALTY_L1 = 1  # l1 * ||W||_1 (with the ridge: the elastic net)
PENALTY_GROUP_L1 = 2  # l1 * sum_g weight_g * ||W_g||_2, groups of rows of W
PENALTY_L0 = 3  # l1 * (number of non-zeros of W)

# How an epoch forms the step direction (ALGORITHMS.md section 2).
METHOD_SNAPSHOT = 0  # SVRG family: s = grad f_I(snapshot), mu = its mean
METHOD_TABLE = 1  # SAGA family: s = the table's last derivatives, mu = their mean
METHOD_RECURSIVE = 2  # SARAH: v_t = grad f_I(x_t) - grad f_I(x_{t-1}) + v_{t-1}

# The prox of the fused update kernels (kernels.update), applied to
# z = w - step * v element by element.
PROX_NONE = 0  # z
PROX_SOFT_THRESHOLD = 1  # scale * sign(z) * max(|z| - threshold, 0): l1, elastic net
PROX_HARD_THRESHOLD = 2  # z * (|z| > threshold): l0
PROX_CUMULATIVE_L1 = 3  # the cumulative l1 penalty of Tsuruoka et al. (2009)

# Activations of the layer kernels and plans: y = activation(W x + b).
ACTIVATION_IDENTITY = 0
ACTIVATION_RELU = 1  # max(v, 0), NaN stays NaN
ACTIVATION_TANH = 2
ACTIVATION_SIGMOID = 3  # 0.5 * tanh(v / 2) + 0.5, which never overflows
# The activations' names, by code: ACTIVATION_NAMES[ACTIVATION_RELU] == "relu".
ACTIVATION_NAMES = ("identity", "relu", "tanh", "sigmoid")

# Layouts of a deployment matrix (kernels.packed.PackedMatrix) and of a layer
# of the model file (docs/model-file.md).
LAYOUT_DENSE = 0  # every slot of the row, row-major
LAYOUT_CSR = 1  # absolute column indices of 1, 2 or 4 bytes
LAYOUT_DELTA = 2  # relative column indices (gaps) of 4 or 8 bits, with fillers
LAYOUT_BITMASK = 3  # one bit per slot of the row, then the stored values

# How a deployment matrix stores its values (int: times the row's scale).
VALUES_FLOAT32 = 0
VALUES_FLOAT16 = 1  # IEEE binary16
VALUES_INT8 = 2
VALUES_INT4 = 3  # two per byte, the first in the low nibble
VALUES_INT2 = 4  # four per byte, the first in the lowest two bits
