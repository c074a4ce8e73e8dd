"""latentmix.inference.GaussianMixture: a drop-in for scikit-learn's class.

References: ``sklearn.mixture.GaussianMixture`` itself (same start, same
iterations, same numbers), the functional API it wraps, and EM on repeated
rows for the sample weights.
"""

import contextlib
import io
import pickle
import re
import warnings

import numpy as np
import pytest
import sklearn.mixture
import threadpoolctl
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

from latentmix.data.datasets import load_old_faithful
from latentmix.inference import GaussianMixture, load
from latentmix.inference.em.gaussian_mixture.restarts import run_restarts
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES

# Same float64 arithmetic up to the order of operations (ours centres the data
# and computes the statistics in two passes; scikit-learn works on raw data
# with precision Cholesky factors): ~1e-16 relative per EM iteration, damped by
# the contracting EM map. Measured differences are ~1e-14 (parameters) and
# ~1e-13 (a BIC of ~1e3); 1e-10 leaves room for other BLAS builds.
SAME_START_ATOL = 1e-10


def blobs(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(100, 2)),
                           rng.normal(size=(80, 2)) * 0.5 + 3,
                           rng.normal(size=(60, 2)) + [0, 5]])


def sklearn_fit(**options):
    with threadpoolctl.threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        return sklearn.mixture.GaussianMixture(**options)


def fitted_pair(x, **options):
    """(scikit-learn's fit, ours) with the same options."""
    theirs = sklearn_fit(**options).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        ours = GaussianMixture(**options).fit(x)
    return theirs, ours


def same_start(x, covariance_type, shift=0.3):
    """A start scikit-learn would not converge from in one step."""
    reference = sklearn_fit(n_components=3, covariance_type=covariance_type,
                            random_state=0).fit(x)
    return {"weights_init": reference.weights_,
            "means_init": reference.means_ + shift,
            "precisions_init": reference.precisions_}


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_start_same_numbers_as_scikit_learn(covariance_type):
    x = blobs()
    options = {"n_components": 3, "covariance_type": covariance_type,
               "tol": 1e-6, "max_iter": 200, **same_start(x, covariance_type)}
    theirs, ours = fitted_pair(x, **options)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_",
                 "precisions_cholesky_"):
        assert getattr(ours, name).shape == getattr(theirs, name).shape, name
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name),
                                   atol=SAME_START_ATOL, err_msg=name)
    assert isinstance(ours.lower_bounds_, list)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_,
                               atol=SAME_START_ATOL)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_,
                               atol=SAME_START_ATOL)
    new = blobs(1)
    np.testing.assert_allclose(ours.score_samples(new), theirs.score_samples(new),
                               atol=SAME_START_ATOL)
    np.testing.assert_allclose(ours.score(new), theirs.score(new),
                               atol=SAME_START_ATOL)
    np.testing.assert_allclose(ours.predict_proba(new), theirs.predict_proba(new),
                               atol=SAME_START_ATOL)
    np.testing.assert_array_equal(ours.predict(new), theirs.predict(new))
    # BIC and AIC are n times a mean log-likelihood of ~1: relative 1e-12.
    np.testing.assert_allclose(ours.bic(new), theirs.bic(new), rtol=1e-12)
    np.testing.assert_allclose(ours.aic(new), theirs.aic(new), rtol=1e-12)
    assert ours.n_features_in_ == theirs.n_features_in_ == 2


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_random_init_same_random_state_same_fit_as_scikit_learn(covariance_type):
    """init_params="random" draws scikit-learn's responsibilities (the same
    NumPy draws from random_state), so the whole fit is the same."""
    x = blobs(2)
    options = {"n_components": 3, "covariance_type": covariance_type,
               "init_params": "random", "random_state": 3, "n_init": 2,
               "max_iter": 500, "tol": 1e-8}
    theirs, ours = fitted_pair(x, **options)
    assert ours.n_iter_ == theirs.n_iter_
    # ~500 iterations from a start near the saddle: still contracting, the
    # measured difference is ~4e-15.
    np.testing.assert_allclose(ours.means_, theirs.means_, atol=SAME_START_ATOL)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_,
                               atol=SAME_START_ATOL)


