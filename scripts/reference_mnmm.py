"""The reference tutorial's EM for a mixture of multinomials, re-implemented.

Where it comes from: ``MultinomialExpectationMaximizer`` in
``multinomial_expectation_maximizer.py`` of the tutorial's companion repository
(biarne-a/MNMM), as described in ARTICLES.md §4.2. It is kept here, in plain
NumPy/scipy and deliberately unoptimised, as the baseline of
``scripts/benchmark.py multinomial``; the project's own implementation is
``inference.em.fit_multinomial_mixture``. This is a re-implementation of the
described algorithm, not a copy of the reference's code.

Faithful in everything that costs time or changes the numbers:

* E-step in probability space: for each component k, ``scipy.stats.multinomial(
  n_i, beta_k).pmf(X)`` over all rows (the coefficient included), times alpha_k;
  exact zeros (underflow, which large baskets hit) are replaced by machine epsilon
  before normalising, so an underflowing row gets uniform responsibilities.
* M-step: alpha = gamma.sum(0) / gamma.sum(), beta = gamma.T @ X row-normalised.
* Stopping: the variational lower bound
  VLB = sum_ik gamma_ik [log alpha_k + log Mult(x_i | beta_k)] - sum_ik gamma_ik
  log gamma_ik, evaluated with the E-step's gamma and the just-updated parameters
  (one ``logpmf`` call per component), and |(VLB_prev - VLB) / VLB_prev| < rtol
  after the first iteration, or ``max_iter`` iterations.
* Initialisation: alpha from random integers 1..19, normalised; beta_k ~
  Dirichlet(2C, ..., 2C). Restarts keep the highest final VLB.

Differences, none of which changes the cost of an iteration: draws come from a
``numpy.random.Generator`` rather than the global NumPy state, the per-iteration
``print`` is left out, and the iteration count is returned.
"""

from typing import NamedTuple

import numpy as np
from scipy.stats import multinomial

__all__ = [
    "ReferenceFit",
    "reference_e_step",
    "reference_m_step",
    "reference_vlb",
    "reference_init",
    "reference_iteration",
    "reference_train_once",
    "reference_fit",
    "reference_log_likelihood",
]

EPS = np.finfo(float).eps


class ReferenceFit(NamedTuple):
    """Best restart of the reference EM: weights alpha (K,), probs beta (K, C),
    responsibilities gamma (N, K), final VLB (total, nats), iterations run."""

    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    vlb: float
    num_iters: int


def _component_pmf(X: np.ndarray, beta_k: np.ndarray, log: bool = False):
    """Mult(x_i | n_i, beta_k) for every row, via scipy (n_i = row sums)."""
    distribution = multinomial(X.sum(axis=-1), beta_k)
    return distribution.logpmf(X) if log else distribution.pmf(X)


def reference_e_step(X: np.ndarray, alpha: np.ndarray, beta: np.ndarray):
    """gamma_ik = alpha_k Mult(x_i | beta_k) / sum_j alpha_j Mult(x_i | beta_j),
    in probability space with the reference's epsilon patch for exact zeros."""
    weighted = np.zeros((X.shape[0], beta.shape[0]))
    for k in range(beta.shape[0]):
        weighted[:, k] = alpha[k] * _component_pmf(X, beta[k])
    weighted[weighted == 0] = EPS
    return weighted / weighted.sum(axis=1, keepdims=True)


def reference_m_step(X: np.ndarray, gamma: np.ndarray):
    """alpha_k = mean responsibility; beta = gamma.T @ X, rows normalised."""
    alpha = gamma.sum(axis=0) / gamma.sum()
    weighted_counts = gamma.T @ X
    beta = weighted_counts / weighted_counts.sum(axis=-1, keepdims=True)
    return alpha, beta


def reference_vlb(X, alpha, beta, gamma) -> float:
    """sum_ik gamma_ik [log alpha_k + log Mult(x_i | beta_k) - log gamma_ik]."""
    total = 0.0
    for k in range(beta.shape[0]):
        weights = gamma[:, k]
        total += np.sum(
            weights * (np.log(alpha[k]) + _component_pmf(X, beta[k], log=True))
        )
        total -= np.sum(weights * np.log(weights))
    return float(total)


def reference_init(rng: np.random.Generator, num_components: int, num_categories: int):
    """alpha from integers 1..19 normalised; beta_k ~ Dirichlet(2C 1_C)."""
    weights = rng.integers(1, 20, num_components)
    alpha = weights / weights.sum()
    beta = rng.dirichlet(np.full(num_categories, 2.0 * num_categories), num_components)
    return alpha, beta


def reference_iteration(X, alpha, beta):
    """One iteration: E-step, M-step, then the VLB at (gamma_t, theta_{t+1}).

    Returns (alpha, beta, gamma, vlb).
    """
    gamma = reference_e_step(X, alpha, beta)
    alpha, beta = reference_m_step(X, gamma)
    return alpha, beta, gamma, reference_vlb(X, alpha, beta, gamma)


def reference_train_once(X, alpha, beta, *, rtol: float = 1e-3, max_iter: int = 100):
    """One restart from (alpha, beta): iterations until the VLB's relative change
    falls below rtol (checked from the second iteration on) or max_iter."""
    vlb = np.inf
    gamma = None
    num_iters = 0
    for iteration in range(max_iter):
        previous = vlb
        alpha, beta, gamma, vlb = reference_iteration(X, alpha, beta)
        num_iters = iteration + 1
        if iteration > 0 and np.abs((previous - vlb) / previous) < rtol:
            break
    return ReferenceFit(alpha, beta, gamma, vlb, num_iters)


def reference_fit(
    X,
    num_components: int,
    *,
    restarts: int = 10,
    rtol: float = 1e-3,
    max_iter: int = 100,
    rng: np.random.Generator,
) -> ReferenceFit:
    """Random restarts of ``reference_train_once``; the highest final VLB wins."""
    X = np.asarray(X, dtype=np.float64)
    best = None
    for _ in range(restarts):
        alpha, beta = reference_init(rng, num_components, X.shape[1])
        fit = reference_train_once(X, alpha, beta, rtol=rtol, max_iter=max_iter)
        if best is None or fit.vlb > best.vlb:
            best = fit
    return best


def reference_log_likelihood(X, alpha, beta) -> float:
    """sum_i log sum_k alpha_k Mult(x_i | beta_k), probability space + epsilon."""
    X = np.asarray(X, dtype=np.float64)
    mixture = np.zeros(X.shape[0])
    for k in range(beta.shape[0]):
        mixture += alpha[k] * _component_pmf(X, beta[k])
    mixture[mixture == 0] = EPS
    return float(np.log(mixture).sum())
