"""EM for the Gaussian mixture: maximum likelihood or MAP, four covariance types.

E-step (article 2, step 3; PRML eq. 9.23): responsibilities
    gamma_ic = weights_c N(x_i | mu_c, S_c) / sum_j weights_j N(x_i | mu_j, S_j),
computed in log space (``models.gaussian_mixture.responsibilities``).

M-step (article 3; PRML eq. 9.24-9.27) with N_c = sum_i gamma_ic, xbar_c the
gamma-weighted mean and W_c = sum_i gamma_ic (x_i - mu_c)(x_i - mu_c)^T the
weighted scatter about the *new* mean, both read off the sufficient statistics
``GMMStats`` (sums over rows, so they add up over chunks and devices):

               max. likelihood     MAP (prior of models.gaussian_mixture)
    weights_c  N_c / N             (N_c + alpha_c - 1) / (N + sum alpha - k)
    mu_c       xbar_c              (N_c xbar_c + kappa0 m0) / (N_c + kappa0)
    "full"     W_c / N_c           (Psi + W_c + kappa0 D_c) / (N_c + nu + d + 2)
    "tied"     sum_c W_c / N       (Psi + sum_c [W_c + kappa0 D_c])
                                   / (N + k + nu + d + 1)
    "diag"     W_cjj / N_c         (Psi_jj + W_cjj + kappa0 D_cjj) / (N_c + nu + 3)
    "sph."     tr W_c / (d N_c)    (tr Psi + tr[W_c + kappa0 D_c])
                                   / (d [N_c + 1 + nu] + 2)

with D_c = (mu_c - m0)(mu_c - m0)^T. Each MAP line is the zero of the gradient of
E_q[log p(x, t | theta)] + log p(theta) (the denominators collect the powers of
|S| from the likelihood, the mean prior and the inverse-Wishart / inverse-gamma
prior). ``reg_covar`` is then added to every variance, as in scikit-learn (pass
``reg_covar=0`` with a prior to land exactly on the posterior mode; the prior's
scale already keeps the covariances positive-definite). Like scikit-learn, N_c
gets ``10 * eps`` so an empty component never divides by zero.

Objective and stopping rule. Without a prior the objective is the mean per-row
log-likelihood (1/n) sum_i log p(x_i | theta), as scikit-learn's ``lower_bound_``;
with a prior it is the mean per-row log posterior (1/n)[sum_i log p(x_i | theta) +
log p(theta)] (the NumPyro model's log joint divided by n). EM never decreases
either. ``trace[t]`` is the objective at the parameters entering iteration t + 1;
the loop stops after iteration t >= 2 once |trace[t] - trace[t - 1]| < tol
(scikit-learn's rule with its defaults tol = 1e-3, max_iters = 100), when the
objective turns non-finite (that restart is then failed, never converged) or at
``max_iters`` (``inference.em.driver.run_em``).

Numerics and speed. The data are centred inside the jitted core (the
log-likelihood is translation invariant, so nothing else changes), which keeps
float32 accurate on data far from the origin. Every n x k x d (or n x k x d^2)
quantity is a matrix product: the E-step expands the squared distances of
"diag", "spherical" and "tied" and of "full" (through the precomputed products
x_i x_i^T, ``row_products``), and the M-step takes one-pass statistics
(scikit-learn's forms for "diag" and "tied"). Expanding a square cancels about
log10(1 + R^2) digits, R being a component's distance from the data centre in its
own standard deviations: nothing that matters in float64, 7 - log10(1 + R^2)
digits left in float32 (``models.gaussian_mixture._expanded_squares``). A variance
below what its statistics resolve (a collapse onto a point far from the centre,
or of a full covariance onto a line through two rows, with reg_covar too small
for the dtype) fails the restart instead of following rounding noise
(``_mark_unresolved``). Matrix products use HIGHEST precision (no
TF32 on GPUs); nothing leaves the device inside the loop. A component whose N_c
falls below ``EMPTY_COMPONENT_COUNT`` is reseeded at the worst-explained row
with the data covariance (one component per iteration), which is the one place
where the trace may decrease (reported and warned about).

Scale. Rows may carry weights (0 for padding), so the same core runs with the
rows sharded over several devices (``devices``, ``inference.sharding``), out of
core over chunks (``inference.em.gaussian_mixture_streaming``), and with masked
padding components in a one-program K sweep
(``inference.em.gaussian_mixture_sweep``).
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.chunks import ChunkedRows
from latentmix.data.validation import (
    DataWarning,
    check_int,
    check_matrix,
    check_nonnegative,
    warn,
)
from latentmix.inference.em.driver import (
    ConvergenceWarning,
    EMResult,
    continue_best,
    run_em,
)
from latentmix.inference.sharding import check_devices, place_rows
from latentmix.models.gaussian_mixture import (
    GMMParams,
    GMMPrior,
    _variances,
    check_covariance_type,
    check_params,
    check_prior,
    component_log_prob,
    log_prior,
    map_components,
)

__all__ = [
    "EMPTY_COMPONENT_COUNT",
    "GMMPrior",
    "GMMStats",
    "PRODUCTS_MAX_ELEMENTS",
    "GMMRestarts",
    "INIT_METHODS",
    "e_step",
    "elbo",
    "fit_gaussian_mixture",
    "fit_gaussian_mixture_restarts",
    "add_statistics",
    "m_step",
    "m_step_from_statistics",
    "objective",
    "row_products",
    "statistics",
]

INIT_METHODS = ("kmeans++", "random_from_data")

# A component with less than a thousandth of a row's worth of responsibility is
# dead: scikit-learn would keep it (weight ~0, garbage covariance); we reseed it.
EMPTY_COMPONENT_COUNT = 1e-3

# Lloyd iterations after k-means++ seeding: enough to move seeds to cluster
# centres, a small cost next to EM.
_LLOYD_STEPS = 10

_HIGHEST = jax.lax.Precision.HIGHEST

# A variance below this many eps times the mean square it was computed from has
# no correct digit (``_mark_unresolved``).
_RESOLUTION = 32

# Precomputed per-row products (``row_products``) are kept below this many
# elements (512 MiB in float64); beyond, the statistics are computed from x in
# every iteration (slower, the same result up to rounding).
PRODUCTS_MAX_ELEMENTS = 1 << 26


class GMMRestarts(NamedTuple):
    """All restarts of one ``fit_gaussian_mixture_restarts`` call.

    results: EMResult whose every field has a leading (num_restarts,) axis.
    num_reseeds: (num_restarts,) how many times a component was reseeded.
    failed: (num_restarts,) True where the objective turned non-finite.
    best_index: index of the best finite restart (highest objective), -1 if all
        failed.
    """

    results: EMResult
    num_reseeds: np.ndarray
    failed: np.ndarray
    best_index: int


class GMMStats(NamedTuple):
    """Sufficient statistics of one E-step: sums over rows.

    Sums over rows add up over chunks of rows and over devices, which is what
    out-of-core and data-parallel EM rely on. With row weights v_i (1, or 0 for a
    padding row) and a per-component shift s_c:

        counts  N_c = sum_i v_i gamma_ic                                   (k,)
        sums        sum_i v_i gamma_ic (x_i - s_c)                         (k, d)
        second      sum_i v_i gamma_ic (x_i - s_c)(x_i - s_c)^T  "full"    (k, d, d)
                    sum_i v_i gamma_ic (x_i - s_c)^2             "diag"    (k, d)
                    sum_i v_i gamma_ic ||x_i - s_c||^2           "sph."    (k, 1)
                    sum_i v_i x_i x_i^T                          "tied"    (d, d)
        log_likelihood  sum_i v_i log p(x_i | theta)                       ()
        worst_log_likelihood, worst_row: min_i log p(x_i | theta) and x_i (for
            reseeding; combined by a minimum, not a sum).
        shift: s (k, d), the same for every chunk (not summed).

    The M-step needs the scatter about the new mean, second - sums sums^T / N_c.
    With s = 0 on centred data every statistic is one matrix product; digits
    cancel only for a component far from the data centre (accuracy:
    ``models.gaussian_mixture._expanded_squares``). "full" uses s = 0 with the
    products x_i x_i^T precomputed once per fit when they fit in memory
    (``PRODUCTS_MAX_ELEMENTS``), and otherwise shifts by the previous means, so
    that nothing cancels once EM settles.
    """

    counts: jax.Array
    sums: jax.Array
    second: jax.Array
    log_likelihood: jax.Array
    worst_log_likelihood: jax.Array
    worst_row: jax.Array
    shift: jax.Array


class _State(NamedTuple):
    params: GMMParams
    num_reseeds: jax.Array


# ------------------------------------------------------------------- E and M steps


def e_step(params: GMMParams, x, covariance_type: str = "full", products=None):
    """Log responsibilities (n, k) and log p(x_i | theta) per row (n,).

    ``products``: ``row_products(x, covariance_type)``, read instead of x where
    given (``_component_log_prob``). A component of weight exactly 0 (a padding
    component of a one-program sweep) gets log responsibility -inf, i.e.
    responsibility exactly 0.
    """
    weighted = jnp.log(params.weights) + _component_log_prob(
        params, x, covariance_type, products
    )
    log_norm = jax.scipy.special.logsumexp(weighted, axis=-1)
    return weighted - log_norm[:, None], log_norm


def objective(params: GMMParams, x, covariance_type: str = "full", prior=None):
    """EM's objective: mean log-likelihood, or mean log posterior with a prior."""
    value = jnp.mean(e_step(params, x, covariance_type)[1])
    if prior is not None:
        value = value + log_prior(params, prior, covariance_type) / x.shape[0]
    return value