def test_sample_draws_what_scikit_learn_draws_from_the_same_fit():
    x = blobs()
    options = {"n_components": 3, "random_state": 5, "max_iter": 50, "tol": 1e-6,
               **same_start(x, "full")}
    theirs, ours = fitted_pair(x, **options)
    for covariance_type in ("full", "spherical"):
        theirs, ours = fitted_pair(x, **{**options, "covariance_type":
                                         covariance_type,
                                         **same_start(x, covariance_type)})
        # Copy our attributes into scikit-learn's object: the same parameters
        # and the same random_state must give the same NumPy draws.
        for name in ("weights_", "means_", "covariances_"):
            setattr(theirs, name, getattr(ours, name))
        ours_x, ours_y = ours.sample(40)
        theirs_x, theirs_y = theirs.sample(40)
        np.testing.assert_array_equal(ours_y, theirs_y)
        np.testing.assert_allclose(ours_x, theirs_x, rtol=1e-12)
    with pytest.raises(ValueError, match="requires at least one sample"):
        ours.sample(0)


def user_code(mixture_class, x):
    """What scikit-learn users write: a BIC sweep, labels, densities, samples,
    a warm-started refit. Returns the numbers it would print."""
    bics = []
    for k in (1, 2, 3):
        model = mixture_class(n_components=k, covariance_type="full",
                              random_state=0, n_init=2)
        bics.append(model.fit(x).bic(x))
    best = mixture_class(n_components=int(np.argmin(bics)) + 1, random_state=0)
    labels = best.fit_predict(x)
    assert np.array_equal(labels, best.predict(x))
    density = best.score_samples(x[:5])
    responsibilities = best.predict_proba(x[:5])
    samples, components = best.sample(10)
    warm = mixture_class(n_components=2, warm_start=True, max_iter=1,
                         random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        scores = [warm.fit(x).score(x) for _ in range(5)]
    return {"bics": bics, "labels": labels, "density": density,
            "responsibilities": responsibilities, "samples": samples.shape,
            "components": components.shape, "scores": scores,
            "attributes": (best.weights_.shape, best.means_.shape,
                           best.covariances_.shape, best.converged_)}


def test_unchanged_user_code_runs_with_either_class():
    x = load_old_faithful().to_numpy()
    with threadpoolctl.threadpool_limits(1):
        theirs = user_code(sklearn.mixture.GaussianMixture, x)
    ours = user_code(GaussianMixture, x)
    # Different random starts (module docstring of the estimator), the same
    # optimum on Old Faithful: BIC within 1e-3 relative, the same K chosen.
    np.testing.assert_allclose(ours["bics"], theirs["bics"], rtol=1e-3)
    assert np.argmin(ours["bics"]) == np.argmin(theirs["bics"])
    assert ours["attributes"] == theirs["attributes"]
    assert ours["samples"] == theirs["samples"]
    # Warm-started single iterations never lower the likelihood (EM).
    assert np.all(np.diff(ours["scores"]) >= -1e-12)


def test_warm_start_converges_like_scikit_learn():
    """scikit-learn compares a warm start's first objective with the previous
    lower bound (test_monotonic_likelihood): the same converged_ sequence."""
    x = blobs(4)
    start = same_start(x, "full", shift=0.05)
    options = {"n_components": 3, "warm_start": True, "max_iter": 1, "tol": 1e-3,
               **start}
    theirs = sklearn_fit(**options)
    ours = GaussianMixture(**options)
    history = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        for _ in range(8):
            theirs.fit(x)
            ours.fit(x)
            history.append((theirs.converged_, ours.converged_))
            np.testing.assert_allclose(ours.means_, theirs.means_,
                                       atol=SAME_START_ATOL)
            np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_,
                                       atol=SAME_START_ATOL)
    assert all(a == b for a, b in history)
    assert history[-1] == (True, True)
    # A longer warm-started run that converges at once does one iteration.
    theirs.set_params(max_iter=100)
    ours.set_params(max_iter=100)
    theirs.fit(x)
    ours.fit(x)
    assert ours.n_iter_ == theirs.n_iter_ == 1


def test_convergence_warning_is_scikit_learns():
    x = blobs()
    with pytest.warns(SklearnConvergenceWarning, match="did not converge"):
        model = GaussianMixture(3, max_iter=2, random_state=0).fit(x)
    assert not model.converged_ and model.n_iter_ == 2


