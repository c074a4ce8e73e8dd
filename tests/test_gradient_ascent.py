"""Checklist item 10: raw gradient ascent leaves the constraints, EM and a
reparametrised ascent do not.

References: scipy's multivariate normal density for the gradient of the weights,
the closed-form gradient of a one-component Gaussian in its covariance
(d/dSigma mean log N = 1/2 (Sigma^-1 S Sigma^-1 - Sigma^-1)), NumPy's
eigenvalues and Cholesky factorisations. Float64.
"""

import numpy as np
import scipy.stats

from latentmix.data.datasets import load_old_faithful
from latentmix.inference.gradient_ascent import (
    em_iterations,
    raw_gradient_ascent,
    reparametrised_gradient_ascent,
)
from latentmix.models.gaussian_mixture import GMMParams


def faithful():
    return load_old_faithful()[["eruptions", "waiting"]].to_numpy(np.float64)


def naive_start(x):
    """Two components at the data's quartiles with the data's covariance."""
    cov = np.cov(x.T, bias=True)
    return GMMParams(np.array([0.5, 0.5]), np.quantile(x, [0.25, 0.75], axis=0),
                     np.stack([cov, cov]))


def test_first_raw_step_moves_the_weight_sum_to_one_plus_eta_k():
    x = faithful()
    init = naive_start(x)
    eta = 0.05
    path = raw_gradient_ascent(x, init, learning_rate=eta, num_steps=1)
    # df/dw_k = (1/n) sum_i N_ik / p(x_i), with scipy's densities.
    dens = np.column_stack([scipy.stats.multivariate_normal.pdf(x, m, c) for m, c in
                            zip(init.means, init.covariances, strict=True)])
    grad = (dens / (dens @ init.weights)[:, None]).mean(axis=0)
    np.testing.assert_allclose(path.params.weights[1], init.weights + eta * grad,
                               rtol=1e-10)
    # With equal weights sum_k df/dw_k = K exactly: the sum leaves 1 at once.
    np.testing.assert_allclose(path.weight_sum[1], 1 + eta * 2, rtol=1e-10)
    assert np.isnan(path.mean_log_likelihood[1])  # no longer a density
    assert np.isfinite(path.mean_log_likelihood[0])


def test_raw_step_drives_a_small_variance_below_zero_where_the_closed_form_says():
    """One component, data with mean 0 and scatter S = diag(0.1, 100); start at
    Sigma = 1.5 S. The raw step is s + eta (sigma^2 - s) / (2 s^2) per axis, so
    eta = 1 (which moves the variance-100 axis by 0.001) sends the variance-0.1
    axis to 0.15 - 1.11 < 0."""
    a, b = np.sqrt(0.2), np.sqrt(200.0)
    x = np.array([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]])
    scatter = np.diag([0.1, 100.0])  # (1/n) sum x x^T
    init = GMMParams(np.array([1.0]), np.zeros((1, 2)), 1.5 * scatter[None])
    raw = raw_gradient_ascent(x, init, learning_rate=1.0, num_steps=3)
    s = np.diag(init.covariances[0])
    predicted = s + 1.0 * (np.diag(scatter) - s) / (2 * s**2)
    np.testing.assert_allclose(raw.params.covariances[1, 0], np.diag(predicted),
                               rtol=1e-12, atol=1e-14)
    assert predicted[0] < 0 < predicted[1]
    assert raw.min_eigenvalue[1] < 0 and np.isnan(raw.mean_log_likelihood[1])
    # The same step size on the log-Cholesky coordinates stays positive definite.
    reparam = reparametrised_gradient_ascent(x, init, learning_rate=1.0,
                                             num_steps=3)
    assert np.all(reparam.min_eigenvalue > 0)
    assert np.all(np.isfinite(reparam.mean_log_likelihood))
    # EM: one M-step is the weighted scatter itself.
    em = em_iterations(x, init, num_steps=1)
    np.testing.assert_allclose(em.params.covariances[1, 0], scatter, rtol=1e-12)


def test_em_and_the_reparametrised_ascent_keep_every_constraint_on_old_faithful():
    x = faithful()
    init = naive_start(x)
    em = em_iterations(x, init, num_steps=40)
    reparam = reparametrised_gradient_ascent(x, init, learning_rate=0.05,
                                             num_steps=40)
    raw = raw_gradient_ascent(x, init, learning_rate=0.05, num_steps=40)
    for path in (em, reparam):
        # Weights: a mean of responsibilities or a softmax, on the simplex to
        # rounding; covariances: Cholesky succeeds for every iterate.
        np.testing.assert_allclose(path.weight_sum, 1.0, atol=1e-12)
        assert np.all(np.asarray(path.min_weight) > 0)
        for covariance in np.asarray(path.params.covariances).reshape(-1, 2, 2):
            np.linalg.cholesky(covariance)
        assert np.all(np.isfinite(path.mean_log_likelihood))
    # EM never decreases the log-likelihood (up to rounding of a mean of 272 terms).
    assert np.all(np.diff(np.asarray(em.mean_log_likelihood)) >= -1e-12)
    # The raw ascent has left the simplex for good: the sum only grows.
    assert np.all(np.diff(np.asarray(raw.weight_sum)) > 0)
    assert raw.weight_sum[-1] > 1.5