def elbo(params: GMMParams, x, q, covariance_type: str = "full"):
    """Evidence lower bound L(theta, q) for per-row assignment distributions q.

    L = sum_i sum_c q_ic [log weights_c + log N(x_i | mu_c, S_c) - log q_ic]
    (article 2, step 1); log p(x | theta) - L = sum_i KL(q_i || p(t_i | x_i)).
    """
    weighted = jnp.log(params.weights) + component_log_prob(params, x, covariance_type)
    return jnp.sum(q * weighted) - jnp.sum(jax.scipy.special.xlogy(q, q))


def row_products(x, covariance_type: str):
    """Per-row products the statistics of a covariance type are linear in.

    "full": x_ij x_il for j <= l, (n, d (d + 1) / 2), so that
    sum_i v_i gamma_ic x_i x_i^T for every c is one (k, n) x (n, d(d+1)/2)
    product: half the flops of k separate (d, n) x (n, d) products, in a shape
    BLAS runs near peak (a (d, n) x (n, d) product with d = 16 ran at a quarter
    of peak on a 2-core CPU). "diag": [x, x^2], (n, 2d), so that the E-step's
    squared distances and the M-step's sums and second moments are one product
    each (measured 2.3x faster per iteration than separate products in float64
    at n = 1e5, d = k = 16). "spherical": [x, ||x||^2], (n, d + 1), since one
    variance per component needs only the sum of the squares (a further 1.4x
    in float64 at the same size). None for "tied" (its second moment does not
    involve gamma). The data never change during a fit, so these are computed
    once.
    """
    if covariance_type == "full":
        upper, lower = np.triu_indices(x.shape[1])
        return x[:, upper] * x[:, lower]
    if covariance_type == "diag":
        return jnp.concatenate([x, x * x], axis=1)
    if covariance_type == "spherical":
        return jnp.concatenate([x, _squared_norms(x)], axis=1)
    return None


def _squared_norms(x):
    """||x_i||^2 as an (n, 1) column."""
    return jnp.sum(x * x, axis=1, keepdims=True)


def _unpack_pairs(packed, num_features: int):
    """(k, d (d + 1) / 2) upper triangles -> symmetric (k, d, d) matrices."""
    upper, lower = np.triu_indices(num_features)
    full = jnp.zeros(packed.shape[:-1] + (num_features, num_features), packed.dtype)
    full = full.at[..., upper, lower].set(packed)
    return full.at[..., lower, upper].set(packed)


def _full_log_prob_from_pairs(params: GMMParams, x, pairs):
    """log N(x_i | mu_c, S_c), (n, k), with the quadratic form read off ``pairs``.

    (x - mu)^T P (x - mu) = sum_{j<=l} c_jl x_j x_l - 2 x^T P mu + mu^T P mu with
    P = S^-1 and c_jl = P_jl (2 P_jl off the diagonal): one (n, d(d+1)/2) x
    (d(d+1)/2, k) product instead of an (n, k, d) whitening. Accuracy as
    ``models.gaussian_mixture._expanded_squares`` (the data are centred).
    """
    num_features = x.shape[1]
    chol = jnp.linalg.cholesky(params.covariances)
    eye = jnp.broadcast_to(jnp.eye(num_features, dtype=x.dtype), chol.shape)
    inv_chol = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    precisions = jnp.matmul(jnp.swapaxes(inv_chol, -1, -2), inv_chol,
                            precision=_HIGHEST)
    upper, lower = np.triu_indices(num_features)
    doubled = jnp.asarray(np.where(upper == lower, 1.0, 2.0), x.dtype)
    coefficients = precisions[:, upper, lower] * doubled
    precision_means = jnp.einsum("kde,ke->kd", precisions, params.means,
                                 precision=_HIGHEST)
    squared = (
        jnp.matmul(pairs, coefficients.T, precision=_HIGHEST)
        - 2.0 * jnp.matmul(x, precision_means.T, precision=_HIGHEST)
        + jnp.sum(params.means * precision_means, axis=-1)
    )
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    squared = jnp.maximum(squared, 0.0)
    return -0.5 * (num_features * math.log(2.0 * math.pi) + squared) - half_log_det


