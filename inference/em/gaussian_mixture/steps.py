"""The maths of one EM iteration for the Gaussian mixture: E-step, M-step, reseeding.

Pure functions of arrays, traced inside the jitted cores of ``restarts``,
``chunked`` and ``sweep``; this module imports no sibling. The formulas are the
table of the package docstring. Reading order:

  ``e_step``                 log responsibilities (PRML eq. 9.23), with the
                             log-densities read off per-row products
                             (``row_products``) where they exist (full
                             covariances without them: ``blocked``);
  ``statistics``             the E-step summarised as ``GMMStats`` (sums over
                             rows, which add up over chunks and devices:
                             ``add_statistics``);
  ``m_step_from_statistics`` weights and means once, then one small function per
                             covariance type (``_full_covariances``,
                             ``_tied_covariances``, ``_diag_covariances``,
                             ``_spherical_covariances``), then the ``reg_covar``
                             floor, the collapse check and the padding mask once;
  ``em_step``                one iteration: statistics, objective, M-step and
                             reseeding of an empty component
                             (``step_from_statistics`` from summed statistics).

Numerics and speed. Every n x k x d (or n x k x d^2) quantity is a matrix
product: the E-step expands the squared distances of "diag", "spherical" and
"tied" and of "full" (through the precomputed products x_i x_i^T,
``row_products``), and the M-step takes one-pass statistics (scikit-learn's forms
for "diag" and "tied"). Expanding a square cancels about log10(1 + R^2) digits,
R being a component's distance from the data centre in its own standard
deviations (the callers centre the data): nothing that matters in float64,
7 - log10(1 + R^2) digits left in float32
(``models.gaussian_mixture._expanded_squares``). A variance below what its
statistics resolve (a collapse onto a point far from the centre, or of a full
covariance onto a line through two rows, with reg_covar too small for the dtype)
fails the restart instead of following rounding noise (``_mark_unresolved``).
Matrix products use HIGHEST precision (no TF32 on GPUs). A component whose N_c
falls below ``EMPTY_COMPONENT_COUNT`` is reseeded at the worst-explained row with
the data covariance (one component per iteration), which is the one place where
the trace may decrease (reported and warned about by ``fit``).

Padding. Rows carry weights v_i (0 for a padding row: sharding, chunks), and an
``active`` (k,) mask marks the padding components of a one-program K sweep:
weight exactly 0, so log weight -inf, responsibility exactly 0 and no part in
any statistic, objective or reseeding.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.inference.em.gaussian_mixture.blocked import (
    BlockedRows,
    full_block_statistics,
    scaled_exponentials,
)
from latentmix.models.gaussian_mixture import (
    GMMParams,
    check_covariance_type,
    component_log_prob,
    diagonal_variances,
    log_prior,
    map_components,
)

__all__ = [
    "EMPTY_COMPONENT_COUNT",
    "GMMStats",
    "LoopState",
    "add_statistics",
    "e_step",
    "elbo",
    "em_step",
    "m_step",
    "m_step_from_statistics",
    "mean_log_likelihood",
    "objective",
    "reseed_covariance_from",
    "row_products",
    "second_moment",
    "statistics",
    "step_from_statistics",
]

# A component with less than a thousandth of a row's worth of responsibility is
# dead: scikit-learn would keep it (weight ~0, garbage covariance); we reseed it.
EMPTY_COMPONENT_COUNT = 1e-3

_HIGHEST = jax.lax.Precision.HIGHEST

# A variance below this many eps times the mean square it was computed from has
# no correct digit (``_mark_unresolved``).
_RESOLUTION = 32


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
    (``restarts.PRODUCTS_MAX_ELEMENTS``), and otherwise shifts by the previous
    means, so that nothing cancels once EM settles.
    """

    counts: jax.Array
    sums: jax.Array
    second: jax.Array
    log_likelihood: jax.Array
    worst_log_likelihood: jax.Array
    worst_row: jax.Array
    shift: jax.Array