def captured(model, x) -> list[str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        model.fit(x)
    return buffer.getvalue().splitlines()


def test_verbose_prints_scikit_learns_messages():
    x = blobs()
    options = {"n_components": 3, "verbose_interval": 2, "tol": 1e-6,
               **same_start(x, "full")}
    theirs = captured(sklearn.mixture.GaussianMixture(verbose=1, **options), x)
    ours = captured(GaussianMixture(verbose=1, **options), x)
    assert ours == theirs
    theirs = captured(sklearn.mixture.GaussianMixture(verbose=2, **options), x)
    ours = captured(GaussianMixture(verbose=2, **options), x)
    assert len(ours) == len(theirs)
    # Times differ; the iteration numbers, changes and lower bound do not.
    pattern = re.compile(r"time lapse [0-9.]+s")
    assert [pattern.sub("", line) for line in ours] == [
        pattern.sub("", line) for line in theirs]


def test_sample_weight_equals_repeated_rows():
    x = blobs(5)
    weights = np.random.default_rng(0).integers(0, 4, size=len(x))
    start = same_start(x, "diag")
    options = {"n_components": 3, "covariance_type": "diag", "tol": 1e-8,
               "max_iter": 300, **start}
    weighted = GaussianMixture(**options).fit(x, sample_weight=weights)
    repeated = GaussianMixture(**options).fit(np.repeat(x, weights, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    # The same sums in another order (see test_em_gaussian_mixture_weighted).
    np.testing.assert_allclose(weighted.means_, repeated.means_, atol=1e-10)
    np.testing.assert_allclose(weighted.lower_bound_, repeated.lower_bound_,
                               atol=1e-10)


def test_partial_start_and_init_params_choices():
    x = blobs(6)
    means = np.array([[0.0, 0.0], [3.0, 3.0], [0.0, 5.0]])
    for init_params in ("kmeans", "k-means++", "random", "random_from_data"):
        model = GaussianMixture(3, means_init=means, init_params=init_params,
                                random_state=0, max_iter=0).fit(x)
        # max_iter=0 returns the start: the given means, drawn covariances.
        np.testing.assert_allclose(model.means_, means)
        assert model.n_iter_ == 0 and model.lower_bounds_ == []
        fitted = GaussianMixture(3, init_params=init_params, random_state=0,
                                 n_init=2).fit(x)
        assert fitted.converged_
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixture(2, init_params="spectral").fit(x)
    with pytest.raises(ValueError, match="should be normalized"):
        GaussianMixture(2, weights_init=[0.5, 0.6]).fit(x)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(x[:3])


def test_fresh_shapes_within_a_row_bucket_reuse_the_compiled_fit():
    """Tiny data sets are padded to a row bucket: scikit-learn's estimator checks
    fit dozens of sizes, and each new shape would compile again."""
    x = blobs(7)
    GaussianMixture(2, random_state=0).fit(x[:20])
    before = run_restarts._cache_size()
    for rows in (25, 31, 47, 64):
        GaussianMixture(2, random_state=rows).fit(x[:rows])
    assert run_restarts._cache_size() == before


def test_fitted_estimator_pickles_and_saves_with_identical_predictions(tmp_path):
    x = blobs(8)
    model = GaussianMixture(3, covariance_type="tied", random_state=0).fit(x)
    copied = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copied.predict_proba(x), model.predict_proba(x))
    model.save(tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert type(loaded) is GaussianMixture
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.score_samples(x), model.score_samples(x))
    assert loaded.lower_bounds_ == model.lower_bounds_
    assert loaded.n_iter_ == model.n_iter_
    # No pickle anywhere: the arrays load with allow_pickle=False, the
    # metadata is JSON naming the format, its version and the model.
    with np.load(tmp_path / "model" / "arrays.npz", allow_pickle=False) as stored:
        assert {"weights_", "means_", "covariances_"} <= set(stored.files)
    import json

    document = json.loads((tmp_path / "model" / "model.json").read_text())
    assert document["format"] == "latentmix-model"
    assert document["format_version"] == 1
    assert document["model"] == "GaussianMixture"
    assert document["covariance_type"] == "tied"
    assert document["columns"] == ["x0", "x1"] and document["dtype"] == "float64"


def test_from_result_bridges_the_functional_api():
    import jax

    from latentmix.inference.em import fit_gaussian_mixture

    x = blobs(9)
    result = fit_gaussian_mixture(x, 3, covariance_type="diag", num_restarts=3,
                                  rng_key=jax.random.key(0))
    model = GaussianMixture.from_result(result, covariance_type="diag",
                                        feature_names=["u", "v"])
    assert model.n_iter_ == int(result.num_iters)
    np.testing.assert_allclose(model.params_.covariances,
                               result.params.covariances)
    import pandas as pd

    frame = pd.DataFrame(x, columns=["u", "v"])
    # The mean log-likelihood at the returned parameters, recomputed.
    np.testing.assert_allclose(model.score(frame), result.log_likelihood,
                               atol=1e-12)


def test_sample_posterior_relabelled_with_log_likelihood_for_loo():
    import arviz as az

    from latentmix.models import gaussian_mixture as gm

    x = load_old_faithful().to_numpy()
    model = GaussianMixture(2, n_init=3, random_state=0).fit(x)
    idata = model.sample_posterior(x, "nuts", num_chains=2, num_warmup=200,
                                   num_samples=200, random_state=1,
                                   posterior_predictive=True)
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood",
            "posterior_predictive"} <= set(idata.groups())
    np.testing.assert_array_equal(idata.observed_data["x"].values, x)
    log_lik = idata.log_likelihood["x"].values
    assert log_lik.shape == (2, 200, len(x))
    assert idata.posterior_predictive["x"].shape == (2, 200, len(x), 2)
    # Draw by draw, the log-likelihood is the mixture density of the user's data
    # (the sampler ran in standardised coordinates): the same float64 formula.
    sites = {name: idata.posterior[name].values[1, 17]
             for name in ("weights", "means", "covariances")}
    np.testing.assert_allclose(
        log_lik[1, 17], gm.log_likelihood(gm.from_sites(sites), x), atol=1e-10)
    # Relabelled to the EM fit: every posterior mean within 3 posterior sds of
    # the EM estimate (272 rows, weak prior: the MLE sits within a fraction of
    # a posterior sd of the posterior mean).
    means = idata.posterior["means"]
    shift = np.abs(means.mean(("chain", "draw")).values - model.means_)
    assert np.all(shift < 3 * means.std(("chain", "draw")).values)
    loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo.elpd_loo)
    assert float(loo.pareto_k.max()) < 0.7  # importance sampling is reliable
    # az.compare of K = 1 against K = 2 on these data (K = 2 ranked first) is
    # test_demo's: the demo's story samples both through this method.
    vi = model.sample_posterior(x, "vi", num_chains=2, num_samples=100,
                                random_state=3)
    assert vi.posterior["means"].shape == (2, 100, 2, 2)
    assert vi.log_likelihood["x"].shape == (2, 100, len(x))
    assert "lp" in vi.sample_stats and vi.posterior.attrs["method"] == "vi"
    with pytest.raises(ValueError, match="method must be one of"):
        model.sample_posterior(x, "gibbs")


