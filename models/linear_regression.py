"""Bayesian linear regression: the NumPyro model and its conjugate closed forms.

Model (article 1 of the tutorial series; Bishop, PRML section 3.3):

    w ~ N(0, alpha^-1 I_p)                      alpha = prior_precision
    y | X, w ~ N(X w, beta^-1 I_n)              beta  = noise_precision

With alpha and beta fixed the posterior of w is Gaussian (eq. 3.53-3.54 of PRML):

    A = alpha I + beta X^T X,   cov = A^-1,   mean = beta A^-1 X^T y

and the evidence is Gaussian too, y ~ N(0, beta^-1 I_n + alpha^-1 X X^T) (eq. 3.86).
As alpha -> 0 the posterior mean tends to the maximum-likelihood (ordinary least
squares) estimate w_hat = (X^T X)^-1 X^T y, which ``least_squares`` computes from a
QR factorisation of X (never forming X^T X, whose condition number is that of X
squared).
Every matrix solve below goes through a Cholesky factor of A; no inverse of an
ill-conditioned matrix is formed explicitly.

Axis names: n rows, p predictors (columns of X, bias included).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import cho_solve

from latentmix.data.validation import (
    check_matrix,
    check_positive,
    check_same_rows,
    check_vector,
    is_traced,
    warn,
)

__all__ = [
    "LeastSquaresFit",
    "least_squares",
    "WeightsMap",
    "standardising_map",
    "whitening_map",
    "GaussianPosterior",
    "HYPERPRIOR_CONCENTRATION",
    "HYPERPRIOR_RATE",
    "polynomial_features",
    "gaussian_features",
    "model",
    "check_regression_data",
    "posterior",
    "posterior_and_log_evidence",
    "update_posterior",
    "predictive",
    "log_evidence",
]

# Gamma(shape, rate) hyperprior of a precision left as None in `model`: the same
# vague choice as scikit-learn's BayesianRidge (alpha_1 = alpha_2 = lambda_1 =
# lambda_2 = 1e-6). Its density in log-precision is almost flat, so NUTS on the
# hierarchical model behaves like type-II maximum likelihood plus uncertainty.
HYPERPRIOR_CONCENTRATION = 1e-6
HYPERPRIOR_RATE = 1e-6


class GaussianPosterior(NamedTuple):
    """Gaussian posterior N(mean, cov) of the weights w."""

    mean: jax.Array  # (p,)
    cov: jax.Array  # (p, p)


class LeastSquaresFit(NamedTuple):
    """Ordinary least squares: the maximum-likelihood weights and their errors.

    weights: (p,) w_hat = argmin_w ||y - X w||^2 = (X^T X)^-1 X^T y.
    standard_errors: (p,) sqrt of the diagonal of s^2 (X^T X)^-1.
    noise_variance: s^2 = ||y - X w_hat||^2 / (n - p), unbiased (the maximum-
        likelihood variance divides by n instead).
    residual_sum_of_squares: ||y - X w_hat||^2.
    """

    weights: jax.Array
    standard_errors: jax.Array
    noise_variance: jax.Array
    residual_sum_of_squares: jax.Array


@jax.jit
def _least_squares(X, y):
    """(LeastSquaresFit, |diag R|) from one QR factorisation."""
    q, r = jnp.linalg.qr(X, mode="reduced")
    weights = jax.scipy.linalg.solve_triangular(r, q.T @ y, lower=False)
    residual = y - X @ weights
    rss = residual @ residual
    noise_variance = rss / (X.shape[0] - X.shape[1])
    # (X^T X)^-1 = R^-1 R^-T: its diagonal is the row sums of squares of R^-1.
    r_inv = jax.scipy.linalg.solve_triangular(
        r, jnp.eye(X.shape[1], dtype=X.dtype), lower=False)
    standard_errors = jnp.sqrt(noise_variance * jnp.sum(r_inv**2, axis=1))
    fit = LeastSquaresFit(weights, standard_errors, noise_variance, rss)
    return fit, jnp.abs(jnp.diag(r))


def least_squares(X, y) -> LeastSquaresFit:
    """Maximum likelihood (OLS) of y = X w + noise through a QR factorisation.

    Derivation (article 1): maximising prod_i N(y_i | x_i^T w, sigma^2) is
    minimising ||y - X w||^2, whose normal equations X^T X w = X^T y give
    w_hat = (X^T X)^-1 X^T y. With X = Q R (Q orthonormal columns, R upper
    triangular) they reduce to R w_hat = Q^T y, solved by back substitution: the
    error grows with cond(X), not cond(X)^2 as through X^T X. Standard errors:
    Cov(w_hat) = sigma^2 (X^T X)^-1 = sigma^2 R^-1 R^-T, with sigma^2 estimated by
    s^2 = RSS / (n - p). This is the posterior mean of ``posterior`` in the limit
    prior_precision -> 0.

    Raises ValueError when X has no more rows than columns (no residual degrees
    of freedom) or is rank deficient (R has a zero on its diagonal).
    """
    X, y = check_regression_data(X, y)
    if y is None:
        raise ValueError("least_squares needs a target y")
    num_rows, num_predictors = X.shape
    if num_rows <= num_predictors:
        raise ValueError(
            f"least squares needs more rows than predictors to estimate the noise, "
            f"got {num_rows} rows and {num_predictors} predictors; use the "
            f"Bayesian posterior (a prior keeps it proper)"
        )
    fit, diag_r = _least_squares(X, y)
    diag_r = np.asarray(diag_r)
    # Numerical rank as LAPACK's gelsd decides it: |r_jj| below max|r| n eps is 0.
    cutoff = diag_r.max() * num_rows * np.finfo(diag_r.dtype).eps
    if not (np.all(diag_r > cutoff) and bool(jnp.all(jnp.isfinite(fit.weights)))):
        raise ValueError(
            "X is rank deficient (a column is a linear combination of others): the "
            "least-squares weights are not unique; drop the collinear columns"
        )
    return fit


def polynomial_features(x, degree: int) -> jax.Array:
    """Design matrix [1, x, x^2, ..., x^degree] of a 1-D x, shape (n, degree + 1)."""
    if int(degree) != degree or degree < 0:
        raise ValueError(f"degree must be an integer >= 0, got {degree!r}")
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D with shape (n,), got shape {x.shape}")
    return x[:, None] ** jnp.arange(int(degree) + 1)


def gaussian_features(x, centers, width) -> jax.Array:
    """Design matrix [1, exp(-(x - c_j)^2 / (2 width^2))_j], shape (n, k + 1).

    k = len(centers) Gaussian bumps of a common ``width``, after a bias column.
    """
    x = jnp.asarray(x)
    centers = jnp.asarray(centers)
    if x.ndim != 1 or centers.ndim != 1:
        raise ValueError(
            f"x and centers must be 1-D, got shapes {x.shape} and {centers.shape}"
        )
    if not np.all(np.asarray(width) > 0):
        raise ValueError(f"width must be > 0, got {width!r}")
    bumps = jnp.exp(-0.5 * ((x[:, None] - centers[None, :]) / width) ** 2)
    return jnp.concatenate([jnp.ones_like(x)[:, None], bumps], axis=1)


class WeightsMap(NamedTuple):
    """Standardised coordinates of the weights: w_std = matrix @ w + offset.

    ``standardising_map`` builds the map that standardising the columns of X
    and the target y induces on w (see there).
    """

    matrix: jax.Array  # (p, p), invertible
    offset: jax.Array  # (p,)


def standardising_map(X, y) -> WeightsMap:
    """The map w -> w_std under which X and y are standardised.

    With x'_j = (x_j - m_j) / s_j for every non-constant column and
    y' = (y - m_y) / s_y, the fitted values match, X' w_std = (X w - m_y) / s_y,
    for w_std_j = s_j w_j / s_y and, on a constant column of value v (the
    intercept), w_std_0 = (v w_0 + sum_j m_j w_j - m_y) / s_y. Without a
    constant column nothing can absorb a shift: columns and target are scaled
    by their root mean square, not centred. Every coordinate of w_std is then
    O(1) in posterior sds, whatever the units of the columns.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    num_predictors = X.shape[1]
    constant = np.all(X == X[:1], axis=0) & (X[0] != 0)
    intercept = int(np.flatnonzero(constant)[0]) if constant.any() else None
    if intercept is None:
        centres, y_centre = np.zeros(num_predictors), 0.0
        scales = np.sqrt(np.mean(X**2, axis=0))
        y_scale = float(np.sqrt(np.mean(y**2)))
    else:
        centres, y_centre = X.mean(axis=0), float(y.mean())
        scales, y_scale = X.std(axis=0), float(y.std())
    y_scale = y_scale if y_scale > 0 else 1.0
    scales = np.where(scales > 0, scales, np.abs(X[0]))
    scales = np.where(scales > 0, scales, 1.0)
    matrix = np.diag(scales) / y_scale
    offset = np.zeros(num_predictors)
    if intercept is not None:
        row = centres / y_scale
        row[intercept] = X[0, intercept] / y_scale
        row[constant & (np.arange(num_predictors) != intercept)] = 0.0
        matrix[intercept] = row
        offset[intercept] = -y_centre / y_scale
    return WeightsMap(matrix, offset)