def _diagonal_log_prob_from_products(params: GMMParams, products,
                                     covariance_type: str):
    """log N(x_i | mu_c, diag(s_c)), (n, k), from ``products`` = [x, x^2].

    sum_j (x_ij - mu_cj)^2 / s_cj = [x, x^2] . [-2 mu_c / s_c, 1 / s_c] +
    sum_j mu_cj^2 / s_cj: one matrix product (``_expanded_squares`` accuracy).
    "spherical" (s_cj = s_c): ``products`` = [x, ||x||^2] and the last
    coefficient is the one 1 / s_c.
    """
    num_features = params.means.shape[1]
    precisions = 1.0 / _variances(params, covariance_type)
    squares = precisions if covariance_type == "diag" else precisions[:, :1]
    coefficients = jnp.concatenate([-2.0 * params.means * precisions, squares], 1)
    squared = jnp.maximum(
        jnp.matmul(products, coefficients.T, precision=_HIGHEST)
        + jnp.sum(params.means**2 * precisions, axis=-1),
        0.0,
    )
    half_log_det = -0.5 * jnp.sum(jnp.log(precisions), axis=-1)
    return -0.5 * (num_features * math.log(2.0 * math.pi) + squared) - half_log_det


def _component_log_prob(params: GMMParams, x, covariance_type: str, products=None):
    """log N(x_i | mu_c, S_c), (n, k), read off ``products`` where they exist.

    "full" and "diag" / "spherical" with their ``row_products``: one matrix
    product; otherwise (and for "tied") ``models.gaussian_mixture
    .component_log_prob``.
    """
    if products is not None and covariance_type == "full":
        return _full_log_prob_from_pairs(params, x, products)
    if products is not None and covariance_type in ("diag", "spherical"):
        return _diagonal_log_prob_from_products(params, products, covariance_type)
    return component_log_prob(params, x, covariance_type)


def _resp_statistics(x, weighted_resp, shift, covariance_type: str, products=None):
    """(counts, sums, second) of ``GMMStats`` from v_i gamma_ic, (n, k)."""
    num_rows, num_features = x.shape
    counts = jnp.sum(weighted_resp, axis=0)
    if products is not None and covariance_type in ("diag", "spherical"):
        # [sums, second]: second is (k, d) for "diag" and (k, 1) for "spherical".
        both = jnp.matmul(weighted_resp.T, products, precision=_HIGHEST)
        return counts, both[:, :num_features], both[:, num_features:]
    sums = (
        jnp.matmul(weighted_resp.T, x, precision=_HIGHEST) - counts[:, None] * shift
    )
    if covariance_type == "full" and products is not None:
        packed = jnp.matmul(weighted_resp.T, products, precision=_HIGHEST)
        second = _unpack_pairs(packed, num_features)
    elif covariance_type == "full":

        def one(args):
            # Y^T Y with Y = sqrt(v gamma_c) (x - s_c): one (n, d) array per
            # component, which halves the memory traffic that bounds this step.
            resp_c, shift_c = args
            scaled = jnp.sqrt(resp_c)[:, None] * (x - shift_c)
            return jnp.matmul(scaled.T, scaled, precision=_HIGHEST)

        second = map_components(
            jax.vmap(one), (weighted_resp.T, shift), num_rows * num_features
        )
    elif covariance_type == "tied" and products is not None:
        second = products
    elif covariance_type == "tied":
        # sum_c gamma_ic = 1, so the per-component second moments add up to the
        # data's sum_i v_i x_i x_i^T: n d^2 flops instead of n k d^2.
        second = _second_moment(x, jnp.sum(weighted_resp, axis=1))
    else:
        squares = x * x if covariance_type == "diag" else _squared_norms(x)
        second = jnp.matmul(weighted_resp.T, squares, precision=_HIGHEST)
    return counts, sums, second


def statistics(params: GMMParams, x, row_weights, covariance_type: str = "full",
               products=None):
    """E-step at ``params`` summarised as ``GMMStats``.

    ``products``: ``row_products(x, covariance_type)`` (then the shift is 0 and
    the E- and M-step products read them); for "tied", the (d, d) moment
    sum_i v_i x_i x_i^T of these rows (``_second_moment``), which no iteration
    changes; or None (then "full" shifts by ``params.means``).
    """
    log_resp, log_norm = e_step(params, x, covariance_type, products)
    real = row_weights > 0
    weighted_resp = jnp.exp(log_resp) * row_weights[:, None]
    if covariance_type == "full" and products is None:
        shift = params.means
    else:
        shift = jnp.zeros_like(params.means)
    counts, sums, second = _resp_statistics(
        x, weighted_resp, shift, covariance_type, products
    )
    # where, not a product: a padding row's log-density times 0 must not be NaN.
    log_likelihood = jnp.sum(jnp.where(real, row_weights * log_norm, 0.0))
    masked = jnp.where(real, log_norm, jnp.inf)
    worst = jnp.argmin(masked)
    return GMMStats(counts, sums, second, log_likelihood, masked[worst], x[worst],
                    shift)


def add_statistics(left: GMMStats, right: GMMStats) -> GMMStats:
    """Statistics of the union of two sets of rows (sums add, the worst row wins)."""
    right_worse = right.worst_log_likelihood < left.worst_log_likelihood
    return GMMStats(
        left.counts + right.counts,
        left.sums + right.sums,
        left.second + right.second,
        left.log_likelihood + right.log_likelihood,
        jnp.minimum(left.worst_log_likelihood, right.worst_log_likelihood),
        jnp.where(right_worse, right.worst_row, left.worst_row),
        left.shift,
    )


def _outer(a, b):
    return a[..., :, None] * b[..., None, :]


