"""Bayesian linear regression: closed forms and EM against independent references.

References used here and never our own outputs: NumPy/SciPy linear algebra (ridge,
inverse), ``scipy.stats.multivariate_normal`` (evidence), Monte Carlo with NumPy's
generator (evidence, predictive), and scikit-learn's ``BayesianRidge`` (precisions
by evidence maximisation). All in float64 (tests/conftest.py enables x64) except the
explicit float32 smoke test.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from scipy.special import logsumexp
from sklearn.linear_model import BayesianRidge

from latentmix.data.datasets import load_diabetes
from latentmix.data.validation import DataWarning
from latentmix.inference.em import ConvergenceWarning, fit_linear_regression
from latentmix.models.linear_regression import (
    GaussianPosterior,
    gaussian_features,
    log_evidence,
    polynomial_features,
    posterior,
    predictive,
    update_posterior,
)

EPS = np.finfo(np.float64).eps


def simulate(seed, num_rows, num_predictors, *, prior_precision=0.5,
             noise_precision=4.0, correlation=0.0):
    """Draw (X, y, w) from the model itself with NumPy (not through our code)."""
    rng = np.random.default_rng(seed)
    cov = np.full((num_predictors, num_predictors), correlation)
    np.fill_diagonal(cov, 1.0)
    X = rng.multivariate_normal(np.zeros(num_predictors), cov, size=num_rows)
    w = rng.normal(0.0, prior_precision**-0.5, size=num_predictors)
    y = X @ w + rng.normal(0.0, noise_precision**-0.5, size=num_rows)
    return X, y, w


def ridge(X, y, penalty):
    """argmin ||y - Xw||^2 + penalty ||w||^2 as least squares on [X; sqrt(penalty) I].

    An SVD-based solver on the augmented system: no normal equations, no Cholesky,
    so it shares no code path with models.linear_regression.
    """
    num_predictors = X.shape[1]
    design = np.vstack([X, np.sqrt(penalty) * np.eye(num_predictors)])
    target = np.concatenate([y, np.zeros(num_predictors)])
    return scipy.linalg.lstsq(design, target)[0]


def solve_tolerance(matrix):
    """Forward-error bound of a backward-stable solve: kappa(A) * eps, times 100.

    Both our Cholesky solve and the reference are backward stable, so each has a
    relative error of at most about kappa(A) * eps; 100 covers the dimension-dependent
    constants of both.
    """
    return 100 * np.linalg.cond(matrix) * EPS


# --- 1. posterior mean == ridge ---------------------------------------------------


@pytest.mark.parametrize("dataset", ["synthetic", "diabetes"])
def test_posterior_mean_is_ridge_and_cov_is_inverse_precision(dataset):
    if dataset == "synthetic":
        X, y, _ = simulate(0, 50, 4)
        prior_precision, noise_precision = 2.0, 4.0
    else:
        X, y, _ = load_diabetes()
        # The evidence optimum of this data set (about 1.25e-5 and 3.4e-4).
        prior_precision, noise_precision = 1.25e-5, 3.4e-4
    post = posterior(X, y, prior_precision, noise_precision)
    precision_matrix = prior_precision * np.eye(X.shape[1]) + noise_precision * X.T @ X
    tol = solve_tolerance(precision_matrix)
    expected_mean = ridge(X, y, prior_precision / noise_precision)
    np.testing.assert_allclose(post.mean, expected_mean, rtol=tol,
                               atol=tol * np.abs(expected_mean).max())
    expected_cov = np.linalg.inv(precision_matrix)
    np.testing.assert_allclose(post.cov, expected_cov, rtol=0,
                               atol=tol * np.abs(expected_cov).max())


def test_closed_forms_work_inside_jit_on_closed_over_data():
    # Data captured by a jitted function are concrete jax.Arrays while tracing: the
    # boundary checks must not apply jnp operations to them (that gives tracers).
    X, y, _ = simulate(15, 20, 3)
    X = jnp.asarray(np.column_stack([np.ones(20), X]))  # a constant bias column
    y = jnp.asarray(y)

    @jax.jit
    def evidence(log_precisions):
        alpha, beta = jnp.exp(log_precisions)
        return log_evidence(X, y, alpha, beta)

    got = evidence(jnp.log(jnp.array([0.5, 2.0])))
    np.testing.assert_allclose(got, log_evidence(X, y, 0.5, 2.0), rtol=1e-12)


# --- 4. evidence == scipy MVN log density, and == Monte Carlo on a tiny problem ---


@pytest.mark.parametrize("dataset", ["synthetic", "diabetes"])
def test_log_evidence_is_marginal_gaussian_density(dataset):
    if dataset == "synthetic":
        X, y, _ = simulate(1, 30, 3)
        prior_precision, noise_precision = 0.7, 3.0
    else:
        X, y, _ = load_diabetes()
        prior_precision, noise_precision = 1.25e-5, 3.4e-4
    marginal_cov = (np.eye(len(y)) / noise_precision
                    + X @ X.T / prior_precision)
    expected = scipy.stats.multivariate_normal.logpdf(y, np.zeros(len(y)),
                                                      marginal_cov)
    got = log_evidence(X, y, prior_precision, noise_precision)
    # Two different factorisations (p x p precision vs n x n covariance) of the same
    # density; the log-determinant and quadratic form lose about kappa * eps
    # relative accuracy each, far below 1e-9 for these condition numbers.
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_log_evidence_matches_monte_carlo_over_prior_draws():
    # Tiny problem, weak data: prior draws cover the likelihood well, so the
    # importance ratio has a small spread and the estimator is accurate.
    X, y, _ = simulate(2, 3, 2, noise_precision=1.0)
    prior_precision, noise_precision = 1.0, 1.0
    num_draws = 400_000
    rng = np.random.default_rng(3)
    w = rng.normal(0.0, prior_precision**-0.5, size=(num_draws, X.shape[1]))
    log_lik = scipy.stats.norm.logpdf(
        y, loc=w @ X.T, scale=noise_precision**-0.5
    ).sum(axis=1)
    estimate = logsumexp(log_lik) - np.log(num_draws)
    # Delta method: se(log mean L) = sd(L) / (sqrt(M) mean(L)); scale by max(L).
    scaled = np.exp(log_lik - log_lik.max())
    standard_error = scaled.std() / (np.sqrt(num_draws) * scaled.mean())
    exact = float(log_evidence(X, y, prior_precision, noise_precision))
    z = (estimate - exact) / standard_error
    assert abs(z) < 4, (estimate, exact, standard_error)
    assert standard_error < 0.01  # the check has teeth: error below 1 %


# --- 6. sequential updates == batch posterior -------------------------------------


def test_sequential_batch_updates_equal_batch_posterior():
    X, y, _ = simulate(4, 60, 4)
    prior_precision, noise_precision = 1.5, 4.0
    num_predictors = X.shape[1]
    belief = GaussianPosterior(jnp.zeros(num_predictors),
                               jnp.eye(num_predictors) / prior_precision)
    for rows in np.array_split(np.arange(len(y)), 6):  # uneven batches of 10
        belief = update_posterior(belief, X[rows], y[rows], noise_precision)
    batch = posterior(X, y, prior_precision, noise_precision)
    precision_matrix = (prior_precision * np.eye(num_predictors)
                        + noise_precision * X.T @ X)
    # Six chained solves, each backward stable: the error grows at most linearly.
    tol = 6 * solve_tolerance(precision_matrix)
    np.testing.assert_allclose(belief.mean, batch.mean, rtol=tol, atol=tol)
    np.testing.assert_allclose(belief.cov, batch.cov, rtol=tol, atol=tol)


def test_posterior_covariance_shrinks_as_rows_are_added():
    X, y, _ = simulate(5, 80, 3)
    small = posterior(X[:20], y[:20], 1.0, 4.0)
    large = posterior(X, y, 1.0, 4.0)
    # Adding rows adds a PSD term to the precision, so cov_small - cov_large is PSD.
    assert np.linalg.eigvalsh(small.cov - large.cov).min() > -1e-12


# --- predictive -------------------------------------------------------------------


def test_predictive_variance_exceeds_noise_and_matches_monte_carlo():
    X, y, _ = simulate(6, 40, 3)
    prior_precision, noise_precision = 1.0, 4.0
    post = posterior(X, y, prior_precision, noise_precision)
    X_new = np.random.default_rng(7).normal(size=(5, 3)) * 2.0
    mean, variance = predictive(post, X_new, noise_precision)
    assert np.all(np.asarray(variance) >= 1.0 / noise_precision)
    num_draws = 200_000
    rng = np.random.default_rng(8)
    w = rng.multivariate_normal(np.asarray(post.mean), np.asarray(post.cov),
                                size=num_draws)
    draws = w @ X_new.T + rng.normal(0.0, noise_precision**-0.5,
                                     size=(num_draws, len(X_new)))
    # Gaussian draws: se(mean) = sd / sqrt(M), se(variance) = var * sqrt(2 / (M - 1)).
    # 10 z-scores at |z| < 4: family-wise false-alarm rate below 1e-3.
    z_mean = (draws.mean(0) - mean) / np.sqrt(variance / num_draws)
    se_variance = variance * np.sqrt(2 / (num_draws - 1))
    z_var = (draws.var(0, ddof=1) - variance) / se_variance
    assert np.all(np.abs(z_mean) < 4), z_mean
    assert np.all(np.abs(z_var) < 4), z_var


def test_predictive_at_few_points_gives_no_fitting_warning():
    X, y, _ = simulate(6, 20, 3)
    post = posterior(X, y, 1.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        mean, variance = predictive(post, X[:1], 1.0)  # one row: every column constant
    assert mean.shape == variance.shape == (1,)
    bad = X[:2].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X_new contains NaN at index \(1, 2\)"):
        predictive(post, bad, 1.0)


def test_predictive_rejects_a_basis_of_another_width():
    X, y, _ = simulate(6, 20, 3)
    post = posterior(X, y, 1.0, 1.0)
    with pytest.raises(ValueError, match="X_new has 2 columns but the posterior has 3"):
        predictive(post, X[:, :2], 1.0)


# --- basis functions --------------------------------------------------------------


def test_polynomial_features_shape_and_bias():
    x = np.linspace(-1.0, 2.0, 7)
    features = polynomial_features(x, 3)
    assert features.shape == (7, 4)
    np.testing.assert_array_equal(features[:, 0], np.ones(7))
    np.testing.assert_allclose(features, np.vander(x, 4, increasing=True), rtol=1e-15)
    assert polynomial_features(x, 0).shape == (7, 1)


def test_gaussian_features_shape_and_bias():
    x = np.linspace(0.0, 1.0, 11)
    centers = np.linspace(0.0, 1.0, 4)
    features = gaussian_features(x, centers, 0.2)
    assert features.shape == (11, 5)
    np.testing.assert_array_equal(features[:, 0], np.ones(11))
    expected = scipy.stats.norm.pdf(x[:, None], centers[None, :], 0.2) * np.sqrt(
        2 * np.pi
    ) * 0.2
    np.testing.assert_allclose(features[:, 1:], expected, rtol=1e-13)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: polynomial_features(np.ones(3), -1), "degree must be an integer >= 0"),
        (lambda: polynomial_features(np.ones(3), 2.5), "degree must be an integer"),
        (lambda: polynomial_features(np.ones((3, 1)), 2), "x must be 1-D"),
        (lambda: gaussian_features(np.ones(3), np.ones(2), 0.0), "width must be > 0"),
        (lambda: gaussian_features(np.ones((3, 2)), np.ones(2), 1.0),
         "x and centers must be 1-D"),
    ],
)
def test_basis_functions_reject_bad_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# --- 5. EM for the precisions == scikit-learn's BayesianRidge ----------------------


def bayesian_ridge(X, y):
    """scikit-learn's evidence maximisation with its Gamma hyperpriors switched off.

    With alpha_1 = alpha_2 = lambda_1 = lambda_2 = 0 MacKay's fixed-point updates
    have the same fixed points as our EM (stationary points of the evidence); a tiny
    tol on the coefficients lets them reach it to float precision.
    """
    return BayesianRidge(fit_intercept=False, alpha_1=0.0, alpha_2=0.0,
                         lambda_1=0.0, lambda_2=0.0, tol=1e-14,
                         max_iter=100_000).fit(X, y)


def log_evidence_gradient(X, y, prior_precision, noise_precision):
    """d log p(y) / d (log alpha, log beta), by autodiff of the closed form."""
    X, y = jnp.asarray(X), jnp.asarray(y)

    def objective(log_precisions):
        alpha, beta = jnp.exp(log_precisions)
        return log_evidence(X, y, alpha, beta)

    return np.asarray(jax.jit(jax.grad(objective))(
        jnp.log(jnp.array([prior_precision, noise_precision]))
    ))


def assert_trace_valid(result):
    num_iters = int(result.num_iters)
    trace = np.asarray(result.trace)
    assert np.all(np.isfinite(trace[:num_iters]))
    assert np.all(np.isnan(trace[num_iters:]))
    # EM never decreases the evidence; at the plateau successive values differ only
    # by rounding of a sum of O(n) terms, a few ulps of |log evidence|.
    slack = 64 * EPS * np.abs(trace[:num_iters]).max()
    assert np.all(np.diff(trace[:num_iters]) >= -slack)


@pytest.mark.parametrize("dataset", ["diabetes", "synthetic"])
def test_em_precisions_equal_sklearn_bayesian_ridge(dataset):
    if dataset == "diabetes":
        X, y, _ = load_diabetes()
    else:
        X, y, _ = simulate(9, 200, 5)
    result = fit_linear_regression(X, y, tol=1e-12)
    assert bool(result.converged)
    assert_trace_valid(result)
    params = result.params
    reference = bayesian_ridge(X, y)
    # Stopping at |change in log evidence| < 1e-12 nats: the evidence is quadratic
    # in log-precision near its maximum with curvature of order p/2 and n/2, so the
    # remaining error in log-precision is below sqrt(2e-12 / (p/2)), about 1e-6; the
    # gradient check below confirms that independently of both fitters.
    np.testing.assert_allclose(params.prior_precision, reference.lambda_, rtol=1e-6)
    np.testing.assert_allclose(params.noise_precision, reference.alpha_, rtol=1e-6)
    gradient = log_evidence_gradient(X, y, params.prior_precision,
                                     params.noise_precision)
    assert np.all(np.abs(gradient) < 1e-4), gradient
    # The returned posterior and evidence belong to the returned precisions (same
    # formulas, compiled with and without jit: they differ by rounding only).
    post = posterior(X, y, params.prior_precision, params.noise_precision)
    scale = np.abs(np.asarray(post.cov)).max()
    np.testing.assert_allclose(params.mean, post.mean, rtol=1e-10)
    np.testing.assert_allclose(params.cov, post.cov, rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(result.log_likelihood, log_evidence(
        X, y, params.prior_precision, params.noise_precision), rtol=1e-12)
    np.testing.assert_allclose(params.mean, reference.coef_, rtol=1e-5,
                               atol=1e-5 * np.abs(reference.coef_).max())


def test_em_recovers_true_noise_precision():
    noise_precision = 4.0
    num_rows, num_predictors = 400, 5
    X, y, _ = simulate(10, num_rows, num_predictors, noise_precision=noise_precision)
    result = fit_linear_regression(X, y)
    estimate = float(result.params.noise_precision)
    # beta_hat = (n - gamma) / RSS with RSS ~ chi^2_{n - gamma} / beta, gamma <= p
    # effective parameters: sd(beta_hat) ~ beta * sqrt(2 / (n - p)).
    standard_error = noise_precision * np.sqrt(2 / (num_rows - num_predictors))
    assert abs(estimate - noise_precision) / standard_error < 4


def test_em_warns_when_max_iters_is_reached():
    X, y, _ = load_diabetes()
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        result = fit_linear_regression(X, y, max_iters=2)
    assert not bool(result.converged)
    assert int(result.num_iters) == 2
    assert_trace_valid(result)


def test_em_max_iters_zero_returns_the_initial_precisions():
    X, y, _ = simulate(11, 30, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn: max_iter=0 is not a warning
        result = fit_linear_regression(X, y, max_iters=0, init_prior_precision=3.0,
                                       init_noise_precision=5.0)
    assert float(result.params.prior_precision) == 3.0
    assert float(result.params.noise_precision) == 5.0
    assert int(result.num_iters) == 0 and not bool(result.converged)
    assert result.trace.shape == (0,)


def test_em_float32_path_matches_float64():
    X, y, _ = load_diabetes()
    result64 = fit_linear_regression(X, y)
    result32 = fit_linear_regression(X.astype(np.float32), y.astype(np.float32))
    assert result32.params.prior_precision.dtype == jnp.float32
    assert result32.trace.dtype == jnp.float32
    # scikit-learn's float32-vs-float64 tolerance for fitted parameters (PR #30415).
    np.testing.assert_allclose(result32.params.prior_precision,
                               result64.params.prior_precision, rtol=1e-3)
    np.testing.assert_allclose(result32.params.noise_precision,
                               result64.params.noise_precision, rtol=1e-3)
    num_iters = int(result32.num_iters)
    trace = np.asarray(result32.trace[:num_iters], dtype=np.float64)
    assert np.all(np.isfinite(trace))
    slack = 64 * np.finfo(np.float32).eps * np.abs(trace).max()
    assert np.all(np.diff(trace) >= -slack)


# --- 6 (issue section 6). Bad input -------------------------------------------------


@pytest.fixture
def regression_data():
    X, y, _ = simulate(12, 20, 3)
    return X, y


def test_rows_of_X_and_y_must_match(regression_data):
    X, y = regression_data
    pattern = r"X and y must have the same number of rows.*X.shape=\(20, 3\).*\(19,\)"
    with pytest.raises(ValueError, match=pattern):
        posterior(X, y[:-1], 1.0, 1.0)
    with pytest.raises(ValueError, match=pattern):
        fit_linear_regression(X, y[:-1])


def test_y_must_be_one_dimensional(regression_data):
    X, y = regression_data
    with pytest.raises(ValueError, match="y must be 1-D"):
        fit_linear_regression(X, y[:, None])
    with pytest.raises(ValueError, match=r"X must be 2-D.*reshape"):
        fit_linear_regression(X[:, 0], y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["X", "y"])
def test_non_finite_values_are_rejected_naming_the_argument(regression_data, bad,
                                                            where):
    X, y = (array.copy() for array in regression_data)
    if where == "X":
        X[4, 1] = bad
        index = r"\(4, 1\)"
    else:
        y[7] = -bad
        index = r"\(7,\)"
    kind = "NaN" if np.isnan(bad) else "infinity"
    pattern = f"{where} contains {kind} at index {index}"
    with pytest.raises(ValueError, match=pattern):
        posterior(X, y, 1.0, 1.0)
    with pytest.raises(ValueError, match=pattern):
        log_evidence(X, y, 1.0, 1.0)
    with pytest.raises(ValueError, match=pattern):
        fit_linear_regression(X, y)


@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf])
def test_non_positive_precisions_are_rejected_naming_the_argument(regression_data,
                                                                  value):
    X, y = regression_data
    for name, call in [
        ("prior_precision", lambda: posterior(X, y, value, 1.0)),
        ("noise_precision", lambda: posterior(X, y, 1.0, value)),
        ("prior_precision", lambda: log_evidence(X, y, value, 1.0)),
        ("noise_precision", lambda: log_evidence(X, y, 1.0, value)),
        ("noise_precision",
         lambda: predictive(posterior(X, y, 1.0, 1.0), X, value)),
        ("noise_precision",
         lambda: update_posterior(posterior(X, y, 1.0, 1.0), X, y, value)),
        ("init_prior_precision",
         lambda: fit_linear_regression(X, y, init_prior_precision=value)),
        ("init_noise_precision",
         lambda: fit_linear_regression(X, y, init_noise_precision=value)),
    ]:
        with pytest.raises(ValueError, match=f"{name} must be finite and > 0"):
            call()


def test_bad_em_settings_are_rejected(regression_data):
    X, y = regression_data
    with pytest.raises(ValueError, match="max_iters must be an integer >= 0"):
        fit_linear_regression(X, y, max_iters=-1)
    with pytest.raises(ValueError, match="max_iters must be an integer"):
        fit_linear_regression(X, y, max_iters=10.5)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        fit_linear_regression(X, y, tol=-1e-3)


@pytest.mark.parametrize("where", ["X", "y"])
def test_object_dtype_is_rejected_naming_the_argument(regression_data, where):
    X, y = regression_data
    if where == "X":
        X = X.astype(object)
    else:
        y = np.array([str(value) for value in y], dtype=object)
    with pytest.raises(TypeError, match=f"{where} must be a numeric array, got dtype "
                                        "object"):
        posterior(X, y, 1.0, 1.0)
    with pytest.raises(TypeError, match=f"{where} must be a numeric array"):
        fit_linear_regression(X, y)


def test_more_predictors_than_rows_works_with_a_warning():
    X, y, _ = simulate(13, 5, 8)
    prior_precision, noise_precision = 2.0, 4.0
    with pytest.warns(DataWarning, match=r"more predictors \(8\) than rows \(5\)"):
        post = posterior(X, y, prior_precision, noise_precision)
    expected = ridge(X, y, prior_precision / noise_precision)
    np.testing.assert_allclose(post.mean, expected, rtol=1e-10, atol=1e-12)
    # Along the 3 directions with X v = 0 the data say nothing: the posterior
    # variance there is the prior's, 1 / alpha.
    null_space = scipy.linalg.null_space(X)
    assert null_space.shape[1] == 3
    np.testing.assert_allclose(null_space.T @ post.cov @ null_space,
                               np.eye(3) / prior_precision, atol=1e-12)
    # With p > n the evidence can peak on the boundary (here alpha -> infinity), so
    # EM climbs towards it without converging: a ConvergenceWarning, yet finite,
    # monotone and usable.
    with pytest.warns(DataWarning, match="more predictors"), pytest.warns(
        ConvergenceWarning
    ):
        result = fit_linear_regression(X, y, max_iters=50)
    assert np.all(np.isfinite(np.asarray(result.params.mean)))
    assert_trace_valid(result)


def test_redundant_constant_column_works_with_a_warning():
    X, y, _ = simulate(14, 30, 3)
    X = np.column_stack([np.ones(30), X, np.full(30, 2.0)])  # second constant column
    with pytest.warns(DataWarning, match=r"constant column\(s\) \[0, 4\]"):
        post = posterior(X, y, 1.0, 4.0)
    np.testing.assert_allclose(post.mean, ridge(X, y, 1.0 / 4.0), rtol=1e-10)
    with pytest.warns(DataWarning, match="constant column"):
        result = fit_linear_regression(X, y)
    assert bool(result.converged)
    assert_trace_valid(result)


# --- checklist item 1: maximum likelihood (OLS) ---------------------------------------


def test_least_squares_equals_an_svd_solve_and_recovers_the_true_weights():
    from latentmix.models.linear_regression import least_squares

    rng = np.random.default_rng(40)
    num_rows, true_w, noise_sd = 200, np.array([1.5, -2.0, 0.5, 3.0]), 0.7
    X = np.column_stack([np.ones(num_rows), rng.normal(size=(num_rows, 3))])
    y = X @ true_w + rng.normal(0.0, noise_sd, num_rows)
    fit = least_squares(X, y)
    # Reference: LAPACK's SVD solver (gelsd), no QR and no normal equations; both
    # are backward stable, so they agree to the forward-error bound kappa * eps.
    expected = scipy.linalg.lstsq(X, y)[0]
    tol = solve_tolerance(X)
    np.testing.assert_allclose(fit.weights, expected, rtol=tol, atol=tol)
    # Standard errors: sqrt(diag(s^2 (X^T X)^-1)) with numpy's inverse.
    s2 = np.sum((y - X @ expected) ** 2) / (num_rows - 4)
    np.testing.assert_allclose(fit.noise_variance, s2, rtol=1e-10)
    np.testing.assert_allclose(
        fit.standard_errors, np.sqrt(s2 * np.diag(np.linalg.inv(X.T @ X))),
        rtol=1e-10)
    # Recovery: (w_hat - w) / se is Student t with 196 degrees of freedom; 4 se
    # is exceeded with probability 8e-5 per weight.
    z = (np.asarray(fit.weights) - true_w) / np.asarray(fit.standard_errors)
    assert np.all(np.abs(z) < 4), z


def test_least_squares_standard_errors_have_their_nominal_coverage():
    """Over 400 simulated data sets the +-1.96 se intervals cover the true weights
    95% of the time (t with 36 degrees of freedom: 94.2%). 1,600 intervals give a
    binomial sd of 0.6 points; the band below is 4 sd wide on each side."""
    from latentmix.models.linear_regression import least_squares

    rng = np.random.default_rng(41)
    true_w = np.array([0.5, -1.0, 2.0, 0.0])
    covered = []
    for _ in range(400):
        X = rng.normal(size=(40, 4))
        y = X @ true_w + rng.normal(0.0, 1.3, 40)
        fit = least_squares(X, y)
        covered.append(np.abs(np.asarray(fit.weights) - true_w)
                       < 1.96 * np.asarray(fit.standard_errors))
    coverage = np.mean(covered)
    expected = 2 * scipy.stats.t.cdf(1.96, df=36) - 1
    assert abs(coverage - expected) < 4 * np.sqrt(expected * (1 - expected) / 1600)


def test_least_squares_stays_accurate_where_normal_equations_lose_digits():
    from latentmix.models.linear_regression import least_squares

    # Degree-9 polynomial basis on [0, 1]: cond(X) ~ 1e7, so cond(X^T X) ~ 1e14
    # and solving the normal equations keeps only ~2 digits. Exact data from known
    # weights: the QR solve must return them to about cond(X) * eps ~ 1e-9.
    x = np.linspace(0.0, 1.0, 60)
    X = np.asarray(polynomial_features(x, 9))
    true_w = np.linspace(1.0, -1.0, 10)
    fit = least_squares(X, X @ true_w)
    tol = solve_tolerance(X)
    assert tol < 1e-5  # the check has teeth: far below the normal equations' error
    np.testing.assert_allclose(fit.weights, true_w, atol=tol * 10)


def test_posterior_mean_tends_to_least_squares_as_the_prior_vanishes():
    from latentmix.models.linear_regression import least_squares

    X, y, _ = simulate(42, 80, 3)
    w_ols = np.asarray(least_squares(X, y).weights)
    gram_inv = np.linalg.inv(X.T @ X)
    noise_precision = 2.0
    gaps = []
    for prior_precision in (1e-1, 1e-3, 1e-5):
        mean = np.asarray(posterior(X, y, prior_precision, noise_precision).mean)
        # First order in lambda = alpha / beta: (G + lambda I)^-1 G w =
        # w - lambda G^-1 w + O(lambda^2), so the gap is lambda ||G^-1 w|| up to
        # a relative O(lambda ||G^-1||) = O(1e-3) correction at the largest alpha.
        lam = prior_precision / noise_precision
        first_order = lam * np.linalg.norm(gram_inv @ w_ols)
        gap = np.linalg.norm(mean - w_ols)
        np.testing.assert_allclose(gap, first_order, rtol=1e-2)
        gaps.append(gap)
    assert gaps[0] > gaps[1] > gaps[2]


def test_least_squares_rejects_too_few_rows_and_collinear_columns():
    from latentmix.models.linear_regression import least_squares

    with pytest.raises(ValueError, match="more rows than predictors"):
        least_squares(np.eye(3), np.ones(3))
    X = np.column_stack([np.arange(6.0), 2 * np.arange(6.0)])
    with pytest.raises(ValueError, match="rank deficient"):
        least_squares(X, np.arange(6.0))