def test_crosscheck_returns_the_library_cross_check():
    from latentmix.inference.crosscheck import CrossCheck

    x = load_old_faithful().to_numpy()
    model = GaussianMixture(2, covariance_type="diag", random_state=0).fit(x)
    check = model.crosscheck(x, methods=(), random_state=0, num_restarts=3)
    assert isinstance(check, CrossCheck)
    assert check.table["passed"].all(), check.table.to_string()
    assert "EM, same start and iterations" in set(check.table["check"])


FRESH_PROCESS = r"""
import warnings
import jax
import numpy as np
import sklearn.mixture
from sklearn.linear_model import BayesianRidge
from latentmix.inference import (BayesianLinearRegression, GaussianMixture,
                                 MultinomialMixture)

assert not jax.config.jax_enable_x64
rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(80, 2)) + 4])
x = x * [1e3, 1e-3] + [5e4, 0.0]  # columns six orders of magnitude apart
reference = sklearn.mixture.GaussianMixture(2, random_state=0).fit(x)
start = dict(weights_init=reference.weights_, means_init=reference.means_ * 1.01,
             precisions_init=reference.precisions_, tol=1e-8, max_iter=300)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    theirs = sklearn.mixture.GaussianMixture(2, **start).fit(x)
ours = GaussianMixture(2, **start).fit(x)
assert ours.means_.dtype == np.float64 and ours.n_iter_ == theirs.n_iter_
assert np.allclose(ours.means_, theirs.means_, rtol=1e-10, atol=0)
assert np.allclose(ours.score_samples(x), theirs.score_samples(x), rtol=1e-10)
assert ours.score_samples(x).dtype == np.float64
counts = rng.multinomial(20, [0.5, 0.3, 0.2], size=50)
mixture = MultinomialMixture(2, random_state=0).fit(counts)
assert mixture.probs_.dtype == np.float64
assert mixture.score_samples(counts).dtype == np.float64
X = rng.normal(size=(60, 3)) * [1e4, 1.0, 1e-4]
y = X @ [1e-4, 2.0, 3e4] + rng.normal(size=60)
regression = BayesianLinearRegression().fit(X, y)
ridge = BayesianRidge(tol=1e-12, max_iter=100000).fit(X, y)
assert np.allclose(regression.predict(X), ridge.predict(X), rtol=1e-6)
assert not jax.config.jax_enable_x64
print("ok")
"""


def test_estimators_compute_in_float64_without_jax_x64(tmp_path):
    """A fresh process without jax_enable_x64: float64 data are fitted in
    float64 (inference.precision) and match scikit-learn to 1e-10."""
    import subprocess
    import sys

    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    completed = subprocess.run([sys.executable, str(script)], capture_output=True,
                               text=True, timeout=600,
                               env={**__import__("os").environ,
                                    "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "ok"