def m_step_from_statistics(
    stats: GMMStats,
    covariance_type: str = "full",
    *,
    reg_covar=0.0,
    prior=None,
    active=None,
) -> GMMParams:
    """Closed-form M-step (module docstring table) from summed statistics.

    xbar_c = s_c + sums_c / N_c, and the scatter about xbar_c is
    second_c - sums_c sums_c^T / N_c (diagonal: its diagonal; tied: summed over c
    with second = sum_i v_i x_i x_i^T, s = 0). The scatter about the MAP mean
    mu_c adds N_c (xbar_c - mu_c)(xbar_c - mu_c)^T. ``active`` (k,) masks the
    padding components of a one-program sweep: they keep weight 0.
    """
    check_covariance_type(covariance_type)
    dtype = stats.sums.dtype
    num_components, num_features = stats.sums.shape
    eye = jnp.eye(num_features, dtype=dtype)
    counts = stats.counts + 10 * jnp.finfo(dtype).eps
    if active is not None:
        counts = jnp.where(active, counts, 0.0)
    safe_counts = jnp.where(counts > 0, counts, 1.0)
    centred_sums = stats.sums / safe_counts[:, None]  # xbar_c - s_c
    data_means = stats.shift + centred_sums
    if prior is None:
        weights = counts / jnp.sum(counts)
        means = data_means
    else:
        alpha = jnp.broadcast_to(prior.weight_concentration, (num_components,))
        pseudo_counts = counts + alpha.astype(dtype) - 1.0
        if active is not None:
            pseudo_counts = jnp.where(active, pseudo_counts, 0.0)
        weights = pseudo_counts / jnp.sum(pseudo_counts)
        kappa0 = prior.mean_precision
        means = (counts[:, None] * data_means + kappa0 * prior.mean_prior) / (
            counts + kappa0
        )[:, None]
    offset = data_means - means  # xbar_c - mu_c: zero for maximum likelihood
    if covariance_type == "full":
        scatter = stats.second - _outer(stats.sums, centred_sums)
        scatter = scatter + counts[:, None, None] * _outer(offset, offset)
    elif covariance_type == "tied":
        between = jnp.einsum("kd,ke->de", stats.sums, centred_sums)
        scatter = stats.second - between
        scatter = scatter + jnp.einsum("k,kd,ke->de", counts, offset, offset)
    else:
        between, offset_squares = stats.sums * centred_sums, offset**2
        if covariance_type == "spherical":
            # second holds sum_j: the trace of the scatter is all that is needed.
            between = jnp.sum(between, axis=1, keepdims=True)
            offset_squares = jnp.sum(offset_squares, axis=1, keepdims=True)
        scatter = jnp.maximum(stats.second - between, 0.0)
        scatter = scatter + counts[:, None] * offset_squares
    if covariance_type in ("full", "tied"):
        # Rounding leaves the one-pass scatter slightly asymmetric.
        scatter = 0.5 * (scatter + jnp.swapaxes(scatter, -1, -2))
    if prior is not None:
        deviation = means - prior.mean_prior
        nu, psi = prior.dof, prior.scale
        if active is not None:
            deviation = jnp.where(active[:, None], deviation, 0.0)
    if covariance_type == "full":
        if prior is None:
            covariances = scatter / safe_counts[:, None, None]
        else:
            covariances = (psi + scatter + kappa0 * _outer(deviation, deviation)) / (
                counts + nu + num_features + 2.0
            )[:, None, None]
        covariances = covariances + reg_covar * eye
    elif covariance_type == "tied":
        total = jnp.sum(counts)
        if prior is None:
            shared = scatter / total
        else:
            outer = kappa0 * jnp.matmul(deviation.T, deviation, precision=_HIGHEST)
            num_active = num_components if active is None else jnp.sum(active)
            shared = (psi + scatter + outer) / (
                total + num_active + nu + num_features + 1.0
            )
        shared = shared + reg_covar * eye
        covariances = jnp.broadcast_to(
            shared, (num_components, num_features, num_features)
        )
    elif covariance_type == "diag":
        if prior is None:
            variances = scatter / safe_counts[:, None]
        else:
            variances = (jnp.diagonal(psi) + scatter + kappa0 * deviation**2) / (
                counts + nu + 3.0
            )[:, None]
        covariances = (variances + reg_covar)[:, :, None] * eye
    else:
        total = scatter[:, 0]
        if prior is None:
            variance = total / (num_features * safe_counts)
        else:
            variance = (
                jnp.trace(psi) + total + kappa0 * jnp.sum(deviation**2, axis=1)
            ) / (num_features * (counts + 1.0 + nu) + 2.0)
        covariances = (variance + reg_covar)[:, None, None] * eye
    if covariance_type != "tied":
        covariances = _mark_unresolved(covariances, stats, safe_counts)
    if active is not None:
        # A padding component keeps weight 0 and a finite, harmless covariance.
        means = jnp.where(active[:, None], means, 0.0)
        covariances = jnp.where(active[:, None, None], covariances, eye)
    return GMMParams(weights, means, covariances)


def _mark_unresolved(covariances, stats: GMMStats, safe_counts):
    """NaN for a component whose variance is below what the statistics resolve.

    second / N_c - (sums / N_c)^2 carries an absolute rounding error of a few eps
    times the mean square second_c / N_c; a variance (after reg_covar) below
    ``_RESOLUTION`` times that has no correct digit. That happens only when a
    component collapses onto a point far from the shift with reg_covar too
    small for the dtype (with reg_covar = 0 the likelihood is unbounded there).
    Such a restart is marked failed (its objective turns NaN), as a singular
    covariance would be, instead of following rounding noise.

    A full covariance can also collapse along a direction that is no axis (onto
    a line through two rows, say): its smallest eigenvalue is compared with the
    bound for the largest mean square, trace(second_c) / N_c. That test covers
    the per-axis one (lambda_min <= S_jj and second_jj <= trace(second_c)).
    """
    tiny = _RESOLUTION * jnp.finfo(covariances.dtype).eps
    second = stats.second
    if second.ndim == 3:
        smallest = jnp.linalg.eigvalsh(covariances)[:, 0]
        total = jnp.trace(second, axis1=-2, axis2=-1)
        unresolved = smallest < tiny * total / safe_counts
    else:
        if second.shape[1] == 1:
            # "spherical": sum_j over the features, so the mean square per
            # feature (a one-feature "diag" is divided by d = 1).
            second = second / covariances.shape[-1]
        variances = jnp.diagonal(covariances, axis1=-2, axis2=-1)
        unresolved = jnp.any(variances < tiny * second / safe_counts[:, None],
                             axis=-1)
    return jnp.where(unresolved[:, None, None], jnp.nan, covariances)


def m_step(
    x, resp, covariance_type: str = "full", *, reg_covar=0.0, prior=None,
    row_weights=None, active=None,
) -> GMMParams:
    """Closed-form M-step from responsibilities (n, k) (module docstring table).

    The statistics of ``GMMStats``; "full" takes them about the
    responsibility-weighted means of this very M-step (two passes, nothing
    cancels), the other types about the origin (one matrix product each).
    """
    check_covariance_type(covariance_type)
    weighted_resp = resp if row_weights is None else resp * row_weights[:, None]
    counts = jnp.sum(weighted_resp, axis=0)
    xbar = jnp.matmul(weighted_resp.T, x, precision=_HIGHEST) / jnp.where(
        counts > 0, counts, 1.0
    )[:, None]
    shift = xbar if covariance_type == "full" else jnp.zeros_like(xbar)
    counts, sums, second = _resp_statistics(x, weighted_resp, shift, covariance_type)
    zero = jnp.zeros((), x.dtype)
    stats = GMMStats(counts, sums, second, zero, zero, x[0], shift)
    return m_step_from_statistics(
        stats, covariance_type, reg_covar=reg_covar, prior=prior, active=active
    )


def _second_moment(x, row_weights):
    """sum_i v_i x_i x_i^T, (d, d): one product."""
    return jnp.matmul((x * row_weights[:, None]).T, x, precision=_HIGHEST)


