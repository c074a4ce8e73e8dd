"""EM for the two precisions of Bayesian linear regression (w is the latent variable).

Evidence maximisation (type-II maximum likelihood, PRML section 9.3.4) by EM:

E-step: q(w) = p(w | y, alpha, beta) = N(m, S), the conjugate posterior
        (``models.linear_regression.posterior_and_log_evidence``).
M-step: maximise E_q[ln p(y, w | alpha, beta)] in closed form (PRML eq. 9.63 and
        its noise analogue):

    alpha_new = p / (m^T m + tr S)
    beta_new  = n / (||y - X m||^2 + tr(X^T X S))

The objective is the log evidence ln p(y | alpha, beta), which EM never decreases.
Its stationary points are those of scikit-learn's BayesianRidge (MacKay's
fixed-point updates), so both land on the same precisions.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.validation import (
    check_int,
    check_nonnegative,
    check_positive,
    warn,
)
from latentmix.inference.em.driver import ConvergenceWarning, EMResult, run_em
from latentmix.inference.precision import follows_input_precision
from latentmix.models.linear_regression import (
    check_regression_data,
    posterior_and_log_evidence,
)

__all__ = ["LinearRegressionParams", "fit_linear_regression"]


class LinearRegressionParams(NamedTuple):
    """Precisions and the posterior of w at those precisions."""

    prior_precision: jax.Array  # alpha, scalar
    noise_precision: jax.Array  # beta, scalar
    mean: jax.Array  # (p,) posterior mean of w
    cov: jax.Array  # (p, p) posterior covariance of w


def _em_step(params: LinearRegressionParams, X, y):
    """One E-step (posterior, log evidence) and one M-step (both precisions)."""
    post, log_ev = posterior_and_log_evidence(
        X, y, params.prior_precision, params.noise_precision
    )
    num_rows, num_predictors = X.shape
    residual = y - X @ post.mean
    prior_precision = num_predictors / (post.mean @ post.mean + jnp.trace(post.cov))
    noise_precision = num_rows / (
        residual @ residual + jnp.sum((X.T @ X) * post.cov)
    )
    new = LinearRegressionParams(prior_precision, noise_precision, post.mean, post.cov)
    return new, log_ev


@partial(jax.jit, static_argnames="max_iters")
def _fit(X, y, prior_precision, noise_precision, tol, max_iters):
    eye = jnp.eye(X.shape[1], dtype=X.dtype)
    start = LinearRegressionParams(
        prior_precision, noise_precision, jnp.zeros(X.shape[1], X.dtype), eye
    )
    params, num_iters, converged, trace = run_em(
        lambda p: _em_step(p, X, y), start, max_iters=max_iters, tol=tol
    )
    # Report the posterior at the returned precisions, not the one of the E-step.
    post, log_ev = posterior_and_log_evidence(
        X, y, params.prior_precision, params.noise_precision
    )
    params = params._replace(mean=post.mean, cov=post.cov)
    return EMResult(params, log_ev, num_iters, converged, trace)


@follows_input_precision
def fit_linear_regression(
    X,
    y,
    *,
    max_iters: int = 10_000,
    tol: float = 1e-10,
    init_prior_precision: float = 1.0,
    init_noise_precision: float | None = None,
) -> EMResult:
    """Fit alpha (prior precision) and beta (noise precision) by EM on the evidence.

    Args:
      X: (n, p) design matrix (add the bias column yourself, e.g. with
        ``polynomial_features``).
      y: (n,) targets.
      max_iters: bound on EM iterations (sizes ``trace``).
      tol: stop when the log evidence changes by less than ``tol`` (absolute, in
        nats) between two iterations. EM converges linearly here, so the default is
        tight and ``max_iters`` large.
      init_prior_precision: starting alpha.
      init_noise_precision: starting beta; default 1 / var(y), as scikit-learn.

    Returns:
      EMResult with ``params`` a LinearRegressionParams (precisions and the
      posterior of w at them), ``log_likelihood`` the log evidence there, and
      ``trace`` the log evidence per iteration (never decreasing).
    """
    X, y = check_regression_data(X, y)
    if X.shape[0] < 2:
        raise ValueError(
            f"need at least 2 rows to estimate the noise precision, got "
            f"{X.shape[0]}; add rows, or fix both precisions and use "
            f"models.linear_regression.posterior")
    if float(jnp.ptp(y)) == 0.0:
        raise ValueError(
            f"y is constant (every value {float(y[0]):g}): there is nothing to "
            f"explain, and the noise precision that maximises the evidence is "
            f"infinite; check the target column")
    _check_magnitudes(X, y)
    max_iters = check_int("max_iters", max_iters, minimum=0)
    check_nonnegative("tol", tol)
    check_positive("init_prior_precision", init_prior_precision)
    if init_noise_precision is None:
        variance = float(jnp.var(y))
        init_noise_precision = 1.0 / variance if variance > 0 else 1.0
    check_positive("init_noise_precision", init_noise_precision)
    dtype = X.dtype
    result = _fit(
        X,
        y,
        jnp.asarray(init_prior_precision, dtype),
        jnp.asarray(init_noise_precision, dtype),
        jnp.asarray(tol, dtype),
        max_iters,
    )
    num_iters = int(result.num_iters)
    if not bool(jnp.isfinite(result.log_likelihood)):
        raise FloatingPointError(
            f"EM for the precisions produced a non-finite log evidence after "
            f"{num_iters} iteration(s); rescale the columns of X and y (e.g. to "
            f"unit standard deviation) or start from other precisions"
        )
    if max_iters > 0 and not bool(result.converged):
        warn(
            f"EM for the precisions did not converge in {num_iters} iterations "
            f"(max_iters={max_iters}, tol={tol}); increase max_iters or tol",
            ConvergenceWarning,
        )
    return result


def _check_magnitudes(X, y) -> None:
    """Refuse data whose squares overflow float64 (X^T X, ||y||^2 are needed)."""
    dtype = np.asarray(X).dtype
    limit = np.sqrt(np.finfo(dtype).max / max(X.shape[0], 1)) / 10
    for name, values in (("X", X), ("y", y)):
        largest = float(np.max(np.abs(np.asarray(values)), initial=0.0))
        if largest > limit:
            raise ValueError(
                f"{name} has values up to {largest:.3g}: their squares summed over "
                f"{X.shape[0]} rows overflow {dtype}; rescale the columns (e.g. "
                f"divide each by its standard deviation) before fitting"
            )
