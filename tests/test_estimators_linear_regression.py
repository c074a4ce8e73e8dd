"""latentmix.inference.BayesianLinearRegression and the basis transformers.

References: scikit-learn's BayesianRidge (same evidence maximum), the
functional fit on the same design matrix, the closed-form posterior for the
sampled and optimised posteriors (tolerances from Monte Carlo errors).
"""

import pickle

import arviz as az
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge
from sklearn.pipeline import Pipeline

from latentmix.inference import (
    BayesianLinearRegression,
    GaussianBasis,
    PolynomialBasis,
    load,
)
from latentmix.inference.em import fit_linear_regression
from latentmix.models import linear_regression as lr


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


def test_precisions_and_predictions_equal_bayesian_ridge(diabetes):
    X, y = diabetes
    ours = BayesianLinearRegression().fit(X, y)
    theirs = BayesianRidge(tol=1e-12, max_iter=100_000).fit(X, y)
    assert ours.converged_
    # Both sit on the evidence maximum: ours stops at |change| < 1e-10 nats
    # (precisions within ~1e-5 relative of it, the quadratic argument of
    # tests/test_linear_regression.py), scikit-learn adds Gamma(1e-6, 1e-6)
    # hyperpriors that move the maximum by ~1e-6/n relative; measured ~1e-7.
    np.testing.assert_allclose(ours.alpha_, theirs.alpha_, rtol=1e-6)
    np.testing.assert_allclose(ours.lambda_, theirs.lambda_, rtol=1e-6)
    scale = np.abs(theirs.coef_).max()
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_,
                               atol=1e-5 * scale)
    np.testing.assert_allclose(ours.sigma_, theirs.sigma_, rtol=1e-5,
                               atol=1e-5 * np.abs(theirs.sigma_).max())
    ours_mean, ours_sd = ours.predict(X[:20], return_std=True)
    theirs_mean, theirs_sd = theirs.predict(X[:20], return_std=True)
    np.testing.assert_allclose(ours_mean, theirs_mean, rtol=1e-5)
    np.testing.assert_allclose(ours_sd, theirs_sd, rtol=1e-5)
    assert ours.scores_.shape == (ours.n_iter_,)
    assert np.all(np.diff(ours.scores_) >= -1e-9)  # EM never lowers the evidence


def test_penalised_intercept_is_the_functional_fit_on_a_bias_column(diabetes):
    X, y = diabetes
    design = np.column_stack([np.ones(len(X)), X])
    result = fit_linear_regression(design, y)
    model = BayesianLinearRegression(penalize_intercept=True).fit(X, y)
    # The same jitted program on the same design matrix: identical numbers.
    np.testing.assert_array_equal(model.posterior_mean_, result.params.mean)
    assert model.intercept_ == float(result.params.mean[0])
    mean, variance = lr.predictive(
        lr.GaussianPosterior(result.params.mean, result.params.cov), design[:10],
        result.params.noise_precision)
    ours_mean, ours_sd = model.predict(X[:10], return_std=True)
    np.testing.assert_allclose(ours_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(ours_sd, np.sqrt(variance), rtol=1e-12)


def test_basis_transformers_in_a_pipeline():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 60)
    y = np.sin(3 * x) + rng.normal(0, 0.1, 60)
    pipeline = Pipeline([("basis", PolynomialBasis(5)),
                         ("regression", BayesianLinearRegression(fit_intercept=False))])
    pipeline.fit(x[:, None], y)
    direct = fit_linear_regression(np.asarray(lr.polynomial_features(x, 5)), y)
    np.testing.assert_allclose(pipeline[-1].coef_, direct.params.mean, rtol=1e-12)
    assert pipeline.score(x[:, None], y) > 0.9
    basis = GaussianBasis(num_centers=7).fit(x[:, None])
    np.testing.assert_allclose(
        basis.transform(x[:, None]),
        lr.gaussian_features(x, np.linspace(x.min(), x.max(), 7), basis.width_[0]),
        rtol=1e-12)
    two = PolynomialBasis(2, include_bias=False).fit_transform(np.c_[x, 2 * x])
    np.testing.assert_allclose(two, np.c_[x, x**2, 2 * x, 4 * x**2])


def test_sample_posterior_matches_the_closed_form(diabetes):
    X, y = diabetes
    X, y = X[:150, :4], y[:150]
    model = BayesianLinearRegression().fit(X, y)
    sd = np.sqrt(np.diag(model.sigma_))
    idata = model.sample_posterior(X, y, "nuts", num_chains=2, num_warmup=300,
                                   num_samples=500, random_state=0,
                                   posterior_predictive=True)
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood",
            "posterior_predictive"} <= set(idata.groups())
    coef = idata.posterior["coef"].values.reshape(-1, 4)
    ess = az.ess(idata, var_names=["coef"])["coef"].values
    # The Gaussian posterior is the closed form at the EM precisions: each
    # NUTS mean lies within 4 Monte Carlo standard errors (sd / sqrt(ESS)).
    assert np.all(np.abs(coef.mean(0) - model.coef_) < 4 * sd / np.sqrt(ess))
    assert idata.log_likelihood["y"].shape == (2, 500, 150)
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    # The intercept of the centred model, draw by draw, in the data's units.
    intercept = idata.posterior["intercept"].values.ravel()
    np.testing.assert_allclose(intercept, model.y_offset_ - coef @ model.X_offset_)
    map_idata = model.sample_posterior(X, y, "map", random_state=1)
    # BFGS polishes the MAP to a gradient of ~1e-6 posterior sds.
    np.testing.assert_allclose(map_idata.posterior["coef"].values[0, 0],
                               model.coef_, atol=1e-4 * sd.max())
    vi = model.sample_posterior(X, y, "vi", num_chains=2, num_samples=2000,
                                random_state=2)
    draws = vi.posterior["coef"].values.reshape(-1, 4)
    # Full-rank VI in whitened coordinates lands near the exact Gaussian; its
    # 4000 draws give means within 4 sd / sqrt(4000) plus the optimiser's
    # ~0.1 sd (inference.crosscheck.linear_regression's VI tolerance).
    assert np.all(np.abs(draws.mean(0) - model.coef_) < (0.1 + 4 / np.sqrt(4000))
                  * sd)
    with pytest.raises(ValueError, match="needs method='nuts'"):
        model.sample_posterior(X, y, "vi", sample_precisions=True)


def test_save_load_and_pickle(diabetes, tmp_path):
    X, y = diabetes
    model = BayesianLinearRegression(penalize_intercept=True).fit(X, y)
    model.save(tmp_path / "regression")
    loaded = load(tmp_path / "regression")
    for a, b in zip(loaded.predict(X, return_std=True), model.predict(
            X, return_std=True), strict=True):
        np.testing.assert_array_equal(a, b)
    copied = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copied.predict(X), model.predict(X))