def _reseed_covariance_from(data_covariance, covariance_type: str, reg_covar):
    """Covariance given to a reseeded component: the data's, in the type's form."""
    num_features = data_covariance.shape[0]
    eye = jnp.eye(num_features, dtype=data_covariance.dtype)
    if covariance_type == "diag":
        data_covariance = jnp.diagonal(data_covariance) * eye
    elif covariance_type == "spherical":
        data_covariance = jnp.mean(jnp.diagonal(data_covariance)) * eye
    # A constant data set has zero covariance; the identity keeps the factor finite.
    floor = jnp.where(jnp.trace(data_covariance) > 0, reg_covar, 1.0)
    return data_covariance + floor * eye


def _reseed_empty(params, stats: GMMStats, num_rows, reseed_covariance,
                  covariance_type, active=None):
    """Move the first component with N_c < EMPTY_COMPONENT_COUNT to the worst row.

    It gets the row of lowest log p(x_i | theta) as mean, the data covariance (the
    shared one is kept for "tied") and weight 1 / n. One component per iteration:
    the next empty one then goes to the worst row *after* this move, and a single
    argmin costs O(n) where sorting for k rows would dominate the iteration.
    Padding components (``active`` False) are never reseeded.
    """
    empty = stats.counts < EMPTY_COMPONENT_COUNT
    if active is not None:
        empty = empty & active
    chosen = (jnp.arange(stats.counts.shape[0]) == jnp.argmax(empty)) & empty
    means = jnp.where(chosen[:, None], stats.worst_row, params.means)
    covariances = params.covariances
    if covariance_type != "tied":
        covariances = jnp.where(chosen[:, None, None], reseed_covariance, covariances)
    weights = jnp.where(chosen, 1.0 / num_rows, params.weights)
    weights = weights / jnp.sum(weights)
    return GMMParams(weights, means, covariances), jnp.sum(chosen, dtype=jnp.int32)


def _objective_from(stats: GMMStats, params, num_rows, prior, covariance_type):
    """Mean log-likelihood (plus log prior / n) from summed statistics."""
    value = stats.log_likelihood / num_rows
    if prior is not None:
        value = value + log_prior(params, prior, covariance_type) / num_rows
    return value


def _update(params, stats: GMMStats, num_rows, covariance_type, reg_covar, prior,
            reseed_covariance, active=None):
    """M-step and reseeding from summed statistics: (new params, reseeds)."""
    new_params = m_step_from_statistics(
        stats, covariance_type, reg_covar=reg_covar, prior=prior, active=active
    )
    return _reseed_empty(new_params, stats, num_rows, reseed_covariance,
                         covariance_type, active)


def _em_step(state: _State, x, row_weights, num_rows, covariance_type, reg_covar,
             prior, reseed_covariance, active=None, products=None):
    """One E-step (objective at ``state.params``) and one M-step (plus reseeding)."""
    params = state.params
    stats = statistics(params, x, row_weights, covariance_type, products)
    value = _objective_from(stats, params, num_rows, prior, covariance_type)
    new_params, num_empty = _update(params, stats, num_rows, covariance_type,
                                    reg_covar, prior, reseed_covariance, active)
    return _State(new_params, state.num_reseeds + num_empty), value


# ---------------------------------------------------------------- initialisation


def _squared_distances(x, centres):
    """||x_i - c_j||^2 (n, k) by expansion; only used to rank centres (argmin)."""
    cross = jnp.matmul(x, centres.T, precision=_HIGHEST)
    return (
        jnp.sum(x * x, axis=1)[:, None] - 2.0 * cross + jnp.sum(centres**2, axis=1)
    )


def _kmeans_plus_plus(rng_key, x, row_weights, num_components: int, num_active):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): D^2-weighted draws.

    Padding rows (weight 0, stored after the real rows) are never drawn. Only
    the first ``num_active`` centres are drawn (the rest stay 0, for the padding
    components of a one-program sweep); centre j uses the key
    ``fold_in(key, j)``, so the first K centres do not depend on how many
    padding components follow.
    """
    num_real = jnp.sum(row_weights > 0)
    key_first, key_rest = jax.random.split(rng_key)
    first = x[jax.random.randint(key_first, (), 0, num_real)]
    centres = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(first)
    min_sq = jnp.sum((x - first) ** 2, axis=1)
    drawable = row_weights > 0

    def add_centre(j, carry):
        centres, min_sq = carry
        logits = jnp.where(
            drawable & (min_sq > 0), jnp.log(jnp.maximum(min_sq, 1e-300)), -jnp.inf
        )
        index = jax.random.categorical(jax.random.fold_in(key_rest, j), logits)
        centre = x[index]
        drawn = j < num_active
        min_sq = jnp.where(
            drawn, jnp.minimum(min_sq, jnp.sum((x - centre) ** 2, axis=1)), min_sq
        )
        return centres.at[j].set(jnp.where(drawn, centre, 0.0)), min_sq

    centres, _ = jax.lax.fori_loop(1, num_components, add_centre, (centres, min_sq))
    return centres


def _nearest(x, centres, active):
    """Index of the nearest active centre for every row."""
    distances = _squared_distances(x, centres)
    return jnp.argmin(jnp.where(active, distances, jnp.inf), axis=1)


def _lloyd(x, row_weights, centres, active, num_steps: int):
    """Lloyd's k-means iterations; a centre that loses all its rows stays put."""
    num_components = centres.shape[0]

    def step(_, centres):
        onehot = jax.nn.one_hot(_nearest(x, centres, active), num_components,
                                dtype=x.dtype)
        onehot = onehot * row_weights[:, None]
        counts = jnp.sum(onehot, axis=0)
        sums = jnp.matmul(onehot.T, x, precision=_HIGHEST)
        return jnp.where(
            counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres
        )

    return jax.lax.fori_loop(0, num_steps, step, centres)


def _initial_params(rng_key, x, row_weights, active, num_components,
                    covariance_type, init_method, reg_covar, prior):
    """Initial GMMParams: centres, then one M-step from hard assignments to them.

    "kmeans++": k-means++ seeds refined by ``_LLOYD_STEPS`` Lloyd iterations.
    "random_from_data": k distinct real rows drawn uniformly.
    """
    num_active = jnp.sum(active)
    if init_method == "kmeans++":
        centres = _kmeans_plus_plus(rng_key, x, row_weights, num_components,
                                    num_active)
        centres = _lloyd(x, row_weights, centres, active, _LLOYD_STEPS)
    else:
        # Uniform over real rows; the first K of the draws do not depend on how
        # many are drawn (Gumbel top-k), as the sweep's padding needs.
        drawable = (row_weights > 0).astype(x.dtype)
        rows = jax.random.choice(
            rng_key, x.shape[0], (num_components,), replace=False,
            p=drawable / jnp.sum(drawable),
        )
        centres = x[rows]
    resp = jax.nn.one_hot(_nearest(x, centres, active), num_components,
                          dtype=x.dtype)
    return m_step(x, resp, covariance_type, reg_covar=reg_covar, prior=prior,
                  row_weights=row_weights, active=active)