class LoopState(NamedTuple):
    """What EM iterates (``driver.run_em``'s params): the parameters and how
    many times a component was reseeded so far."""

    params: GMMParams
    num_reseeds: jax.Array


# ------------------------------------------------------------------- E-step


def e_step(params: GMMParams, x, covariance_type: str = "full", products=None):
    """Log responsibilities (n, k) and log p(x_i | theta) per row (n,).

    log gamma_ic = log weights_c + log N(x_i | mu_c, S_c) - log p(x_i | theta),
    log p(x_i | theta) = logsumexp_c [log weights_c + log N(x_i | mu_c, S_c)].
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
    """EM's objective: mean log-likelihood, or mean log posterior with a prior.

    (1/n) sum_i log p(x_i | theta) [+ log p(theta) / n].
    """
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
    involve gamma: ``second_moment``). The data never change during a fit, so
    these are computed once.
    """
    if covariance_type == "full":
        upper, lower = np.triu_indices(x.shape[1])
        return x[:, upper] * x[:, lower]
    if covariance_type == "diag":
        return jnp.concatenate([x, x * x], axis=1)
    if covariance_type == "spherical":
        return jnp.concatenate([x, _squared_norms(x)], axis=1)
    return None


def second_moment(x, row_weights):
    """sum_i v_i x_i x_i^T, (d, d): one product.

    The "tied" statistics' ``second`` (sum_c gamma_ic = 1, so it does not depend
    on the parameters), and on centred data N times the data covariance.
    """
    return jnp.matmul((x * row_weights[:, None]).T, x, precision=_HIGHEST)


def statistics(params: GMMParams, x, row_weights, covariance_type: str = "full",
               products=None, *, about_origin: bool = False):
    """E-step at ``params`` summarised as ``GMMStats``.

    ``products``: ``row_products(x, covariance_type)`` (then the shift is 0 and
    the E- and M-step products read them); for "tied", the (d, d) moment
    sum_i v_i x_i x_i^T of these rows (``second_moment``), which no iteration
    changes; or None (then "full" runs over row blocks, ``blocked``, with the
    shift that module chooses), or for "full" those blocks laid out once per
    fit (``blocked.lay_out_blocks``). ``about_origin``: every statistic about 0
    (shift 0), so that statistics computed at different parameters can be
    averaged (online EM).
    """
    if covariance_type == "full" and _in_blocks(products):
        # Row blocks, two matrix products each (``blocked``); the shift is the
        # current means or 0, as ``blocked.full_route`` decides.
        shift = jnp.zeros_like(params.means) if about_origin else params.means
        return GMMStats(*full_block_statistics(
            params.means, params.covariances, jnp.log(params.weights), x,
            row_weights, shift, blocks=products))
    # One exponential per entry (``blocked.scaled_exponentials``).
    weighted = jnp.log(params.weights) + _component_log_prob(
        params, x, covariance_type, products
    )
    scaled, norm, log_norm = scaled_exponentials(weighted, axis=-1)
    real = row_weights > 0
    weighted_resp = scaled * (row_weights / norm)[:, None]
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


# ------------------------------------------------------------------- M-step