def whitening_map(X, prior_precision, noise_precision) -> WeightsMap:
    """The map w -> L^T w with L L^T = alpha I + beta X^T X, the posterior precision.

    With the precisions fixed the posterior of L^T w is N(L^T m, I): every
    direction has unit sd, however correlated the columns are (an optimiser's
    preconditioner; ``inference.posterior.linear_regression`` runs VI there).
    """
    X = np.asarray(X, dtype=np.float64)
    precision = noise_precision * X.T @ X + prior_precision * np.eye(X.shape[1])
    chol = np.linalg.cholesky(precision)
    return WeightsMap(chol.T, np.zeros(X.shape[1]))


def model(X, y=None, *, prior_precision=None, noise_precision=None,
          weights_map: WeightsMap | None = None):
    """NumPyro model of Bayesian linear regression.

    w ~ N(0, prior_precision^-1 I), y ~ N(X w, noise_precision^-1). A precision left
    as None is a latent site with a Gamma(HYPERPRIOR_CONCENTRATION, HYPERPRIOR_RATE)
    hyperprior; a given precision is a fixed constant.

    ``weights_map`` (``standardising_map(X, y)``) samples the weights in
    standardised coordinates, w_std = A w + c ~ N(c, prior_precision^-1 A A^T),
    and records w = A^-1 (w_std - c) as a deterministic site: the same model
    (an affine reparametrisation has a constant Jacobian), whose posterior
    NUTS, MAP and VI then explore in O(1) coordinates whatever the units.

    Sites: "prior_precision" and "noise_precision" (when sampled), "w" (p,)
    (deterministic "w" after a sampled "w_std" with ``weights_map``), "y" (n,).
    """
    X = jnp.asarray(X)
    num_predictors = X.shape[1]
    hyperprior = dist.Gamma(HYPERPRIOR_CONCENTRATION, HYPERPRIOR_RATE)
    if prior_precision is None:
        prior_precision = numpyro.sample("prior_precision", hyperprior)
    if noise_precision is None:
        noise_precision = numpyro.sample("noise_precision", hyperprior)
    prior_scale = 1.0 / jnp.sqrt(prior_precision)
    if weights_map is None:
        w = numpyro.sample(
            "w", dist.Normal(jnp.zeros(num_predictors), prior_scale).to_event(1)
        )
    else:
        matrix = jnp.asarray(weights_map.matrix, X.dtype)
        offset = jnp.asarray(weights_map.offset, X.dtype)
        scale_tril = jnp.linalg.cholesky(matrix @ matrix.T) * prior_scale
        w_std = numpyro.sample(
            "w_std", dist.MultivariateNormal(offset, scale_tril=scale_tril))
        w = numpyro.deterministic("w", jnp.linalg.solve(matrix, w_std - offset))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 1.0 / jnp.sqrt(noise_precision)), obs=y)