# ------------------------------------------------------------------- jitted core


def _weighted_centre(x, row_weights):
    """Weighted column means, corrected by the mean residual (float32 safe)."""
    total = jnp.sum(row_weights)
    centre = jnp.matmul(row_weights, x, precision=_HIGHEST) / total
    return centre + jnp.matmul(row_weights, x - centre, precision=_HIGHEST) / total


def _mean_log_likelihood(params, x, row_weights, num_rows, covariance_type,
                         products=None):
    log_norm = e_step(params, x, covariance_type, products)[1]
    return jnp.sum(jnp.where(row_weights > 0, row_weights * log_norm, 0.0)) / num_rows


class _Problem(NamedTuple):
    """What every restart of one fit shares (inside the jitted core)."""

    centred: jax.Array  # x minus the weighted data centre
    row_weights: jax.Array  # (n,) 1 for a row, 0 for padding
    num_rows: jax.Array  # sum of the row weights
    centre: jax.Array
    prior: GMMPrior | None  # with mean_prior centred
    reseed_covariance: jax.Array
    # row_products(centred) when they fit; for "tied" the (d, d) second moment.
    products: jax.Array | None


def _problem(x, row_weights, reg_covar, prior, covariance_type) -> _Problem:
    centre = _weighted_centre(x, row_weights)
    centred = x - centre
    if prior is not None:
        prior = prior._replace(mean_prior=prior.mean_prior - centre)
    num_rows, num_features = x.shape
    total = jnp.sum(row_weights)
    # The data are centred, so second moment / total is the data covariance.
    second_moment = _second_moment(centred, row_weights)
    products = None
    # Columns of row_products ("tied" has none: its products are second_moment).
    width = {"full": num_features * (num_features + 1) // 2,
             "diag": 2 * num_features, "spherical": num_features + 1}.get(
        covariance_type, 0)
    if covariance_type == "tied":
        products = second_moment
    elif 0 < num_rows * width <= PRODUCTS_MAX_ELEMENTS:
        products = row_products(centred, covariance_type)
    reseed_covariance = _reseed_covariance_from(second_moment / total,
                                                covariance_type, reg_covar)
    return _Problem(centred, row_weights, total, centre, prior, reseed_covariance,
                    products)


def _run_restart(problem: _Problem, key, start, active, tol, reg_covar, *,
                 num_components, covariance_type, init_method, max_iters):
    """One restart: initialise (unless ``start`` is given), run EM, check it.

    Returns (EMResult in the data's units, number of reseeds, failed).
    """
    if start is None:
        start = _initial_params(
            key, problem.centred, problem.row_weights, active, num_components,
            covariance_type, init_method, reg_covar, problem.prior,
        )
    else:
        start = start._replace(means=start.means - problem.centre)
    step_fn = partial(
        _em_step,
        x=problem.centred,
        row_weights=problem.row_weights,
        num_rows=problem.num_rows,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        prior=problem.prior,
        reseed_covariance=problem.reseed_covariance,
        active=active,
        products=problem.products,
    )
    state, num_iters, converged, trace = run_em(
        step_fn,
        _State(start, jnp.zeros((), jnp.int32)),
        max_iters=max_iters,
        tol=tol,
        dtype=problem.centred.dtype,
    )
    return _finish(problem, state.params, state.num_reseeds, num_iters, converged,
                   trace, covariance_type)


def _finish(problem: _Problem, params, num_reseeds, num_iters, converged, trace,
            covariance_type):
    """Recompute the objective at the final params and mark non-finite fits."""
    # "full" goes through the Cholesky whitening here: measured faster than the
    # pairs product for this one E-step (a fit of 10 iterations at n = 1e5,
    # d = k = 16: 470 against 545 ms).
    products = None if covariance_type == "full" else problem.products
    value = _mean_log_likelihood(params, problem.centred, problem.row_weights,
                                 problem.num_rows, covariance_type, products)
    if problem.prior is not None:
        value = value + log_prior(params, problem.prior, covariance_type) / (
            problem.num_rows
        )
    result, failed = finished_result(params, value, num_iters, converged, trace,
                                     problem.centre)
    return result, num_reseeds, failed


def finished_result(params, value, num_iters, converged, trace, centre):
    """(EMResult in the data's units, failed) of one restart.

    The restart failed when its final objective or a parameter is not finite;
    a failed restart is never converged.
    """
    finite_params = jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in params])
    )
    failed = ~(jnp.isfinite(value) & finite_params)
    params = params._replace(means=params.means + centre)
    return EMResult(params, value, num_iters, converged & ~failed, trace), failed


@partial(
    jax.jit,
    static_argnames=("num_components", "covariance_type", "init_method", "max_iters",
                     "screen_iters"),
)
def _fit(x, row_weights, init_params, keys, tol, reg_covar, prior, *,
         num_components, covariance_type, init_method, max_iters, screen_iters=0):
    """All restarts of EM (vmap over ``keys``), each one lax.while_loop.

    With ``screen_iters`` > 0, every restart runs that many iterations and only
    the best one continues (``driver.continue_best``).
    """
    problem = _problem(x, row_weights, reg_covar, prior, covariance_type)
    active = jnp.ones((num_components,), bool)
    restart = partial(
        _run_restart, problem, active=active, tol=tol, reg_covar=reg_covar,
        num_components=num_components, covariance_type=covariance_type,
        init_method=init_method,
    )
    first_iters = screen_iters or max_iters
    results = jax.vmap(partial(restart, max_iters=first_iters))(keys, init_params)
    if not screen_iters:
        return results
    return continue_best(results, partial(restart, None, max_iters=max_iters
                                          - screen_iters), max_iters)


# ------------------------------------------------------------- Python boundary


def _check_data(x, num_components, covariance_type, reg_covar, prior):
    """Validate x and warn about data that fit but deserve attention.

    Returns (x as a float array, (d,) True for the non-constant columns).
    """
    x = check_matrix("x", x, min_rows=2, min_cols=1)
    num_rows, num_features = x.shape
    if num_components > num_rows:
        raise ValueError(
            f"num_components={num_components} exceeds the number of rows of x "
            f"({num_rows}); every component needs data: use num_components <= "
            f"{num_rows}"
        )
    varying = _varying_columns(x)
    check_constant_columns(varying, reg_covar, prior)
    # A column with >= k distinct values proves >= k distinct rows; try the first
    # rows of each column (cheap), then whole columns, and only fall back to the
    # (slower) row-wise unique when no column proves it.
    if not any(
        len(np.unique(x[:rows, j])) >= num_components
        for rows in (min(num_rows, 4 * num_components + 64), num_rows)
        for j in range(num_features)
    ):
        num_distinct = len(np.unique(x, axis=0))
        if num_distinct < num_components:
            warn(
                f"x has only {num_distinct} distinct row(s) for num_components="
                f"{num_components}: some components will be empty (reseeded) or "
                f"collapse onto single points; lower num_components",
                DataWarning,
            )
    return x, varying