def m_step_from_statistics(
    stats: GMMStats,
    covariance_type: str = "full",
    *,
    reg_covar=0.0,
    prior=None,
    active=None,
) -> GMMParams:
    """Closed-form M-step (the package docstring's table) from summed statistics.

    xbar_c = s_c + sums_c / N_c; the weights and means (``_weights_and_means``)
    are common to every covariance type, whose update is one function of
    ``_COVARIANCE_UPDATES`` (matrices, or the variances of "diag" and
    "spherical"). Around it, once: ``reg_covar`` is added to every variance
    (scikit-learn's floor; ``_with_floor`` also expands variances to diagonal
    matrices), a variance the statistics do not resolve
    turns the covariance NaN (``_mark_unresolved``; "tied" is the data's
    scatter and never collapses), and ``active`` (k,) masks the padding
    components of a one-program sweep: they keep weight 0, mean 0 and the
    identity as covariance. Like scikit-learn, N_c gets ``10 * eps`` so an empty
    component never divides by zero.
    """
    check_covariance_type(covariance_type)
    dtype = stats.sums.dtype
    num_components, num_features = stats.sums.shape
    counts = stats.counts + 10 * jnp.finfo(dtype).eps
    if active is not None:
        counts = jnp.where(active, counts, 0.0)
    safe_counts = jnp.where(counts > 0, counts, 1.0)
    centred_sums = stats.sums / safe_counts[:, None]  # xbar_c - s_c
    data_means = stats.shift + centred_sums
    weights, means = _weights_and_means(counts, data_means, prior, active)
    terms = _MStepTerms(
        counts=counts,
        safe_counts=safe_counts,
        centred_sums=centred_sums,
        offset=data_means - means,
        deviation=_prior_deviation(means, prior, active),
        num_active=num_components if active is None else jnp.sum(active),
    )
    eye = jnp.eye(num_features, dtype=dtype)
    update = _COVARIANCE_UPDATES[covariance_type]
    covariances = _with_floor(update(stats, terms, prior), reg_covar, eye)
    if covariance_type != "tied":
        covariances = _mark_unresolved(covariances, stats, safe_counts)
    if active is not None:
        # A padding component keeps weight 0 and a finite, harmless covariance.
        means = jnp.where(active[:, None], means, 0.0)
        covariances = jnp.where(active[:, None, None], covariances, eye)
    return GMMParams(weights, means, covariances)


