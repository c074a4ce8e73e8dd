"""The log_likelihood group: log p(row i | draw s) against scipy, draw by draw."""

import arviz as az
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multinomial, multivariate_normal, norm

from latentmix.inference.posterior.pointwise import (
    add_log_likelihood,
    gmm_log_likelihood,
    multinomial_log_likelihood,
    regression_log_likelihood,
)
from latentmix.models import gaussian_mixture as gm

# Two float64 evaluations of the same log-density by different formulas (ours
# through a Cholesky whitening or expanded squares on uncentred data, scipy's
# through an eigendecomposition): rounding of O(10) nats, well below 1e-9.
ATOL = 1e-9


def gmm_draws(rng, num_chains=2, num_draws=3, k=3, d=2):
    weights = rng.dirichlet(np.ones(k), size=(num_chains, num_draws))
    means = rng.normal(size=(num_chains, num_draws, k, d)) * 3
    factors = rng.normal(size=(num_chains, num_draws, k, d, d))
    covariances = factors @ np.swapaxes(factors, -1, -2) + np.eye(d)
    return {"weights": weights, "means": means, "covariances": covariances}


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_log_likelihood_is_scipy_mixture_density(covariance_type):
    rng = np.random.default_rng(0)
    draws = gmm_draws(rng)
    sites = gm.to_sites(gm.from_sites(draws), covariance_type)
    if covariance_type == "tied":
        sites["covariance"] = draws["covariances"][:, :, 0]
    sites = {name: np.asarray(value) for name, value in sites.items()}
    params = gm.from_sites(sites)
    x = rng.normal(size=(7, 2)) * 4
    ours = gmm_log_likelihood(sites, x, covariance_type)
    assert ours.shape == (2, 3, 7)
    for chain in range(2):
        for draw in range(3):
            per_component = np.column_stack([
                multivariate_normal(np.asarray(params.means[chain, draw, k]),
                                    np.asarray(params.covariances[chain, draw, k]))
                .logpdf(x) for k in range(3)])
            theirs = logsumexp(per_component
                               + np.log(np.asarray(params.weights[chain, draw])),
                               axis=1)
            np.testing.assert_allclose(ours[chain, draw], theirs, atol=ATOL)


@pytest.mark.parametrize("grouped", [False, True])
def test_multinomial_log_likelihood_is_scipy_mixture_pmf(grouped):
    rng = np.random.default_rng(1)
    counts = rng.multinomial(7, [0.1, 0.2, 0.3, 0.4], size=6).astype(float)
    counts[2] = 0  # an empty row: log 1 = 0
    probs = rng.dirichlet(np.ones(4), size=(2, 5, 3))
    codes = np.array([0, 1, 1, 0, 2, 2])
    weights = rng.dirichlet(np.ones(3), size=(2, 5) + ((3,) if grouped else ()))
    draws = {"probs": probs, "group_weights" if grouped else "weights": weights}
    ours = multinomial_log_likelihood(draws, counts, codes if grouped else None)
    totals = counts.sum(1)
    for chain in range(2):
        for draw in range(5):
            per_component = np.column_stack([
                multinomial(totals, probs[chain, draw, k]).logpmf(counts)
                for k in range(3)])
            row_weights = (weights[chain, draw][codes] if grouped
                           else weights[chain, draw])
            theirs = logsumexp(per_component + np.log(row_weights), axis=1)
            np.testing.assert_allclose(ours[chain, draw], theirs, atol=ATOL)


def test_regression_log_likelihood_fixed_and_sampled_precision():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(9, 3)), rng.normal(size=9)
    w = rng.normal(size=(2, 4, 3))
    fixed = regression_log_likelihood({"w": w}, X, y, noise_precision=2.5)
    theirs = norm(w @ X.T, 1 / np.sqrt(2.5)).logpdf(y)
    np.testing.assert_allclose(fixed, theirs, atol=ATOL)
    beta = rng.gamma(2.0, size=(2, 4))
    sampled = regression_log_likelihood({"w": w, "noise_precision": beta}, X, y)
    theirs = norm(w @ X.T, 1 / np.sqrt(beta)[..., None]).logpdf(y)
    np.testing.assert_allclose(sampled, theirs, atol=ATOL)
    with pytest.raises(ValueError, match="noise_precision is needed"):
        regression_log_likelihood({"w": w}, X, y)


def test_add_log_likelihood_makes_loo_and_waic_work():
    rng = np.random.default_rng(3)
    y = rng.normal(size=30)
    mu = rng.normal(0, 0.1, size=(2, 200))
    idata = az.from_dict(posterior={"mu": mu}, observed_data={"y": y})
    values = norm(mu[..., None], 1.0).logpdf(y)
    idata = add_log_likelihood(idata, "y", values)
    assert idata.log_likelihood["y"].shape == (2, 200, 30)
    loo = az.loo(idata)
    waic = az.waic(idata)
    # Two estimates of the same expected log predictive density of 30 rows of a
    # well-specified N(mu, 1) model: they differ by far less than a nat.
    assert abs(loo.elpd_loo - waic.elpd_waic) < 0.5
    assert np.isfinite(loo.elpd_loo)