def _varying_columns(x) -> np.ndarray:
    """(d,) True for a column that takes two different values.

    The first rows settle it for almost every column (one small comparison);
    only a column that is constant there is read in full.
    """
    head = x[:64]
    varying = np.any(head != head[0], axis=0)
    for column in np.flatnonzero(~varying):
        varying[column] = np.any(x[:, column] != x[0, column])
    return varying


def check_constant_columns(varying, reg_covar, prior) -> None:
    """Refuse constant columns without a floor; warn about them otherwise."""
    constant = np.flatnonzero(~np.asarray(varying)).tolist()
    if not constant:
        return
    if reg_covar == 0 and prior is None:
        raise ValueError(
            f"x has constant column(s) {constant}: their variance is 0 and, "
            f"with reg_covar=0, the covariances are singular. Drop the "
            f"column(s), set reg_covar > 0 or give a prior"
        )
    warn(
        f"x has constant column(s) {constant}: their variance in every "
        f"component is the floor (reg_covar={reg_covar} or the prior); "
        f"consider dropping them",
        DataWarning,
    )


def _check_init(init, num_features, covariance_type, num_restarts, dtype):
    """Return (init_method, batched GMMParams or None, num_restarts)."""
    if isinstance(init, GMMParams):
        params = check_params(init, num_features, covariance_type, name="init")
        if params.weights.ndim == 1:
            params = jax.tree_util.tree_map(
                lambda a: jnp.broadcast_to(a, (num_restarts,) + a.shape), params
            )
        elif num_restarts not in (1, params.weights.shape[0]):
            raise ValueError(
                f"init holds {params.weights.shape[0]} stacked starts but "
                f"num_restarts={num_restarts}; make them agree"
            )
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
        return "params", params, params.weights.shape[0]
    if isinstance(init, str) and init in INIT_METHODS:
        return init, None, num_restarts
    raise ValueError(
        f"init must be one of {INIT_METHODS} or a GMMParams, got {init!r}"
    )


def fit_gaussian_mixture_restarts(
    x,
    num_components: int,
    *,
    covariance_type: str = "full",
    init="kmeans++",
    num_restarts: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    prior: GMMPrior | None = None,
    rng_key=None,
    devices=None,
    screen_iters: int = 0,
) -> GMMRestarts:
    """Run every restart of ``fit_gaussian_mixture`` and return them all.

    Same arguments as ``fit_gaussian_mixture``; nothing is raised when restarts
    fail (``failed``, ``best_index == -1``), and only data warnings are emitted.
    """
    return _fit_restarts(
        x, num_components, covariance_type=covariance_type, init=init,
        num_restarts=num_restarts, max_iters=max_iters, tol=tol,
        reg_covar=reg_covar, prior=prior, rng_key=rng_key, devices=devices,
        screen_iters=screen_iters,
    )[0]


def _fit_restarts(x, num_components, *, covariance_type, init, num_restarts,
                  max_iters, tol, reg_covar, prior, rng_key, devices,
                  screen_iters=0):
    """(GMMRestarts, (d,) True for the non-constant columns of x)."""
    options = _check_options(num_components, covariance_type, num_restarts,
                             max_iters, tol, reg_covar)
    screen_iters = check_int("screen_iters", screen_iters, minimum=0)
    if screen_iters and screen_iters >= options.max_iters:
        raise ValueError(
            f"screen_iters={screen_iters} must be below max_iters="
            f"{options.max_iters}: the best restart needs iterations left to "
            f"continue; use 0 to run every restart to convergence"
        )
    if isinstance(x, ChunkedRows):
        if screen_iters:
            raise ValueError(
                "screen_iters is not offered for chunked data; pass "
                "screen_iters=0 (each restart then streams the data once per "
                "iteration, under vmap)"
            )
        # Imported here: the streaming module builds on this one.
        from latentmix.inference.em.gaussian_mixture_streaming import fit_streaming

        return fit_streaming(
            x, num_components, covariance_type=covariance_type, init=init,
            num_restarts=num_restarts, max_iters=max_iters, tol=tol,
            reg_covar=reg_covar, prior=prior, rng_key=rng_key, devices=devices,
        )
    x, varying = _check_data(x, num_components, covariance_type, reg_covar, prior)
    num_rows, num_features = x.shape
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    prior = _prepare_prior(prior, num_components, num_features, dtype)
    init_method, init_params, keys = _starts(
        init, rng_key, num_features, covariance_type, options.num_restarts, dtype
    )
    x, row_weights, (init_params, keys, prior) = place_rows(
        x, check_devices(devices), (init_params, keys, prior)
    )
    results, num_reseeds, failed = _fit(
        x,
        row_weights,
        init_params,
        keys,
        jnp.asarray(tol, dtype),
        jnp.asarray(reg_covar, dtype),
        prior,
        num_components=num_components,
        covariance_type=covariance_type,
        init_method=init_method,
        max_iters=options.max_iters,
        screen_iters=screen_iters if options.num_restarts > 1 else 0,
    )
    return collect_restarts(results, num_reseeds, failed), varying


class _Options(NamedTuple):
    num_components: int
    num_restarts: int
    max_iters: int


def _check_options(num_components, covariance_type, num_restarts, max_iters, tol,
                   reg_covar) -> _Options:
    """Validate the scalar options shared by the in-memory and streaming fits."""
    num_components = check_int("num_components", num_components, minimum=1)
    check_covariance_type(covariance_type)
    num_restarts = check_int("num_restarts", num_restarts, minimum=1)
    max_iters = check_int("max_iters", max_iters, minimum=0)
    check_nonnegative("tol", tol)
    check_nonnegative("reg_covar", reg_covar)
    return _Options(num_components, num_restarts, max_iters)


def _prepare_prior(prior, num_components, num_features, dtype):
    """A checked prior in ``dtype`` with (k,) weight concentrations, or None."""
    if prior is None:
        return None
    prior = check_prior(prior, num_components, num_features, for_map=True)
    prior = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), prior)
    return prior._replace(
        weight_concentration=jnp.broadcast_to(
            prior.weight_concentration, (num_components,)
        )
    )


def _starts(init, rng_key, num_features, covariance_type, num_restarts, dtype):
    """(init_method, batched GMMParams or None, one key per restart)."""
    init_method, init_params, num_restarts = _check_init(
        init, num_features, covariance_type, num_restarts, dtype
    )
    if rng_key is None:
        if init_method != "params":
            raise ValueError(
                f"rng_key is required for init={init!r}; pass e.g. "
                f"rng_key=jax.random.key(0)"
            )
        rng_key = jax.random.key(0)
    return init_method, init_params, jax.random.split(rng_key, num_restarts)