def check_regression_data(X, y=None):
    """Validate a design matrix (and target) at the Python boundary.

    Errors: X not 2-D, non-numeric dtype, NaN/inf, y of another length.
    Warnings (the fit still works, the prior keeps the posterior proper): more
    predictors than rows, and constant columns that are collinear with another
    constant column or identically zero.
    """
    if is_traced(X) or is_traced(y):
        return jnp.asarray(X), None if y is None else jnp.asarray(y)
    X = check_matrix("X", X)
    if y is not None:
        y = check_vector("y", y)
        check_same_rows("X", X, "y", y)
    num_rows, num_predictors = X.shape
    if num_predictors > num_rows:
        warn(
            f"X has more predictors ({num_predictors}) than rows ({num_rows}): the "
            f"posterior equals the prior along {num_predictors - num_rows} directions"
        )
    # NumPy, not jnp: X may be a concrete jax.Array closed over by a function being
    # jit-traced, where any jnp operation would return a tracer.
    values = np.asarray(X)
    constant = np.flatnonzero(np.ptp(values, axis=0) == 0)
    zero = [int(j) for j in constant if not values[:, j].any()]
    if len(constant) > 1 or zero:
        warn(
            f"X has constant column(s) {constant.tolist()} (all-zero: {zero}); they "
            f"are collinear or carry no information, so the posterior equals the "
            f"prior along those directions. Drop duplicates of the bias column."
        )
    duplicates = _duplicated_columns(values, constant)
    if duplicates:
        warn(
            f"X has identical columns {duplicates}: the data cannot tell their "
            f"weights apart, so the posterior splits the effect between them "
            f"(their sum is estimated, not each weight); drop all but one"
        )
    return jnp.asarray(X), None if y is None else jnp.asarray(y)