def m_step(
    x, resp, covariance_type: str = "full", *, reg_covar=0.0, prior=None,
    row_weights=None, active=None,
) -> GMMParams:
    """Closed-form M-step from responsibilities (n, k) (the package table).

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


# ------------------------------------------------------------ one EM iteration


def em_step(state: LoopState, x, row_weights, num_rows, covariance_type, reg_covar,
            prior, reseed_covariance, active=None, products=None):
    """One E-step (objective at ``state.params``) and one M-step (plus reseeding).

    The ``step_fn`` of ``driver.run_em``: returns (new LoopState, objective).
    """
    stats = statistics(state.params, x, row_weights, covariance_type, products)
    return step_from_statistics(state, stats, num_rows, covariance_type, reg_covar,
                                prior, reseed_covariance, active)


def step_from_statistics(state: LoopState, stats: GMMStats, num_rows,
                         covariance_type, reg_covar, prior, reseed_covariance,
                         active=None):
    """The rest of an iteration once the statistics are summed (also out of core).

    Objective at ``state.params`` (1/N) [sum_i v_i log p(x_i | theta) +
    log p(theta)], M-step, then ``_reseed_empty``: (new LoopState, objective).
    """
    value = _objective_from_statistics(stats, state.params, num_rows, prior,
                                       covariance_type)
    params = m_step_from_statistics(
        stats, covariance_type, reg_covar=reg_covar, prior=prior, active=active
    )
    params, num_empty = _reseed_empty(params, stats, num_rows, reseed_covariance,
                                      covariance_type, active)
    return LoopState(params, state.num_reseeds + num_empty), value


def mean_log_likelihood(params, x, row_weights, num_rows, covariance_type,
                        products=None):
    """(1/N) sum_i v_i log p(x_i | theta); a padding row (v_i = 0) adds nothing."""
    if covariance_type == "full" and _in_blocks(products):
        total = full_block_statistics(
            params.means, params.covariances, jnp.log(params.weights), x,
            row_weights, params.means, with_second=False, blocks=products)[3]
        return total / num_rows
    log_norm = e_step(params, x, covariance_type, products)[1]
    return jnp.sum(jnp.where(row_weights > 0, row_weights * log_norm, 0.0)) / num_rows


def _in_blocks(products) -> bool:
    """Full-covariance statistics go through ``blocked``: no per-row products
    (None) or the rows already laid out in blocks (``blocked.BlockedRows``)."""
    return products is None or isinstance(products, BlockedRows)


def reseed_covariance_from(data_covariance, covariance_type: str, reg_covar):
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


# ------------------------------------------------------- E-step: log-densities


def _squared_norms(x):
    """||x_i||^2 as an (n, 1) column."""
    return jnp.sum(x * x, axis=1, keepdims=True)


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
    precisions = 1.0 / diagonal_variances(params, covariance_type)
    squares = precisions if covariance_type == "diag" else precisions[:, :1]
    coefficients = jnp.concatenate([-2.0 * params.means * precisions, squares], 1)
    squared = jnp.maximum(
        jnp.matmul(products, coefficients.T, precision=_HIGHEST)
        + jnp.sum(params.means**2 * precisions, axis=-1),
        0.0,
    )
    half_log_det = -0.5 * jnp.sum(jnp.log(precisions), axis=-1)
    return -0.5 * (num_features * math.log(2.0 * math.pi) + squared) - half_log_det


def _unpack_pairs(packed, num_features: int):
    """(k, d (d + 1) / 2) upper triangles -> symmetric (k, d, d) matrices."""
    upper, lower = np.triu_indices(num_features)
    full = jnp.zeros(packed.shape[:-1] + (num_features, num_features), packed.dtype)
    full = full.at[..., upper, lower].set(packed)
    return full.at[..., lower, upper].set(packed)


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
        second = second_moment(x, jnp.sum(weighted_resp, axis=1))
    else:
        squares = x * x if covariance_type == "diag" else _squared_norms(x)
        second = jnp.matmul(weighted_resp.T, squares, precision=_HIGHEST)
    return counts, sums, second


# ---------------------------------------------- M-step: the common part


class _MStepTerms(NamedTuple):
    """What every covariance update reads, computed once per M-step.

    With W_c = sum_i v_i gamma_ic (x_i - mu_c)(x_i - mu_c)^T the scatter about
    the new mean mu_c: W_c = second_c - sums_c (xbar_c - s_c)^T
    + N_c (xbar_c - mu_c)(xbar_c - mu_c)^T (the last term is zero for maximum
    likelihood, where mu_c = xbar_c).
    """

    counts: jax.Array  # N_c + 10 eps (0 for a padding component)
    safe_counts: jax.Array  # N_c, with 1 where it is 0 (no division by zero)
    centred_sums: jax.Array  # xbar_c - s_c, (k, d)
    offset: jax.Array  # xbar_c - mu_c, (k, d): zero for maximum likelihood
    deviation: jax.Array | None  # mu_c - m0, (k, d), 0 for padding; None for ML
    num_active: jax.Array | int  # k, or the number of non-padding components


def _weights_and_means(counts, data_means, prior, active):
    """New weights (k,) and means (k, d), common to every covariance type.

    ML:  weights_c = N_c / N,  mu_c = xbar_c.
    MAP: weights_c = (N_c + alpha_c - 1) / (N + sum alpha - k),
         mu_c = (N_c xbar_c + kappa0 m0) / (N_c + kappa0).
    A padding component (``active`` False) keeps weight 0.
    """
    if prior is None:
        return counts / jnp.sum(counts), data_means
    alpha = jnp.broadcast_to(prior.weight_concentration, counts.shape)
    pseudo_counts = counts + alpha.astype(data_means.dtype) - 1.0
    if active is not None:
        pseudo_counts = jnp.where(active, pseudo_counts, 0.0)
    kappa0 = prior.mean_precision
    means = (counts[:, None] * data_means + kappa0 * prior.mean_prior) / (
        counts + kappa0
    )[:, None]
    return pseudo_counts / jnp.sum(pseudo_counts), means


def _prior_deviation(means, prior, active):
    """mu_c - m0 (k, d), whose outer product D_c the MAP updates read; None for
    maximum likelihood; 0 for a padding component."""
    if prior is None:
        return None
    deviation = means - prior.mean_prior
    if active is not None:
        deviation = jnp.where(active[:, None], deviation, 0.0)
    return deviation


# ------------------------------------------- M-step: one update per type


def _full_covariances(stats: GMMStats, terms: _MStepTerms, prior):
    """"full": one matrix per component, (k, d, d).

    ML:  S_c = W_c / N_c.
    MAP: S_c = (Psi + W_c + kappa0 D_c) / (N_c + nu + d + 2),
         D_c = (mu_c - m0)(mu_c - m0)^T.
    """
    scatter = stats.second - _outer(stats.sums, terms.centred_sums)
    scatter = scatter + terms.counts[:, None, None] * _outer(terms.offset,
                                                             terms.offset)
    scatter = _symmetrised(scatter)
    if prior is None:
        return scatter / terms.safe_counts[:, None, None]
    num_features = scatter.shape[-1]
    spread = prior.mean_precision * _outer(terms.deviation, terms.deviation)
    return (prior.scale + scatter + spread) / (
        terms.counts + prior.dof + num_features + 2.0
    )[:, None, None]


def _tied_covariances(stats: GMMStats, terms: _MStepTerms, prior):
    """"tied": one matrix shared by every component, broadcast to (k, d, d).

    ML:  S = sum_c W_c / N.
    MAP: S = (Psi + sum_c [W_c + kappa0 D_c]) / (N + k + nu + d + 1).
    sum_c W_c comes from second = sum_i v_i x_i x_i^T (s = 0): one (d, d) matrix.
    """
    between = jnp.einsum("kd,ke->de", stats.sums, terms.centred_sums)
    scatter = stats.second - between
    scatter = scatter + jnp.einsum("k,kd,ke->de", terms.counts, terms.offset,
                                   terms.offset)
    scatter = _symmetrised(scatter)
    total = jnp.sum(terms.counts)
    num_components, num_features = terms.offset.shape
    if prior is None:
        shared = scatter / total
    else:
        outer = prior.mean_precision * jnp.matmul(
            terms.deviation.T, terms.deviation, precision=_HIGHEST
        )
        shared = (prior.scale + scatter + outer) / (
            total + terms.num_active + prior.dof + num_features + 1.0
        )
    return jnp.broadcast_to(shared, (num_components, num_features, num_features))


def _diag_covariances(stats: GMMStats, terms: _MStepTerms, prior):
    """"diag": the variances s_cj of diagonal matrices, (k, d).

    ML:  s_cj = W_cjj / N_c.
    MAP: s_cj = (Psi_jj + W_cjj + kappa0 D_cjj) / (N_c + nu + 3).
    """
    scatter = _diagonal_scatter(stats, terms, over_features=False)
    if prior is None:
        variances = scatter / terms.safe_counts[:, None]
    else:
        variances = (
            jnp.diagonal(prior.scale) + scatter
            + prior.mean_precision * terms.deviation**2
        ) / (terms.counts + prior.dof + 3.0)[:, None]
    return variances


def _spherical_covariances(stats: GMMStats, terms: _MStepTerms, prior):
    """"spherical": one variance s_c per component (of s_c I), (k, 1).

    ML:  s_c = tr W_c / (d N_c).
    MAP: s_c = (tr Psi + tr[W_c + kappa0 D_c]) / (d [N_c + 1 + nu] + 2).
    """
    total = _diagonal_scatter(stats, terms, over_features=True)[:, 0]
    num_features = terms.offset.shape[1]
    if prior is None:
        variance = total / (num_features * terms.safe_counts)
    else:
        variance = (
            jnp.trace(prior.scale) + total
            + prior.mean_precision * jnp.sum(terms.deviation**2, axis=1)
        ) / (num_features * (terms.counts + 1.0 + prior.dof) + 2.0)
    return variance[:, None]


_COVARIANCE_UPDATES = {
    "full": _full_covariances,
    "tied": _tied_covariances,
    "diag": _diag_covariances,
    "spherical": _spherical_covariances,
}


def _with_floor(update, reg_covar, eye):
    """S_c + reg_covar I as (k, d, d) matrices.

    ``update``: (k, d, d) matrices, or the (k, d) / (k, 1) variances of a
    "diag" / "spherical" type, expanded to diagonal matrices here.
    """
    if update.ndim == 2:
        return (update + reg_covar)[:, :, None] * eye
    return update + reg_covar * eye


def _outer(a, b):
    return a[..., :, None] * b[..., None, :]


def _symmetrised(scatter):
    """(W + W^T) / 2: rounding leaves the one-pass scatter slightly asymmetric."""
    return 0.5 * (scatter + jnp.swapaxes(scatter, -1, -2))


def _diagonal_scatter(stats: GMMStats, terms: _MStepTerms, *, over_features: bool):
    """diag(W_c), (k, d), or tr W_c, (k, 1) with ``over_features`` ("spherical").

    second_c - sums_c (xbar_c - s_c) + N_c (xbar_c - mu_c)^2 element-wise, the
    first difference clipped at 0 (rounding may leave it below).
    """
    between, offset_squares = stats.sums * terms.centred_sums, terms.offset**2
    if over_features:
        # second holds sum_j: the trace of the scatter is all that is needed.
        between = jnp.sum(between, axis=1, keepdims=True)
        offset_squares = jnp.sum(offset_squares, axis=1, keepdims=True)
    scatter = jnp.maximum(stats.second - between, 0.0)
    return scatter + terms.counts[:, None] * offset_squares


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
    a line through two rows, say). Entry (j, l) carries an error of a few eps
    times sqrt(m_j m_l), m_j = second_c,jj / N_c the mean square of feature j,
    so the test is made on R_c = M^-1/2 S_c M^-1/2, M = diag(m), whose entries
    all carry an error of a few eps: its smallest eigenvalue below
    ``_RESOLUTION`` eps means a direction with no correct digit. The scaling
    keeps the test independent of the units of each column (comparing the
    smallest eigenvalue of S_c with the largest mean square failed every fit of
    two columns measured 1e8 apart in scale). It covers the per-axis test
    (lambda_min(R_c) <= R_c,jj = S_c,jj / m_j).
    """
    tiny = _RESOLUTION * jnp.finfo(covariances.dtype).eps
    second = stats.second
    if second.ndim == 3:
        mean_squares = jnp.diagonal(second, axis1=-2, axis2=-1) / safe_counts[:, None]
        inv_root = jnp.where(mean_squares > 0,
                             1.0 / jnp.sqrt(jnp.where(mean_squares > 0,
                                                      mean_squares, 1.0)), 1.0)
        scaled = covariances * inv_root[:, :, None] * inv_root[:, None, :]
        unresolved = jnp.linalg.eigvalsh(scaled)[:, 0] < tiny
    else:
        if second.shape[1] == 1:
            # "spherical": sum_j over the features, so the mean square per
            # feature (a one-feature "diag" is divided by d = 1).
            second = second / covariances.shape[-1]
        variances = jnp.diagonal(covariances, axis1=-2, axis2=-1)
        unresolved = jnp.any(variances < tiny * second / safe_counts[:, None],
                             axis=-1)
    return jnp.where(unresolved[:, None, None], jnp.nan, covariances)


# ------------------------------------------------- reseeding and objective


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


def _objective_from_statistics(stats: GMMStats, params, num_rows, prior,
                               covariance_type):
    """Mean log-likelihood (plus log prior / n) from summed statistics."""
    value = stats.log_likelihood / num_rows
    if prior is not None:
        value = value + log_prior(params, prior, covariance_type) / num_rows
    return value