def collect_restarts(results: EMResult, num_reseeds, failed) -> GMMRestarts:
    """GMMRestarts with the best finite restart (highest objective) marked."""
    failed = np.asarray(failed)
    scores = np.where(failed, -np.inf, np.asarray(results.log_likelihood))
    best_index = -1 if failed.all() else int(np.argmax(scores))
    return GMMRestarts(results, np.asarray(num_reseeds), failed, best_index)


def fit_gaussian_mixture(
    x,
    num_components: int,
    *,
    covariance_type: str = "full",
    init="kmeans++",
    num_restarts: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    prior: GMMPrior | None = None,
    rng_key=None,
    devices=None,
    screen_iters: int = 0,
) -> EMResult:
    """Fit a Gaussian mixture by EM (maximum likelihood, or MAP with ``prior``).

    One jit-compiled call runs every restart (vmap) and every iteration
    (lax.while_loop); calling again with data of the same shape, dtype and static
    options (num_components, covariance_type, init method, max_iters, prior or
    not) reuses the compiled code, whatever tol, reg_covar, the data values, the
    prior's values or the key.

    Args:
      x: (n, d) data, n >= 2; float32 stays float32, integers become float64.
        Or a ``data.chunks.ChunkedRows`` (a .npy read in chunks, parquet record
        batches, a chunk factory) for exact out-of-core EM: every iteration
        streams the chunks (``inference.em.gaussian_mixture_streaming``).
      num_components: k, 1 <= k <= n.
      covariance_type: "full", "tied", "diag" or "spherical".
      init: "kmeans++" (k-means++ seeding plus 10 Lloyd steps, in JAX) or
        "random_from_data" (k distinct random rows): the start is then one
        M-step from the hard assignments of the rows to those centres. Or a
        GMMParams used as given ((k,) leaves, or (r, k) leaves for r stacked
        starts), e.g. to start from scikit-learn's or another fit's parameters.
      num_restarts: independent starts; the best finite one is returned.
      max_iters: bound on EM iterations (sizes ``trace``); 0 returns the start.
      tol: stopping rule (scikit-learn's): stop after iteration t >= 2 once
        |trace[t] - trace[t-1]| < tol, the objective being the mean per-row
        log-likelihood (log posterior with a prior). tol=0 runs exactly
        max_iters iterations (and warns that EM did not converge).
      reg_covar: added to every variance after each M-step (scikit-learn's floor).
      prior: a GMMPrior for MAP-EM with the prior of ``models.gaussian_mixture
        .model`` (then the objective is the mean log posterior per row); None for
        maximum likelihood.
      rng_key: JAX PRNG key; required unless ``init`` is a GMMParams.
      devices: None (JAX's default device), an int m (the first m of
        ``jax.devices()``) or a list of devices: data-parallel EM with the rows
        sharded over the devices (``inference.sharding``); the result equals
        the one-device fit up to floating-point summation order (and exactly
        the same starts when n is a multiple of the device count; otherwise the
        zero-weight padding rows change the random draws of the starts).
      screen_iters: 0 (default): every restart runs to its stopping rule and the
        best is returned (scikit-learn's ``n_init``). s > 0: every restart runs
        s iterations, then only the best of them continues ("em-EM" / small-EM
        starts, Biernacki, Celeux & Govaert 2003): r restarts then cost about
        r s + max_iters iterations instead of r x max_iters, at the risk of
        dropping a restart that starts slowly but would have ended higher.

    Returns:
      EMResult of the best restart: ``params`` (GMMParams in the units of x),
      ``log_likelihood`` (the objective recomputed at ``params``: mean per-row
      log-likelihood, or mean per-row log posterior with a prior), ``num_iters``,
      ``converged`` and ``trace``.

    Raises:
      FloatingPointError: every restart's objective turned non-finite.

    Warns:
      ConvergenceWarning: the best restart reached max_iters (max_iters > 0).
      DataWarning: constant columns, fewer distinct rows than components, empty
        components reseeded, or components collapsed onto the reg_covar floor.
    """
    restarts, varying = _fit_restarts(
        x, num_components, covariance_type=covariance_type, init=init,
        num_restarts=num_restarts, max_iters=max_iters, tol=tol,
        reg_covar=reg_covar, prior=prior, rng_key=rng_key, devices=devices,
        screen_iters=screen_iters,
    )
    if restarts.best_index < 0:
        raise FloatingPointError(
            f"all {len(restarts.failed)} EM restart(s) produced a non-finite "
            f"objective (a covariance became singular). Increase reg_covar "
            f"(now {reg_covar}), give a prior, lower num_components, or scale "
            f"the data"
        )
    best = jax.tree_util.tree_map(lambda a: a[restarts.best_index], restarts.results)
    # Constant columns were warned about already; their variance is the floor by
    # construction and must not be reported as a collapse.
    _warn_about_fit(restarts, best, covariance_type, reg_covar, max_iters, tol,
                    varying)
    return best


def _warn_about_fit(restarts, best, covariance_type, reg_covar, max_iters, tol,
                    varying):
    """Turn the per-restart diagnostics of the jitted core into warnings."""
    num_failed = int(restarts.failed.sum())
    if num_failed:
        warn(
            f"{num_failed} of {len(restarts.failed)} EM restart(s) produced a "
            f"non-finite objective and were discarded",
            DataWarning,
        )
    reseeds = int(restarts.num_reseeds[restarts.best_index])
    if reseeds:
        warn(
            f"the best EM restart reseeded an empty component {reseeds} time(s) "
            f"(total responsibility < {EMPTY_COMPONENT_COUNT}); the data may "
            f"support fewer components",
            DataWarning,
        )
    if reg_covar > 0 and varying.any():
        params = best.params
        if covariance_type in ("full", "tied"):
            covariances = np.asarray(params.covariances)[:, varying][:, :, varying]
            smallest = np.linalg.eigvalsh(covariances)[:, 0]
        else:
            variances = np.asarray(_variances(params, covariance_type))
            smallest = variances[:, varying].min(axis=1)
        collapsed = np.flatnonzero(smallest <= 10 * reg_covar).tolist()
        if collapsed:
            warn(
                f"component(s) {collapsed} collapsed: a variance sits at the "
                f"reg_covar floor ({reg_covar}), so the likelihood is inflated by "
                f"a near-singular component. Lower num_components, increase "
                f"reg_covar or give a prior",
                DataWarning,
            )
    if max_iters > 0 and not bool(best.converged):
        warn(
            f"EM did not converge in max_iters={max_iters} iterations (tol={tol}); "
            f"increase max_iters or tol, try other starts, or check for degenerate "
            f"data",
            ConvergenceWarning,
        )