def _duplicated_columns(values, constant) -> list:
    """Groups of identical non-constant columns (0-based indices)."""
    if values.shape[1] > 2000:
        return []
    varying = [j for j in range(values.shape[1]) if j not in set(constant.tolist())]
    seen: dict = {}
    for j in varying:
        seen.setdefault(values[:, j].tobytes(), []).append(j)
    return [group for group in seen.values() if len(group) > 1]


def _check_precisions(prior_precision, noise_precision):
    check_positive("prior_precision", prior_precision)
    check_positive("noise_precision", noise_precision)


def posterior_and_log_evidence(X, y, prior_precision, noise_precision):
    """Posterior of w and log evidence from one Cholesky factor of A (no checks).

    Posterior (PRML eq. 3.53-3.54): cov = A^-1, mean = beta A^-1 X^T y with
    A = alpha I + beta X^T X. Log evidence (PRML eq. 3.86):
    ln p(y) = p/2 ln alpha + n/2 ln beta - E(m) - 1/2 ln|A| - n/2 ln 2 pi,
    E(m) = beta/2 ||y - X m||^2 + alpha/2 m^T m.
    """
    num_rows, num_predictors = X.shape
    eye = jnp.eye(num_predictors, dtype=X.dtype)
    precision_matrix = noise_precision * (X.T @ X) + prior_precision * eye
    chol = jnp.linalg.cholesky(precision_matrix)
    mean = noise_precision * cho_solve((chol, True), X.T @ y)
    cov = cho_solve((chol, True), eye)
    residual = y - X @ mean
    energy = 0.5 * noise_precision * residual @ residual
    energy = energy + 0.5 * prior_precision * mean @ mean
    log_det_precision = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    log_ev = (
        0.5 * num_predictors * jnp.log(prior_precision)
        + 0.5 * num_rows * jnp.log(noise_precision)
        - energy
        - 0.5 * log_det_precision
        - 0.5 * num_rows * jnp.log(2.0 * jnp.pi)
    )
    return GaussianPosterior(mean, cov), log_ev


def posterior(X, y, prior_precision, noise_precision) -> GaussianPosterior:
    """Conjugate posterior N(mean, cov) of w (PRML eq. 3.53-3.54)."""
    X, y = check_regression_data(X, y)
    _check_precisions(prior_precision, noise_precision)
    return posterior_and_log_evidence(X, y, prior_precision, noise_precision)[0]


def update_posterior(
    prior: GaussianPosterior, X, y, noise_precision
) -> GaussianPosterior:
    """One sequential Bayesian update: the posterior after a batch becomes the prior.

    Precision form (PRML eq. 3.50-3.51 with a general Gaussian prior N(m0, S0)):
    S_N^-1 = S0^-1 + beta X^T X, m_N = S_N (S0^-1 m0 + beta X^T y).
    """
    X, y = check_regression_data(X, y)
    check_positive("noise_precision", noise_precision)
    prior_chol = jnp.linalg.cholesky(prior.cov)
    eye = jnp.eye(X.shape[1], dtype=prior_chol.dtype)
    prior_precision_matrix = cho_solve((prior_chol, True), eye)
    precision_matrix = prior_precision_matrix + noise_precision * X.T @ X
    chol = jnp.linalg.cholesky(precision_matrix)
    rhs = cho_solve((prior_chol, True), prior.mean) + noise_precision * X.T @ y
    return GaussianPosterior(cho_solve((chol, True), rhs), cho_solve((chol, True), eye))


def predictive(post: GaussianPosterior, X_new, noise_precision):
    """Posterior predictive N(x^T mean, 1/beta + x^T cov x) per row (PRML 3.58-3.59).

    Returns (mean, variance), each of shape (m,).
    """
    # Only shape, dtype and finiteness: the data warnings of check_regression_data
    # concern fitting (a single new row would read as all-constant columns).
    X_new = jnp.asarray(check_matrix("X_new", X_new))
    check_positive("noise_precision", noise_precision)
    if X_new.shape[1] != post.mean.shape[0]:
        raise ValueError(
            f"X_new has {X_new.shape[1]} columns but the posterior has "
            f"{post.mean.shape[0]} weights; build X_new with the same basis"
        )
    mean = X_new @ post.mean
    variance = 1.0 / noise_precision + jnp.einsum("ij,jk,ik->i", X_new, post.cov, X_new)
    return mean, variance


def log_evidence(X, y, prior_precision, noise_precision) -> jax.Array:
    """log p(y | X, alpha, beta), the log marginal likelihood (PRML eq. 3.86)."""
    X, y = check_regression_data(X, y)
    _check_precisions(prior_precision, noise_precision)
    return posterior_and_log_evidence(X, y, prior_precision, noise_precision)[1]
