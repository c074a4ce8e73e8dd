"""EM for the Gaussian mixture: cross-checks 2-6 of issue 3, faults and bad input.

References are independent of our EM code: closed forms (K = 1), jax.grad of the
expected complete-data log-likelihood written with jax.scipy.stats (cross-check
2), scipy densities for the ELBO identity (3), EM theory for the monotone trace
(4), scikit-learn's GaussianMixture run from the same start (5) and with its own
restarts on real data (6).

Shapes are shared between tests (n = 150, d = 2, k = 3, max_iters = 100) so that
the jitted core compiles once per covariance type and init kind.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
import threadpoolctl
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as hs
from scipy.special import rel_entr
from sklearn.mixture import GaussianMixture

from latentmix.data.datasets import PENGUIN_FEATURES, load_old_faithful, load_penguins
from latentmix.data.validation import DataWarning
from latentmix.inference.em import (
    ConvergenceWarning,
    GMMPrior,
    fit_gaussian_mixture,
    fit_gaussian_mixture_restarts,
)
from latentmix.inference.em import gaussian_mixture as em
from latentmix.inference.em.driver import AllRestartsFailedError
from latentmix.inference.em.gaussian_mixture.restarts import run_restarts
from latentmix.inference.em.gaussian_mixture.steps import second_moment
from latentmix.models import gaussian_mixture as gm
from latentmix.models.gaussian_mixture import GMMParams

COVARIANCE_TYPES = gm.COVARIANCE_TYPES
NUM_ROWS, NUM_FEATURES, NUM_COMPONENTS, MAX_ITERS = 150, 2, 3, 100


def blobs(seed, offset=0.0):
    """Three 2-D clusters of 50 rows, moderately overlapping."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [4.0, 3.0], [-3.0, 4.0]])
    scales = np.array([[1.0, 0.6], [0.8, 1.2], [0.7, 0.7]])
    x = np.concatenate(
        [rng.normal(c, s, (NUM_ROWS // 3, NUM_FEATURES)) for c, s in zip(
            centres, scales, strict=True)]
    )
    return x + offset


def start_params(covariance_type, dtype=np.float64, offset=0.0):
    """A fixed start with the structure of the type, off the optimum."""
    weights = np.array([0.2, 0.5, 0.3])
    means = np.array([[1.0, -1.0], [3.0, 2.0], [-2.0, 3.0]]) + offset
    if covariance_type == "full":
        covs = np.array(
            [[[2.0, 0.3], [0.3, 1.0]], np.eye(2), [[0.5, -0.1], [-0.1, 1.5]]]
        )
    elif covariance_type == "tied":
        covs = np.broadcast_to([[1.5, 0.2], [0.2, 1.0]], (3, 2, 2))
    elif covariance_type == "diag":
        covs = np.array([[2.0, 1.0], [1.0, 0.5], [0.7, 1.4]])[..., None] * np.eye(2)
    else:
        covs = np.array([2.0, 1.0, 0.5])[:, None, None] * np.eye(2)
    return GMMParams(*(np.asarray(a, dtype) for a in (weights, means, covs)))


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_gaussian_mixture(*args, **kwargs)


# ------------------------------------------------------------ closed forms


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_one_component_is_the_sample_mean_and_biased_covariance(covariance_type):
    x = blobs(0)
    result = fit_gaussian_mixture(
        x, 1, covariance_type=covariance_type, rng_key=jax.random.key(0), tol=1e-12
    )
    covariance = np.cov(x.T, bias=True)
    expected = {
        "full": covariance,
        "tied": covariance,
        "diag": np.diag(np.diag(covariance)),
        "spherical": np.mean(np.diag(covariance)) * np.eye(2),
    }[covariance_type] + 1e-6 * np.eye(2)
    # K = 1 has a unique fixed point reached after one M-step; float64 sums of
    # 150 terms of size ~10 agree to ~1e-13.
    np.testing.assert_allclose(result.params.weights, [1.0], atol=1e-14)
    np.testing.assert_allclose(result.params.means[0], x.mean(0), atol=1e-12)
    np.testing.assert_allclose(result.params.covariances[0], expected, atol=1e-12)
    np.testing.assert_allclose(
        result.log_likelihood,
        st.multivariate_normal(x.mean(0), expected).logpdf(x).mean(),
        atol=1e-12,
    )


# ---------------------------------------------- cross-check 2: M-step optimum


def _unconstrained(params, covariance_type):
    """Free coordinates: logits, means, a Cholesky factor or log-variances."""
    covs = np.asarray(params.covariances)
    if covariance_type == "full":
        shape = np.linalg.cholesky(covs)
    elif covariance_type == "tied":
        shape = np.linalg.cholesky(covs[0])
    elif covariance_type == "diag":
        shape = np.log(np.diagonal(covs, axis1=1, axis2=2))
    else:
        shape = np.log(covs[:, 0, 0])
    return (jnp.log(jnp.asarray(params.weights)), jnp.asarray(params.means),
            jnp.asarray(shape))


def _constrained(free, covariance_type):
    logits, means, shape = free
    k, d = means.shape
    if covariance_type == "full":
        tril = jnp.tril(shape)
        covs = tril @ jnp.swapaxes(tril, 1, 2)
    elif covariance_type == "tied":
        tril = jnp.tril(shape)
        covs = jnp.broadcast_to(tril @ tril.T, (k, d, d))
    elif covariance_type == "diag":
        covs = jnp.exp(shape)[..., None] * jnp.eye(d)
    else:
        covs = jnp.exp(shape)[:, None, None] * jnp.eye(d)
    return GMMParams(jax.nn.softmax(logits), means, covs)


def _expected_complete_log_likelihood(params, x, resp):
    """sum_ic gamma_ic [log w_c + log N(x_i | mu_c, S_c)] with jax.scipy densities."""
    log_comp = jnp.stack(
        [
            jax.scipy.stats.multivariate_normal.logpdf(x, m, c)
            for m, c in zip(params.means, params.covariances, strict=True)
        ],
        axis=1,
    )
    return jnp.sum(resp * (jnp.log(params.weights) + log_comp))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("with_prior", [False, True])
def test_m_step_is_a_stationary_point(covariance_type, with_prior):
    """Cross-check 2: grad of E_q[log p(x, t)] (+ log prior) is ~0 at the M-step."""
    rng = np.random.default_rng(11)
    x = jnp.asarray(blobs(1))
    resp = jnp.asarray(rng.dirichlet(np.ones(3) * 0.7, size=NUM_ROWS))
    prior = gm.default_prior(x, 3)._replace(weight_concentration=jnp.asarray(1.5))
    prior = prior if with_prior else None
    params = em.m_step(x, resp, covariance_type, reg_covar=0.0, prior=prior)

    def target(free):
        theta = _constrained(free, covariance_type)
        value = _expected_complete_log_likelihood(theta, x, resp)
        if prior is not None:
            value = value + gm.log_prior(theta, prior, covariance_type)
        return value

    free = _unconstrained(params, covariance_type)
    gradient = jax.jit(jax.grad(target))
    grads = gradient(free)
    # The objective is a sum of 150 terms of size ~10; float64 gradients of it
    # are accurate to ~1e-12, and the 10 eps added to N_c shifts the optimum by
    # ~1e-15 relative. A wrong M-step formula gives gradients of order 1.
    for grad in jax.tree_util.tree_leaves(grads):
        assert float(jnp.max(jnp.abs(grad))) < 1e-8
    # Sanity: the same gradient away from the M-step is far from zero.
    moved = jax.tree_util.tree_map(lambda a: a + 0.1, free)
    worst = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(
        gradient(moved)))
    assert worst > 1e-2


