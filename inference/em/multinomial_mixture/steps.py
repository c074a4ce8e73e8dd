"""The maths of multinomial-mixture EM: one E-step and one (MAP) M-step.

Notation (``models.multinomial_mixture``, article 4, §4.2 and §4.7): row i of the
counts holds x_ic items of category c (n_i = sum_c x_ic) with multiplicity v_i
(the folded rows of ``counts``; 0 for a padding row), in group g(i) for the
grouped model; N = sum_i v_i is the number of non-empty baskets.

E-step (log space; the multinomial coefficient cancels):

    log gamma_ik = log w_k + sum_c x_ic log p_kc - logsumexp_j [same with j]

M-step (a Lagrange multiplier per simplex constraint; with Dirichlet(a) on the
weights and Dirichlet(b) on each p_k this is the posterior mode, MAP-EM):

    w_k  = (N_k + a - 1) / sum_j (N_j + a - 1),        N_k  = sum_i v_i gamma_ik
    p_kc = (S_kc + b - 1) / sum_c' (S_kc' + b - 1),    S_kc = sum_i v_i gamma_ik x_ic

Grouped model: N_gk = sum_{i in g} v_i gamma_ik (a segment sum over group
codes) and w_gk = (N_gk + a - 1) / (N_g + K(a - 1)). A row of totals that sums
to 0 (a group without rows under maximum likelihood, a component with no
weighted counts) keeps its previous value: it has weight 0, so this changes no
likelihood.

Objective: (sum_i v_i log p(x_i | theta) + log p(theta)) / N plus the mean log
multinomial coefficient, a constant summed once on the host.

Zero probabilities: log 0 is written LOG_ZERO = -1e30, so that x_ic log p_kc
stays exact (0, not NaN) where x_ic = 0; a row impossible under every component
gets log p(x_i) = -inf.

Masked components (a K sweep padded to K_max, ``sweep``): ``component_mask``
gives the padded ones a log joint of exactly -inf, hence gamma_ik = 0 exactly;
the M-step keeps their weight at 0 and their probs unchanged, and the log prior
sums over the real components only.

Two layouts of the counts, one maths: ``DenseCounts`` (BLAS matmuls) and
``SparseCounts`` (a gather and ``segment_sum`` over the non-zeros); ``counts``
chooses between them. This module imports no sibling.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, xlogy

from latentmix.models.multinomial_mixture import MultinomialMixtureParams, log_prior

__all__ = [
    "LOG_ZERO",
    "Data",
    "DenseCounts",
    "SparseCounts",
    "category_totals",
    "e_step",
    "log_kernel",
    "m_step",
    "masked_log_prior",
    "objective",
    "responsibilities",
    "safe_log",
    "sufficient_statistics",
    "update",
]

LOG_ZERO = -1e30  # stand-in for log 0 in the inner loop (module docstring)


class DenseCounts(NamedTuple):
    """Counts as a dense (n, c) matrix."""

    matrix: jax.Array  # (n, c)


class SparseCounts(NamedTuple):
    """Counts as their non-zeros, sorted by row (padding entries hold 0)."""

    rows: jax.Array  # (nnz,) sorted row index of each non-zero
    cols: jax.Array  # (nnz,)
    values: jax.Array  # (nnz,)


class Data(NamedTuple):
    """Device arrays for the jitted core (padding rows have weight 0)."""

    counts: DenseCounts | SparseCounts
    row_weights: jax.Array  # (n,) multiplicities v_i
    group_codes: jax.Array  # (n,) int32 (zeros for the global model)
    num_rows: jax.Array  # N, scalar
    mean_log_coefficient: jax.Array  # (1/N) sum over baskets of the log coefficient


def e_step(params, data: Data, prior, grouped: bool, map_estimate: bool,
           component_mask=None):
    """Responsibilities gamma (n, k) and the objective at ``params``.

    gamma_ik = exp(log joint_ik - log p(x_i)); objective = (v . log p(x) +
    log p(theta)) / N + mean log coefficient.
    """
    resp, log_norm = responsibilities(
        params, data.counts, data.group_codes, data.row_weights.shape[0],
        grouped=grouped, component_mask=component_mask,
    )
    value = objective(
        params, data.row_weights @ log_norm, prior, data.num_rows,
        data.mean_log_coefficient, map_estimate, component_mask,
    )
    return resp, value


def m_step(params, resp, data: Data, prior, grouped: bool, num_groups: int,
           component_mask=None):
    """Closed-form (MAP) update of weights and probs from responsibilities.

    N_k and S_kc from ``sufficient_statistics``, then ``update``.
    """
    counts_k, totals = sufficient_statistics(
        data.counts, resp, data.row_weights, data.group_codes, grouped=grouped,
        num_groups=num_groups, num_categories=params.probs.shape[1],
    )
    return update(params, counts_k, totals, prior, component_mask)


def responsibilities(params, counts, group_codes, num_rows: int, *,
                     grouped: bool, component_mask=None):
    """Responsibilities gamma (n, k) and log p(x_i) without the coefficient (n,).

    log joint_ik = log w_k (w_{g(i)k} if grouped) + sum_c x_ic log p_kc;
    log p(x_i) = logsumexp_k log joint_ik. ``component_mask`` (k,) marks the real
    components of a padded sweep; the others get a log joint of exactly -inf,
    hence gamma_ik = exp(-inf) = 0.
    """
    log_weights = safe_log(params.weights)
    if grouped:
        log_weights = log_weights[group_codes]
    joint = log_kernel(counts, safe_log(params.probs), num_rows) + log_weights
    if component_mask is not None:
        joint = jnp.where(component_mask, joint, -jnp.inf)
    log_norm = jax.nn.logsumexp(joint, axis=-1)
    # Every component impossible (below the LOG_ZERO stand-in): log p = -inf.
    log_norm = jnp.where(log_norm < 0.5 * LOG_ZERO, -jnp.inf, log_norm)
    return jnp.exp(joint - log_norm[:, None]), log_norm


def objective(params, total_log_likelihood, prior, num_rows, mean_log_coefficient,
              map_estimate: bool, component_mask=None):
    """Mean per-basket log-likelihood with coefficient, plus log prior / N (MAP).

    (sum_i v_i log p(x_i | theta) [+ log p(theta)]) / N + (1/N) sum_i v_i
    log (n_i! / prod_c x_ic!); the total log-likelihood is given.
    """
    total = total_log_likelihood
    if map_estimate:
        if component_mask is None:
            total = total + log_prior(params, prior)
        else:
            total = total + masked_log_prior(params, prior, component_mask)
    return total / num_rows + mean_log_coefficient


def sufficient_statistics(counts, resp, row_weights, group_codes, *,
                          grouped: bool, num_groups: int, num_categories: int):
    """N_k = sum_i v_i gamma_ik (N_gk per group if grouped) and S = (v gamma).T @ X."""
    weighted = resp * row_weights[:, None]
    totals = category_totals(counts, weighted, num_categories)
    if grouped:
        counts_k = jax.ops.segment_sum(weighted, group_codes, num_groups)
    else:
        counts_k = weighted.sum(axis=0)
    return counts_k, totals


def update(params, counts_k, totals, prior, component_mask=None):
    """The (MAP) M-step from the summed statistics N_k and S_kc.

    p_kc = (S_kc + b - 1) / sum_c' (S_kc' + b - 1) and w_k = (N_k + a - 1) /
    sum_j (N_j + a - 1), per group for (g, k) statistics; a zero row sum keeps
    the previous value. Masked components (a padded sweep) keep weight exactly 0
    and their probs.
    """
    totals = totals + (prior.probs_concentration - 1.0)
    row_sums = totals.sum(axis=1, keepdims=True)
    probs = jnp.where(
        row_sums > 0, totals / jnp.where(row_sums > 0, row_sums, 1.0), params.probs
    )
    counts_k = counts_k + (prior.weight_concentration - 1.0)
    if component_mask is not None:
        probs = jnp.where(component_mask[:, None], probs, params.probs)
        counts_k = jnp.where(component_mask, counts_k, 0.0)
    norm = counts_k.sum(axis=-1, keepdims=True)
    weights = jnp.where(
        norm > 0, counts_k / jnp.where(norm > 0, norm, 1.0), params.weights
    )
    return MultinomialMixtureParams(weights, probs)


def log_kernel(counts, log_probs, num_rows: int):
    """sum_c x_ic log p_kc, shape (n, k): X @ log(P).T, or a segment sum over
    the non-zeros x_ic log p_kc by row."""
    if isinstance(counts, DenseCounts):
        return counts.matrix @ log_probs.T
    contributions = counts.values[:, None] * log_probs.T[counts.cols]
    return jax.ops.segment_sum(
        contributions, counts.rows, num_segments=num_rows, indices_are_sorted=True
    )


def category_totals(counts, weighted_resp, num_categories: int):
    """S = (v gamma).T @ X, shape (k, c): a matmul, or a segment sum over the
    non-zeros x_ic (v gamma)_ik by category."""
    if isinstance(counts, DenseCounts):
        return weighted_resp.T @ counts.matrix
    contributions = counts.values[:, None] * weighted_resp[counts.rows]
    return jax.ops.segment_sum(
        contributions, counts.cols, num_segments=num_categories
    ).T


def masked_log_prior(params, prior, component_mask):
    """``log_prior`` of the real components only (the K of a padded sweep).

    log Dirichlet(w_1..K | a) + sum_{k <= K} log Dirichlet(p_k | b): the masked
    weights are exactly 0, so their (a - 1) log w terms would be -inf.
    """
    concentration = jnp.broadcast_to(
        prior.weight_concentration, params.weights.shape
    )
    weight_terms = jnp.where(
        component_mask,
        xlogy(concentration - 1.0, params.weights) - gammaln(concentration),
        0.0,
    )
    log_density = jnp.sum(weight_terms) + gammaln(
        jnp.sum(jnp.where(component_mask, concentration, 0.0))
    )
    probs_concentration = jnp.broadcast_to(
        prior.probs_concentration, params.probs.shape
    )
    probs_terms = (
        jnp.sum(xlogy(probs_concentration - 1.0, params.probs), axis=-1)
        + gammaln(jnp.sum(probs_concentration, axis=-1))
        - jnp.sum(gammaln(probs_concentration), axis=-1)
    )
    return log_density + jnp.sum(jnp.where(component_mask, probs_terms, 0.0))


def safe_log(x):
    """log x where x > 0, LOG_ZERO where x = 0 (no -inf, no NaN gradient)."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), LOG_ZERO)