def test_weight_lagrange_multiplier_is_the_number_of_rows():
    """Appendix: with L = Q + lambda (1 - sum_c alpha_c), dL/dalpha_c =
    N_c / alpha_c - lambda = 0, so at the M-step the raw derivative of the
    expected complete-data log-likelihood N_c / alpha_c is the same lambda for
    every component, and summing alpha_c lambda = N_c over c gives lambda = N.
    jax.grad with respect to the weights as free variables (no simplex); float64
    sums of 150 terms, so 1e-12 relative."""
    rng = np.random.default_rng(12)
    x = jnp.asarray(blobs(2))
    resp = jnp.asarray(rng.dirichlet(np.ones(3) * 0.7, size=NUM_ROWS))
    params = em.m_step(x, resp, "full", reg_covar=0.0, prior=None)
    gradient = jax.grad(lambda w: _expected_complete_log_likelihood(
        params._replace(weights=w), x, resp))(params.weights)
    np.testing.assert_allclose(np.asarray(gradient), NUM_ROWS, rtol=1e-12)
    np.testing.assert_allclose(float(jnp.sum(params.weights)), 1.0, rtol=1e-14)


# -------------------------------------------------------- cross-check 3: ELBO


def test_elbo_bounds_the_log_likelihood_and_the_gap_is_kl():
    rng = np.random.default_rng(12)
    x = blobs(2)
    params = start_params("full")
    log_comp = np.stack(
        [st.multivariate_normal(m, c).logpdf(x) for m, c in zip(
            params.means, params.covariances, strict=True)], axis=1
    ) + np.log(params.weights)
    total = np.sum(np.log(np.exp(log_comp).sum(1)))
    posterior = np.exp(log_comp - np.log(np.exp(log_comp).sum(1, keepdims=True)))
    for _ in range(5):
        q = rng.dirichlet(np.ones(3) * 0.5, size=NUM_ROWS)
        bound = float(em.elbo(params, x, q))
        kl = np.sum(rel_entr(q, posterior))
        # Both sides are sums of ~450 terms of size ~10: 1e-9 absolute.
        assert bound <= total + 1e-9
        np.testing.assert_allclose(total - bound, kl, atol=1e-9)
    # Right after the E-step (q = responsibilities) the bound touches.
    resp = np.asarray(gm.responsibilities(params, x))
    np.testing.assert_allclose(float(em.elbo(params, x, resp)), total, atol=1e-9)


# ---------------------------------------------- cross-check 4: monotone trace


def _check_monotone(restarts, x):
    checked = 0
    for r in range(len(restarts.failed)):
        if restarts.failed[r] or restarts.num_reseeds[r]:
            continue  # a reseed may lower the objective by design
        num_iters = int(restarts.results.num_iters[r])
        trace = np.asarray(restarts.results.trace[r][:num_iters])
        assert np.all(np.isfinite(trace))  # a NaN would pass a naive diff test
        # EM never decreases the objective; what may is its evaluation in
        # float64: ~1e-15 |ll| for a mean of 150 log-densities, plus the
        # rounding of the expanded squares the E-step computes (see
        # _expanded_square_error), large only near a collapsing component.
        params = jax.tree_util.tree_map(lambda leaf, r=r: np.asarray(leaf[r]),
                                        restarts.results.params)
        noise = 1e-12 * np.abs(trace[1:]) + _expanded_square_error(params, x)
        assert np.all(np.diff(trace) >= -noise)
        final = float(restarts.results.log_likelihood[r])
        assert final >= trace[-1] - 1e-12 * abs(final)
        checked += 1
    return checked


def _expanded_square_error(params, x):
    """A bound on the rounding error of the mean log-density as the E-step
    computes it near ``params`` (scipy's densities for the responsibilities).

    The E-step reads (x - mu_c)^T P_c (x - mu_c) off expanded products
    (x^T P x - 2 x^T P mu + mu^T P mu, on data centred at their mean): terms
    of size (|x| + |mu_c|)^2 ||P_c|| whose float64 sum is off by a few eps
    times that (``models.gaussian_mixture._expanded_squares``: about
    log10(1 + R^2) digits cancel). The mean log-density is off by half the
    responsibility-weighted mean of those errors; 8 eps covers the three
    terms' roundings and the GEMM's sums over d = 2 columns. Tiny for a
    well-resolved fit; about 1e-7 when a component of 3 rows collapses to a
    variance of 5e-8 at distance 6 (hypothesis found seed=121516 with a
    decrease of 5e-10 there).
    """
    centre = x.mean(axis=0)
    xc, means = x - centre, params.means - centre
    log_dens = np.stack([
        np.log(w) + st.multivariate_normal(m, c, allow_singular=True).logpdf(xc)
        for w, m, c in zip(params.weights, means, params.covariances,
                           strict=True)], axis=1)
    resp = np.exp(log_dens - log_dens.max(axis=1, keepdims=True))
    resp /= resp.sum(axis=1, keepdims=True)
    largest_precision = 1.0 / np.linalg.eigvalsh(params.covariances)[:, 0]
    size = ((np.linalg.norm(xc, axis=1)[:, None]
             + np.linalg.norm(means, axis=1)[None, :]) ** 2 * largest_precision)
    return 0.5 * 8 * np.finfo(np.float64).eps * np.mean(np.sum(resp * size, axis=1))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=hs.integers(0, 2**31 - 1), spread=hs.floats(0.2, 5.0))
# Found by hypothesis: a full covariance collapses onto the line through two rows
# (eigenvalues 1e-14 and 1); before the eigenvalue check of _mark_unresolved the
# trace then followed rounding noise (decreases of 3e-3) instead of failing.
@example(seed=101, spread=1.0)
def test_trace_never_decreases(covariance_type, seed, spread):
    """Cross-check 4 (ML, reg_covar = 0): random data, 4 random starts each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(3, 2))
    x = centres[rng.integers(0, 3, NUM_ROWS)] + rng.normal(
        size=(NUM_ROWS, 2)
    ) * rng.uniform(0.2, 2.0, (1, 2))
    restarts = fit_gaussian_mixture_restarts(
        x, 3, covariance_type=covariance_type, init="random_from_data",
        num_restarts=4, tol=1e-10, max_iters=MAX_ITERS, reg_covar=0.0,
        rng_key=jax.random.key(seed),
    )
    assume(_check_monotone(restarts, x) > 0)


@settings(max_examples=4, deadline=None)
@given(seed=hs.integers(0, 2**31 - 1))
def test_map_trace_never_decreases(seed):
    """MAP-EM never decreases the log posterior (full covariances)."""
    x = blobs(seed % 1000)
    prior = gm.default_prior(x, 3)
    restarts = fit_gaussian_mixture_restarts(
        x, 3, init="random_from_data", num_restarts=4, tol=1e-10,
        max_iters=MAX_ITERS, reg_covar=0.0, prior=prior, rng_key=jax.random.key(seed),
    )
    assert _check_monotone(restarts, x) > 0


# ------------------------------------------- cross-check 5: scikit-learn steps


def _sklearn_covariances(model, covariance_type):
    covs = model.covariances_
    return {
        "full": lambda: covs,
        "tied": lambda: np.broadcast_to(covs, (3, 2, 2)),
        "diag": lambda: covs[..., None] * np.eye(2),
        "spherical": lambda: covs[:, None, None] * np.eye(2),
    }[covariance_type]()


def _sklearn_precisions(params, covariance_type):
    covs = np.asarray(params.covariances)
    return {
        "full": lambda: np.linalg.inv(covs),
        "tied": lambda: np.linalg.inv(covs[0]),
        "diag": lambda: 1.0 / np.diagonal(covs, axis1=1, axis2=2),
        "spherical": lambda: 1.0 / covs[:, 0, 0],
    }[covariance_type]()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_start_same_iterations_as_scikit_learn(covariance_type):
    """Cross-check 5: tol = 0 and max_iters = 100 for both, same start."""
    x = blobs(3)
    start = start_params(covariance_type)
    result = quiet_fit(
        x, 3, covariance_type=covariance_type, init=start, tol=0.0,
        max_iters=MAX_ITERS,
    )
    with threadpoolctl.threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = GaussianMixture(
            3, covariance_type=covariance_type, tol=0.0, max_iter=MAX_ITERS,
            weights_init=start.weights, means_init=start.means,
            precisions_init=_sklearn_precisions(start, covariance_type),
            reg_covar=1e-6,
        ).fit(x)
    assert int(result.num_iters) == reference.n_iter_ == MAX_ITERS
    # Same float64 arithmetic up to operation order (and scikit-learn's one-pass
    # E[x^2] - mu^2 for diag/tied on uncentred data, our two-pass on centred
    # data): ~1e-15 relative per iteration, amplified little by 100 contractive
    # EM steps. Measured max difference ~1e-14; 1e-10 leaves room for BLAS.
    np.testing.assert_allclose(result.params.weights, reference.weights_, atol=1e-10)
    np.testing.assert_allclose(result.params.means, reference.means_, atol=1e-10)
    np.testing.assert_allclose(
        result.params.covariances, _sklearn_covariances(reference, covariance_type),
        atol=1e-10,
    )
    np.testing.assert_allclose(result.trace, reference.lower_bounds_, atol=1e-10)
    np.testing.assert_allclose(result.log_likelihood, reference.score(x), atol=1e-10)


# --------------------------------------------- cross-check 6: real data sets


def _best_sklearn(x, num_components, covariance_type, num_restarts):
    # One BLAS thread: on 2 shared cores scikit-learn's threads oversubscribe
    # (10x slower); the result does not depend on it.
    with threadpoolctl.threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianMixture(
            num_components, covariance_type=covariance_type, n_init=num_restarts,
            tol=1e-8, max_iter=2000, random_state=0,
        ).fit(x)
    return model.score(x)


@pytest.mark.slow
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_old_faithful_best_of_restarts_at_least_scikit_learn(covariance_type):
    """Cross-check 6 on Old Faithful (272 x 2), K = 3, 10 restarts each."""
    x = load_old_faithful().to_numpy()
    ours = quiet_fit(
        x, 3, covariance_type=covariance_type, num_restarts=10, tol=1e-8,
        max_iters=2000, rng_key=jax.random.key(1),
    )
    theirs = _best_sklearn(x, 3, covariance_type, 10)
    # Both stop when the mean log-likelihood changes by < 1e-8 per iteration;
    # with linear convergence at rate r the remaining gain is < 1e-8 r/(1-r),
    # below 1e-6 for r < 0.99. A worse local optimum would differ by >= 1e-3.
    assert float(ours.log_likelihood) >= theirs - 1e-6


@pytest.mark.slow
def test_penguins_best_of_restarts_at_least_scikit_learn():
    """Cross-check 6 on Palmer penguins (342 x 4, raw units), K = 3, full."""
    x = load_penguins()[PENGUIN_FEATURES].to_numpy()
    ours = quiet_fit(
        x, 3, num_restarts=10, tol=1e-8, max_iters=2000, rng_key=jax.random.key(2)
    )
    theirs = _best_sklearn(x, 3, "full", 10)
    assert float(ours.log_likelihood) >= theirs - 1e-6  # slack: see Old Faithful


# ------------------------------------------------------ restarts and jit


def test_best_restart_is_at_least_every_restart_and_reproducible():
    x = blobs(4)
    restarts = fit_gaussian_mixture_restarts(
        x, 3, num_restarts=6, init="random_from_data", rng_key=jax.random.key(3),
        max_iters=MAX_ITERS,
    )
    scores = np.asarray(restarts.results.log_likelihood)
    assert scores[restarts.best_index] == scores.max()
    best = fit_gaussian_mixture(
        x, 3, num_restarts=6, init="random_from_data", rng_key=jax.random.key(3),
        max_iters=MAX_ITERS,
    )
    assert float(best.log_likelihood) == scores.max()
    again = fit_gaussian_mixture(
        x, 3, num_restarts=6, init="random_from_data", rng_key=jax.random.key(3),
        max_iters=MAX_ITERS,
    )
    for a, b in zip(jax.tree_util.tree_leaves(best), jax.tree_util.tree_leaves(again),
                    strict=True):
        np.testing.assert_array_equal(a, b)  # same data + seed = same result


def test_no_recompilation_for_new_values_of_the_same_shapes():
    x = blobs(5)
    fit_gaussian_mixture(x, 3, rng_key=jax.random.key(0), max_iters=MAX_ITERS)
    size = run_restarts._cache_size()
    fit_gaussian_mixture(
        blobs(6), 3, rng_key=jax.random.key(1), tol=1e-5, reg_covar=1e-4,
        max_iters=MAX_ITERS,
    )
    assert run_restarts._cache_size() == size
    # A prior is a different program, but its values are traced too.
    for concentration in (1.0, 2.0):
        prior = gm.default_prior(x, 3)._replace(weight_concentration=concentration)
        fit_gaussian_mixture(x, 3, rng_key=jax.random.key(0), prior=prior,
                             init="random_from_data", max_iters=MAX_ITERS)
    assert run_restarts._cache_size() == size + 1


def test_relative_tolerance_stops_where_tol_zero_runs_max_iters():
    """tol=0 alone never stops before max_iters; rtol > 0 stops once
    |trace[t] - trace[t-1]| < rtol |trace[t]| (the driver's rule), converged,
    after the very same iterations (rtol is traced: the same program)."""
    x = blobs(0)
    options = dict(rng_key=jax.random.key(0), tol=0.0, max_iters=MAX_ITERS)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        absolute = fit_gaussian_mixture(x, 3, **options)
    size = run_restarts._cache_size()
    relative = fit_gaussian_mixture(x, 3, rtol=1e-6, **options)
    assert run_restarts._cache_size() == size
    assert int(absolute.num_iters) == MAX_ITERS and not bool(absolute.converged)
    assert bool(relative.converged)
    stop = int(relative.num_iters)
    assert 2 <= stop < MAX_ITERS
    trace = np.asarray(relative.trace)
    assert abs(trace[stop - 1] - trace[stop - 2]) < 1e-6 * abs(trace[stop - 1])
    np.testing.assert_array_equal(trace[:stop], np.asarray(absolute.trace)[:stop])
    with pytest.raises(ValueError, match="rtol"):
        fit_gaussian_mixture(x, 3, rtol=-1.0, **options)


def test_map_em_needs_concentration_at_least_one():
    x = blobs(0)
    prior = gm.default_prior(x, 3)._replace(weight_concentration=0.5)
    with pytest.raises(ValueError, match="MAP-EM needs"):
        fit_gaussian_mixture(x, 3, prior=prior, rng_key=jax.random.key(0))


# ------------------------------------------------------------ float32


def test_float32_far_from_the_origin_stays_close_to_float64():
    """Data offset by 1e4: centring inside the core keeps float32 accurate."""
    offset = 1e4
    x64 = blobs(7, offset=offset)
    x32 = x64.astype(np.float32)
    fits = [
        quiet_fit(x, 3, init=start_params("full", x.dtype, offset), tol=0.0,
                  max_iters=MAX_ITERS)
        for x in (x64, x32)
    ]
    assert fits[1].params.means.dtype == jnp.float32
    assert fits[1].log_likelihood.dtype == jnp.float32
    # float32 rounds 1e4 to ~1e-3 (its ulp); the cluster scales are ~1, so the
    # inputs differ by ~1e-3 relative to their spread squared... the parameters
    # follow: scikit-learn's array-API float32 tolerances (rtol 1e-3, atol 5e-4).
    np.testing.assert_allclose(fits[1].params.means, fits[0].params.means, atol=5e-3)
    np.testing.assert_allclose(
        fits[1].params.covariances, fits[0].params.covariances, rtol=1e-3, atol=5e-4
    )
    np.testing.assert_allclose(fits[1].params.weights, fits[0].params.weights,
                               atol=5e-4)
    np.testing.assert_allclose(fits[1].log_likelihood, fits[0].log_likelihood,
                               rtol=1e-4)


# ------------------------------------------------------------------ faults


def test_a_failing_restart_is_discarded_and_never_converged():
    """A start whose covariances turn singular fails; the other one wins."""
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = np.repeat(points, NUM_ROWS // 3, axis=0)
    # Each component owns one repeated point: zero scatter, singular covariance.
    collapsing = GMMParams(np.full(3, 1 / 3), points, np.stack([0.01 * np.eye(2)] * 3))
    # Identical components stay identical under EM: the data's (regular) Gaussian.
    symmetric = GMMParams(np.full(3, 1 / 3), np.full((3, 2), 0.3),
                          np.stack([np.eye(2)] * 3))
    stacked = GMMParams(*(np.stack(pair) for pair in zip(
        collapsing, symmetric, strict=True)))
    restarts = fit_gaussian_mixture_restarts(
        x, 3, init=stacked, reg_covar=0.0, max_iters=MAX_ITERS
    )
    np.testing.assert_array_equal(restarts.failed, [True, False])
    assert not bool(restarts.results.converged[0])
    assert restarts.best_index == 1
    with pytest.warns(DataWarning, match="non-finite"):
        result = fit_gaussian_mixture(
            x, 3, init=stacked, reg_covar=0.0, max_iters=MAX_ITERS
        )
    assert np.isfinite(float(result.log_likelihood))
    np.testing.assert_allclose(result.params.covariances[0], np.cov(x.T, bias=True),
                               atol=1e-12)
    with pytest.raises(FloatingPointError, match="reg_covar"):
        fit_gaussian_mixture(x, 3, init=collapsing, reg_covar=0.0, max_iters=MAX_ITERS)


def test_all_restarts_failing_raises_the_drivers_error():
    """The one failure of every mixture fit: AllRestartsFailedError (still a
    FloatingPointError), whose message names the cause and the fixes."""
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = np.repeat(points, NUM_ROWS // 3, axis=0)
    collapsing = GMMParams(np.full(3, 1 / 3), points, np.stack([0.01 * np.eye(2)] * 3))
    with pytest.raises(AllRestartsFailedError, match="singular") as raised:
        fit_gaussian_mixture(x, 3, init=collapsing, reg_covar=0.0, max_iters=MAX_ITERS)
    assert type(raised.value) is AllRestartsFailedError
    assert isinstance(raised.value, FloatingPointError)
    assert "reg_covar (now 0.0)" in str(raised.value)


def test_fewer_distinct_rows_than_components_warns_and_reseeds():
    """2 distinct rows for 3 components (RELIABILITY P2, issue section 7)."""
    x = np.repeat(np.array([[0.0, 1.0], [2.0, 3.0]]), NUM_ROWS // 2, axis=0)
    with pytest.warns(DataWarning) as record:
        result = fit_gaussian_mixture(x, 3, rng_key=jax.random.key(0),
                                      max_iters=MAX_ITERS)
    messages = " ".join(str(w.message) for w in record)
    assert "only 2 distinct row" in messages and "reseeded" in messages
    assert np.isfinite(float(result.log_likelihood))
    np.testing.assert_allclose(np.sum(result.params.weights), 1.0, atol=1e-12)


def test_max_iters_warns_and_zero_iterations_return_the_start():
    x = blobs(8)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        fit_gaussian_mixture(x, 3, init=start_params("full"), tol=0.0,
                             max_iters=MAX_ITERS)
    start = start_params("full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit_gaussian_mixture(x, 3, init=start, max_iters=0)
    assert int(result.num_iters) == 0 and not bool(result.converged)
    np.testing.assert_allclose(result.params.means, start.means, atol=1e-12)
    np.testing.assert_allclose(
        result.log_likelihood, np.mean(gm.log_likelihood(start, x)), atol=1e-12
    )


# -------------------------------------------------------------- bad input (7)


def test_rejects_nan_and_inf():
    x = blobs(0)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_gaussian_mixture(x, 3, rng_key=jax.random.key(0))
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        fit_gaussian_mixture(x, 3, rng_key=jax.random.key(0))


def test_rejects_more_components_than_rows():
    with pytest.raises(ValueError, match="num_components=5 exceeds"):
        fit_gaussian_mixture(np.eye(4), 5, rng_key=jax.random.key(0))


def test_rejects_zero_features_and_too_few_rows():
    with pytest.raises(ValueError, match="column"):
        fit_gaussian_mixture(np.zeros((10, 0)), 2, rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="at least 2 row"):
        fit_gaussian_mixture(np.zeros((1, 2)), 1, rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="2-D"):
        fit_gaussian_mixture(np.zeros(10), 1, rng_key=jax.random.key(0))


def test_constant_column_fits_with_a_warning():
    x = np.column_stack([blobs(0)[:, 0], np.full(NUM_ROWS, 7.0)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fit_gaussian_mixture(x, 3, rng_key=jax.random.key(0),
                                      max_iters=MAX_ITERS)
    messages = [str(w.message) for w in record]
    # One warning about the column, no spurious "collapsed" one about it.
    assert len(messages) == 1 and "constant column(s) [1]" in messages[0]
    # The constant column's variance is exactly the floor in every component.
    np.testing.assert_allclose(result.params.covariances[:, 1, 1], 1e-6, rtol=1e-6)
    np.testing.assert_allclose(result.params.means[:, 1], 7.0, atol=1e-12)
    with pytest.raises(ValueError, match="reg_covar=0"):
        fit_gaussian_mixture(x, 3, reg_covar=0.0, rng_key=jax.random.key(0))


def test_rejects_object_dtype():
    x = np.array([[1, "a"], [2, "b"], [3, "c"]], dtype=object)
    with pytest.raises(TypeError, match="numeric"):
        fit_gaussian_mixture(x, 2, rng_key=jax.random.key(0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tol": -1e-3}, "tol"),
        ({"max_iters": -1}, "max_iters"),
        ({"num_restarts": 0}, "num_restarts"),
        ({"reg_covar": -1.0}, "reg_covar"),
        ({"covariance_type": "banded"}, "covariance_type"),
        ({"init": "k-means"}, "init"),  # "kmeans" is a start since issue 14
        ({"rng_key": None}, "rng_key"),
    ],
)
def test_rejects_bad_options(kwargs, match):
    options = {"rng_key": jax.random.key(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_gaussian_mixture(blobs(0), 3, **options)


def test_rejects_bad_num_components_and_prior_type():
    with pytest.raises(ValueError, match="num_components"):
        fit_gaussian_mixture(blobs(0), 0, rng_key=jax.random.key(0))
    with pytest.raises(TypeError, match="GMMPrior"):
        fit_gaussian_mixture(blobs(0), 3, prior={"dof": 3}, rng_key=jax.random.key(0))
    assert GMMPrior is gm.GMMPrior


# ------------------------------------------------------------ screened restarts


def test_screened_restarts_continue_the_best_start_exactly():
    """screen_iters = 3 of 25 with tol = 0: every start runs 3 iterations, the best
    one runs on to 25; EM is deterministic, so that restart equals a plain fit
    from the same start (float64, the same operations in the same order)."""
    x = blobs(4)
    rng = np.random.default_rng(4)
    starts = [
        start_params("full")._replace(means=start_params("full").means
                                      + rng.normal(scale=2.0, size=(3, 2)))
        for _ in range(4)
    ]
    stacked = GMMParams(*(np.stack(leaves) for leaves in zip(*starts, strict=True)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        screened = fit_gaussian_mixture_restarts(
            x, 3, init=stacked, num_restarts=4, tol=0.0, max_iters=25,
            screen_iters=3,
        )
        best = screened.best_index
        plain = fit_gaussian_mixture_restarts(
            x, 3, init=starts[best], tol=0.0, max_iters=25
        )
        # The screening's choice: the best objective after 3 iterations.
        three = fit_gaussian_mixture_restarts(
            x, 3, init=stacked, num_restarts=4, tol=0.0, max_iters=3
        )
    assert best == int(np.argmax(three.results.log_likelihood))
    assert int(screened.results.num_iters[best]) == 25
    others = [r for r in range(4) if r != best]
    assert np.all(np.asarray(screened.results.num_iters)[others] == 3)
    np.testing.assert_allclose(
        np.asarray(screened.results.trace[best]), np.asarray(plain.results.trace[0]),
        rtol=0, atol=1e-12,
    )
    for a, b in zip(screened.results.params, plain.results.params, strict=True):
        np.testing.assert_allclose(np.asarray(a[best]), np.asarray(b[0]), atol=1e-12)


def test_screen_iters_is_checked():
    x = blobs(0)
    with pytest.raises(ValueError, match="screen_iters=10 must be below max_iters"):
        fit_gaussian_mixture(x, 3, num_restarts=2, screen_iters=10, max_iters=10,
                             rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="screen_iters"):
        fit_gaussian_mixture(x, 3, screen_iters=-1, rng_key=jax.random.key(0))


# ------------------------------------------------- sufficient statistics


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("route", ["products", "none"])
def test_statistics_equal_direct_sums(covariance_type, route):
    """GMMStats against sums written out with scipy responsibilities.

    Both routes of ``statistics``: with the per-fit products ([x, x^2] for diag,
    [x, ||x||^2] for spherical, pairs for full, the (d, d) moment for tied) and
    without them (what the out-of-core fit uses).
    """
    x = blobs(0)
    x = x - x.mean(axis=0)  # the EM core always works on centred data
    params = start_params(covariance_type)
    densities = np.stack([
        w * st.multivariate_normal(m, c).pdf(x)
        for w, m, c in zip(params.weights, params.means, params.covariances,
                           strict=True)
    ], axis=1)
    resp = densities / densities.sum(axis=1, keepdims=True)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    weights = jnp.ones(len(x))
    if route == "none":
        products = None
    elif covariance_type == "tied":
        products = second_moment(jnp.asarray(x), weights)
    else:
        products = em.row_products(jnp.asarray(x), covariance_type)
    stats = em.statistics(params, jnp.asarray(x), weights, covariance_type,
                          products)
    shift = np.asarray(stats.shift)  # the means for "full" without products
    offsets = x[:, None, :] - shift[None]  # (n, k, d)
    expected_second = {
        "full": np.einsum("nc,ncd,nce->cde", resp, offsets, offsets),
        "tied": x.T @ x,
        "diag": np.einsum("nc,ncd->cd", resp, offsets**2),
        "spherical": np.einsum("nc,ncd->c", resp, offsets**2)[:, None],
    }[covariance_type]
    # float64 sums of 150 terms of size ~10: relative rounding ~1e-13; the
    # expanded squares of the product route lose about log10(1 + R^2) < 2 more
    # digits (R < 10 standard deviations here).
    tolerance = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats.counts, resp.sum(axis=0), **tolerance)
    np.testing.assert_allclose(stats.sums, np.einsum("nc,ncd->cd", resp, offsets),
                               **tolerance)
    np.testing.assert_allclose(stats.second, expected_second, **tolerance)
    np.testing.assert_allclose(stats.log_likelihood,
                               np.log(densities.sum(axis=1)).sum(), **tolerance)
    worst = np.argmin(densities.sum(axis=1))
    np.testing.assert_array_equal(stats.worst_row, x[worst])



# ------------------------------------------------------------ checklist item 9


def test_recovers_true_parameters_up_to_a_permutation():
    """Three well-separated 2-D clusters drawn with NumPy (not our sampler).

    Tolerances are 4 Monte Carlo standard errors of the estimators with known
    labels (the clusters are > 8 sd apart, so misclassification adds ~nothing):
    weight: sqrt(w(1-w)/n); mean coordinate: sqrt(Sigma_aa / n_k); covariance
    entry: sqrt((Sigma_aa Sigma_bb + Sigma_ab^2) / n_k) (Wishart variance). 18
    checks at 4 se: a false failure has probability ~1e-3 for a random seed.
    """
    from latentmix.inference.align import align_components

    rng = np.random.default_rng(90)
    truth = GMMParams(
        np.array([0.5, 0.3, 0.2]),
        np.array([[0.0, 0.0], [8.0, 1.0], [1.0, 9.0]]),
        np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]],
                  [[0.8, 0.0], [0.0, 0.8]]]))
    num_rows = 3000
    labels = rng.choice(3, num_rows, p=truth.weights)
    x = np.stack([rng.multivariate_normal(truth.means[k], truth.covariances[k])
                  for k in labels])
    fit = fit_gaussian_mixture(x, 3, num_restarts=5, rng_key=jax.random.key(91),
                               tol=1e-10, max_iters=1000)
    aligned, _ = align_components(fit.params, truth)
    n_k = num_rows * truth.weights
    weight_se = np.sqrt(truth.weights * (1 - truth.weights) / num_rows)
    assert np.all(np.abs(aligned.weights - truth.weights) < 4 * weight_se)
    variances = np.diagonal(truth.covariances, axis1=1, axis2=2)
    mean_se = np.sqrt(variances / n_k[:, None])
    assert np.all(np.abs(aligned.means - truth.means) < 4 * mean_se)
    cov_se = np.sqrt((variances[:, :, None] * variances[:, None, :]
                      + truth.covariances**2) / n_k[:, None, None])
    assert np.all(np.abs(aligned.covariances - truth.covariances) < 4 * cov_se)


def test_restarts_reach_different_local_optima_and_the_best_is_kept():
    """Five 2-D clusters (four on a square 4 apart, one off to the side), K = 5,
    starts at random rows: some restarts put two centres in one cluster and one
    across two. Each such restart has converged (its stopping rule fired: a
    fixed point, not an unfinished run) at a log-likelihood clearly below the
    best one; the fit keeps the best."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [4, 0], [0, 4], [4, 4], [9, 2]], float)
    labels = rng.choice(5, 1000, p=[0.3, 0.2, 0.2, 0.2, 0.1])
    x = centres[labels] + rng.normal(size=(1000, 2)) * 0.8
    options = dict(init="random_from_data", num_restarts=20,
                   rng_key=jax.random.key(1), max_iters=1000, tol=1e-8)
    restarts = fit_gaussian_mixture_restarts(x, 5, **options)
    scores = np.asarray(restarts.results.log_likelihood)
    assert np.all(np.asarray(restarts.results.converged))
    # Distinct optima: differences of 1e-3 nats per row are ~10^5 times the
    # stopping tolerance, so they are different fixed points, not rounding.
    distinct = np.unique(np.round(scores, 3))
    assert len(distinct) >= 3, scores
    assert scores.max() - scores.min() > 0.05
    best = fit_gaussian_mixture(x, 5, **options)
    assert float(best.log_likelihood) == scores.max()
    # The best optimum also beats the true parameters' likelihood (it is the MLE
    # up to the fit's tolerance), which a worse local optimum does not.
    truth = GMMParams(np.bincount(labels) / 1000, centres,
                      np.broadcast_to(0.64 * np.eye(2), (5, 2, 2)))
    at_truth = float(np.mean(gm.log_likelihood(truth, x)))
    assert scores.max() >= at_truth > scores.min()
