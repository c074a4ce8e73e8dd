"""MAP, VI and NUTS on the Bayesian linear regression model against exact answers.

With both precisions fixed the posterior of w is Gaussian, N(m, S), known in
closed form, so each generic inference wrapper has an exact target:

* ``fit_map`` (AutoDelta): m, the ridge solution (deterministic, strongly convex
  objective; tolerance from the gradient at the returned point);
* ``fit_vi(guide="mvn")``: N(m, S) exactly; ``fit_vi(guide="normal")``: means m and
  variances 1 / (S^-1)_jj, the known mean-field under-dispersion (tolerance from the
  Monte Carlo noise of the stochastic ELBO gradients, see ``vi_tolerance``);
* ``run_nuts``: moments within Monte Carlo error, as z-scores with ArviZ's
  ESS-based MCSE.

With the precisions sampled (the hierarchical model) the exact marginal posterior
of the log-precisions is computed on a grid from the closed-form evidence, and NUTS
is checked against that quadrature.
"""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.linalg
from numpyro.infer.util import log_density

from latentmix.inference.em import fit_linear_regression
from latentmix.inference.mcmc import SamplerWarning, diagnostics, run_nuts
from latentmix.inference.svi import fit_map, fit_vi
from latentmix.models.linear_regression import (
    HYPERPRIOR_CONCENTRATION,
    HYPERPRIOR_RATE,
    model,
    posterior,
    posterior_and_log_evidence,
)

PRIOR_PRECISION = 2.0
NOISE_PRECISION = 4.0
# |z| < 4: two-sided false-alarm probability 6.3e-5 per score, so even the ~20
# scores of one test keep a family-wise rate near 1e-3 (Bonferroni).
Z_LIMIT = 4.0


def simulate(seed, num_rows, num_predictors, *, correlation=0.0,
             prior_precision=PRIOR_PRECISION, noise_precision=NOISE_PRECISION):
    """Draw (X, y) from the model with NumPy, columns of X correlated as asked."""
    rng = np.random.default_rng(seed)
    cov = np.full((num_predictors, num_predictors), correlation)
    np.fill_diagonal(cov, 1.0)
    X = rng.multivariate_normal(np.zeros(num_predictors), cov, size=num_rows)
    w = rng.normal(0.0, prior_precision**-0.5, size=num_predictors)
    return X, X @ w + rng.normal(0.0, noise_precision**-0.5, size=num_rows)


@pytest.fixture(scope="module")
def data():
    # Correlated columns make the mean-field variances 1/(S^-1)_jj clearly smaller
    # than the true marginal variances S_jj, so the VI checks can tell them apart.
    return simulate(0, 50, 4, correlation=0.8)


@pytest.fixture(scope="module")
def exact(data):
    """Closed-form posterior, and an independent ridge solve for its mean."""
    X, y = data
    post = posterior(X, y, PRIOR_PRECISION, NOISE_PRECISION)
    penalty = PRIOR_PRECISION / NOISE_PRECISION
    design = np.vstack([X, np.sqrt(penalty) * np.eye(X.shape[1])])
    target = np.concatenate([y, np.zeros(X.shape[1])])
    ridge = scipy.linalg.lstsq(design, target)[0]
    np.testing.assert_allclose(post.mean, ridge, rtol=1e-10)
    return np.asarray(post.mean), np.asarray(post.cov), ridge


# --- MAP --------------------------------------------------------------------------


def test_map_equals_ridge_solution(data, exact, rng_key):
    X, y = data
    mean, cov, ridge = exact
    result = fit_map(model, X, y, rng_key=rng_key, num_steps=3000, learning_rate=0.05,
                     prior_precision=PRIOR_PRECISION, noise_precision=NOISE_PRECISION)
    w_map = np.asarray(result.params["w"])

    # Gradient of the log joint at the returned point, by autodiff of NumPyro's own
    # log density (not through SVI). The objective is quadratic in w with Hessian
    # -S^-1, so |w - m| <= ||S||_2 |grad| exactly: the optimiser's error bound.
    def log_joint(w):
        return log_density(model, (X, y), {"prior_precision": PRIOR_PRECISION,
                                           "noise_precision": NOISE_PRECISION},
                           {"w": w})[0]

    gradient = np.asarray(jax.grad(log_joint)(jnp.asarray(w_map)))
    optimiser_error = np.linalg.norm(cov, 2) * np.linalg.norm(gradient)
    assert optimiser_error < 1e-8 * np.abs(ridge).max()  # it did converge
    # Plus float rounding of the two solves (kappa * eps, with room).
    tol = optimiser_error + 1e-10 * np.abs(ridge).max()
    np.testing.assert_allclose(w_map, ridge, rtol=0, atol=tol)
    assert result.losses.shape == (3000,)


def test_map_starts_from_init_params(data, rng_key):
    X, y = data
    start = np.array([1.0, -2.0, 3.0, 0.5])
    # polish=False: the BFGS polish would (rightly) go on to the mode.
    result = fit_map(model, X, y, rng_key=rng_key, num_steps=1, learning_rate=1e-9,
                     init_params={"w": start}, prior_precision=PRIOR_PRECISION,
                     noise_precision=NOISE_PRECISION, polish=False)
    # One Adam step moves each coordinate by about the learning rate.
    np.testing.assert_allclose(result.params["w"], start, atol=1e-8)


# --- VI ---------------------------------------------------------------------------

VI_STEPS = 2000
VI_PARTICLES = 64
VI_FINAL_LR_RATIO = 1e-3


def vi_tolerance(num_steps, num_particles, final_lr_ratio):
    """Error of SVI's last iterate in units of the posterior sd (and of log sd).

    The ELBO gradient is a Monte Carlo estimate from ``num_particles`` draws. Near
    the optimum Adam's update is noise-dominated, and the iterate stops moving once
    the learning rate, decaying by a factor e every
    tau = num_steps / ln(1 / final_lr_ratio) steps, is too small to follow the
    noise. The last iterate is then in effect an average over about
    num_particles * tau gradient draws, which gives an error of about
    1 / (2 sqrt(num_particles * tau)) (for 2000 steps, 64 particles: 3.7e-3; the
    RMS over 4 seeds and 4 coordinates measured 0.8 to 1.4 times this for the
    means and log sds of both guides, the maximum 2.7 times). We allow 6 times.
    """
    tau = num_steps / np.log(1.0 / final_lr_ratio)
    return 6.0 / (2.0 * np.sqrt(num_particles * tau))


def run_vi(data, rng_key, guide):
    X, y = data
    return fit_vi(model, X, y, rng_key=rng_key, guide=guide, num_steps=VI_STEPS,
                  learning_rate=0.05, final_lr_ratio=VI_FINAL_LR_RATIO,
                  num_particles=VI_PARTICLES, prior_precision=PRIOR_PRECISION,
                  noise_precision=NOISE_PRECISION)


@pytest.mark.slow
def test_full_rank_vi_recovers_the_exact_posterior(data, exact, rng_key):
    mean, cov, _ = exact
    result = run_vi(data, rng_key, "mvn")
    # w is real-valued, so NumPyro's unconstrained space is w space itself.
    q = result.guide.get_posterior(result.guide_params)
    sd = np.sqrt(np.diag(cov))
    tol = vi_tolerance(VI_STEPS, VI_PARTICLES, VI_FINAL_LR_RATIO)
    assert np.all(np.abs((np.asarray(q.loc) - mean) / sd) < tol)
    q_cov = np.asarray(q.covariance_matrix)
    assert np.all(np.abs(np.log(np.sqrt(np.diag(q_cov)) / sd)) < tol)
    # Covariances in correlation units; a relative error e in each sd is 2e here.
    assert np.all(np.abs(q_cov - cov) / np.outer(sd, sd) < 2 * tol)
    np.testing.assert_allclose(result.params["w"], q.loc)  # the median is the mean


@pytest.mark.slow
def test_mean_field_vi_has_exact_means_and_conditional_variances(data, exact,
                                                                 rng_key):
    mean, cov, _ = exact
    result = run_vi(data, rng_key, "normal")
    loc = np.asarray(result.guide_params["w_auto_loc"])
    scale = np.asarray(result.guide_params["w_auto_scale"])
    sd = np.sqrt(np.diag(cov))
    # Minimising KL(q || p) over factorised Gaussians gives the exact means and
    # variances 1 / (S^-1)_jj, the conditional variances (Bishop PRML 10.1.2).
    mean_field_sd = 1.0 / np.sqrt(np.diag(np.linalg.inv(cov)))
    assert np.all(mean_field_sd < 0.8 * sd)  # the two targets differ by > 20 %
    tol = vi_tolerance(VI_STEPS, VI_PARTICLES, VI_FINAL_LR_RATIO)
    assert np.all(np.abs((loc - mean) / sd) < tol)
    assert np.all(np.abs(np.log(scale / mean_field_sd)) < tol)


def test_fit_vi_rejects_bad_arguments(data, rng_key):
    X, y = data
    with pytest.raises(ValueError, match=r"guide must be one of \['mvn', 'normal'\]"):
        fit_vi(model, X, y, rng_key=rng_key, guide="delta", num_steps=10)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        fit_vi(model, X, y, rng_key=rng_key, num_steps=0)
    with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
        fit_map(model, X, y, rng_key=rng_key, num_steps=10, learning_rate=-1.0)


# --- NUTS, fixed precisions -------------------------------------------------------


@pytest.fixture(scope="module")
def nuts_fixed(data):
    X, y = data
    return run_nuts(model, X, y, rng_key=jax.random.key(1), num_chains=4,
                    num_warmup=500, num_samples=1000,
                    prior_precision=PRIOR_PRECISION, noise_precision=NOISE_PRECISION)


def z_score(draws, expected):
    """(mean of draws - expected) / MCSE, with ArviZ's ESS-based MCSE of the mean.

    ``draws`` has shape (chain, draw).
    """
    draws = np.asarray(draws, dtype=np.float64)
    return (draws.mean() - expected) / az.mcse(draws, method="mean")


@pytest.mark.slow
def test_nuts_mean_and_covariance_match_closed_form(nuts_fixed, exact):
    mean, cov, _ = exact
    w = nuts_fixed.posterior["w"].values  # (chain, draw, p)
    assert w.dtype == np.float64 and w.shape == (4, 1000, 4)
    num_predictors = w.shape[-1]
    scores = {}
    for j in range(num_predictors):
        scores[f"mean[{j}]"] = z_score(w[..., j], mean[j])
    # E[(w_i - m_i)(w_j - m_j)] = S_ij with the exact m: a plain mean of draws, so
    # its MCSE comes from the same ESS machinery.
    deviation = w - mean
    for i in range(num_predictors):
        for j in range(i, num_predictors):
            product = deviation[..., i] * deviation[..., j]
            scores[f"cov[{i},{j}]"] = z_score(product, cov[i, j])
    # sd: for Gaussian draws MCSE(sd) ~ sd / sqrt(2 ESS), with the ESS of the
    # squared deviations (the quantity the sd is built from).
    sd = np.sqrt(np.diag(cov))
    for j in range(num_predictors):
        ess = az.ess(np.asarray(deviation[..., j] ** 2), method="mean")
        sample_sd = w[..., j].std()
        scores[f"sd[{j}]"] = (sample_sd - sd[j]) / (sd[j] / np.sqrt(2 * ess))
    bad = {name: z for name, z in scores.items() if abs(z) >= Z_LIMIT}
    assert not bad, bad
    assert len(scores) == 18


@pytest.mark.slow
def test_nuts_inference_data_and_diagnostics(nuts_fixed, data):
    _, y = data
    assert {"posterior", "sample_stats", "observed_data"} <= set(nuts_fixed.groups())
    np.testing.assert_array_equal(nuts_fixed.observed_data["y"].values, y)
    assert nuts_fixed.sample_stats["diverging"].shape == (4, 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplerWarning)  # a clean run: no warning
        table = diagnostics(nuts_fixed)
    assert list(table.columns) == ["r_hat", "ess_bulk", "ess_tail", "divergences",
                                   "ok"]
    assert list(table.index) == [f"w[{j}]" for j in range(4)]
    assert table["ok"].all()
    assert (table["divergences"] == 0).all()


def test_run_nuts_is_reproducible(data):
    X, y = data
    kwargs = dict(rng_key=jax.random.key(7), num_chains=2, num_warmup=30,
                  num_samples=20, prior_precision=PRIOR_PRECISION,
                  noise_precision=NOISE_PRECISION)
    first = run_nuts(model, X, y, **kwargs).posterior["w"].values
    second = run_nuts(model, X, y, **kwargs).posterior["w"].values
    np.testing.assert_array_equal(first, second)


def test_diagnostics_warn_on_unmixed_chains_and_divergences():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4, 200)) + np.arange(4)[:, None] * 5.0  # 4 modes
    diverging = np.zeros((4, 200), dtype=bool)
    diverging[1, 17] = True
    idata = az.from_dict(posterior={"theta": draws},
                         sample_stats={"diverging": diverging})
    with pytest.warns(SamplerWarning) as record:
        table = diagnostics(idata)
    message = str(record[0].message)
    assert "r_hat > 1.01 for ['theta']" in message
    assert "ESS < 100 per chain for ['theta']" in message
    assert "1 divergent transition(s)" in message
    assert not table.loc["theta", "ok"]
    assert table.loc["theta", "divergences"] == 1


def test_diagnostics_are_not_rounded_past_the_gate():
    """Two chains 0.29 sd apart: ArviZ's rank-normalised R-hat is a little above
    1.01; az.summary's default rounding to 2 decimals would print 1.01 and pass
    the gate. The table must hold az.rhat's unrounded value and fail it."""
    rng = np.random.default_rng(3)
    draws = rng.normal(size=(2, 4000)) + np.array([[0.0], [0.29]])
    idata = az.from_dict(posterior={"theta": draws})
    exact = float(az.rhat(idata)["theta"])
    assert 1.01 < exact < 1.015  # the case rounding would hide
    with pytest.warns(SamplerWarning):
        table = diagnostics(idata)
    assert table.loc["theta", "r_hat"] == exact
    assert not table.loc["theta", "ok"]


def test_run_nuts_rejects_bad_arguments(data, rng_key):
    X, y = data
    with pytest.raises(ValueError, match="num_chains must be an integer >= 1"):
        run_nuts(model, X, y, rng_key=rng_key, num_chains=0, num_warmup=1,
                 num_samples=1)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        run_nuts(model, X, y, rng_key=rng_key, num_warmup=1, num_samples=0)
    start = {"w": np.zeros(X.shape[1])}
    with pytest.raises(ValueError, match="holds 3 per-chain starts but num_chains=4"):
        run_nuts(model, X, y, rng_key=rng_key, num_warmup=1, num_samples=1,
                 init_params=[start] * 3, prior_precision=1.0, noise_precision=1.0)


def test_run_nuts_starts_each_chain_where_asked(rng_key):
    import numpyro

    def two_modes():
        # Modes at -10 and +10, 200 sd apart: NUTS never crosses between them, so
        # where each chain ends up says where it started.
        mixture = dist.MixtureSameFamily(
            dist.Categorical(jnp.array([0.5, 0.5])),
            dist.Normal(jnp.array([-10.0, 10.0]), 0.1),
        )
        numpyro.sample("z", mixture)

    starts = [{"z": -10.0}, {"z": 10.0}]
    idata = run_nuts(two_modes, rng_key=rng_key, num_chains=2, num_warmup=50,
                     num_samples=50, init_params=starts)
    chain_means = idata.posterior["z"].values.mean(axis=1)
    # Each mode has sd 0.1, so a chain mean lies within 0.2 of its mode even if
    # the 50 draws were a single independent one (2 sd); the other mode is 20 away.
    np.testing.assert_allclose(chain_means, [-10.0, 10.0], atol=0.2)


# --- NUTS, hierarchical model (precisions sampled) --------------------------------


def log_precision_grid(X, y, center, half_widths, num_points):
    """Exact posterior of (log alpha, log beta) on a grid, and E[w | grid point].

    p(log a, log b | y) is proportional to p(y | a, b) Gamma(a) a Gamma(b) b (the
    last factors are the Gamma hyperprior of ``model`` and the Jacobian of the log);
    the evidence is the closed form, and w | a, b, y is the conjugate posterior.
    """
    axes = [np.linspace(c - low, c + high, n)
            for c, (low, high), n in zip(center, half_widths, num_points, strict=True)]
    grid_a, grid_b = np.meshgrid(*axes, indexing="ij")
    hyperprior = dist.Gamma(HYPERPRIOR_CONCENTRATION, HYPERPRIOR_RATE)
    X, y = jnp.asarray(X), jnp.asarray(y)

    def point(log_a, log_b):
        post, log_ev = posterior_and_log_evidence(X, y, jnp.exp(log_a), jnp.exp(log_b))
        log_prior = (hyperprior.log_prob(jnp.exp(log_a)) + log_a
                     + hyperprior.log_prob(jnp.exp(log_b)) + log_b)
        return log_ev + log_prior, post.mean

    log_post, means = jax.jit(jax.vmap(point))(jnp.ravel(grid_a), jnp.ravel(grid_b))
    weights = np.exp(np.asarray(log_post) - np.max(log_post))
    weights /= weights.sum()
    return (weights.reshape(grid_a.shape), grid_a, grid_b,
            np.asarray(means).reshape(*grid_a.shape, -1))


@pytest.mark.slow
def test_hierarchical_nuts_matches_quadrature_of_exact_marginal():
    X, y = simulate(3, 50, 4, prior_precision=0.5)
    em = fit_linear_regression(X, y)
    # The hyperprior is nearly flat in log-precision, so the marginal posterior
    # peaks near the EM (type-II ML) estimate: centre the grid there. Its lower
    # tail in log alpha decays only like alpha^(p/2), hence the wide lower side.
    center = np.log([float(em.params.prior_precision),
                     float(em.params.noise_precision)])
    weights, log_a, log_b, means = log_precision_grid(
        X, y, center, half_widths=[(14.0, 8.0), (2.5, 2.5)], num_points=(300, 150)
    )
    # The grid holds the whole posterior: negligible mass on its border.
    border = (weights[0].sum() + weights[-1].sum() + weights[:, 0].sum()
              + weights[:, -1].sum())
    assert border < 1e-8
    exact_moments = {
        "log_prior_precision": (log_a * weights).sum(),
        "log_noise_precision": (log_b * weights).sum(),
    }
    exact_var = {name: (((grid - exact_moments[name]) ** 2) * weights).sum()
                 for name, grid in [("log_prior_precision", log_a),
                                    ("log_noise_precision", log_b)]}
    exact_w = np.tensordot(weights, means, axes=([0, 1], [0, 1]))

    idata = run_nuts(model, X, y, rng_key=jax.random.key(2), num_chains=4,
                     num_warmup=500, num_samples=1000)
    table = diagnostics(idata, warn=False)
    assert table["ok"].all(), table
    draws = {
        "log_prior_precision": np.log(idata.posterior["prior_precision"].values),
        "log_noise_precision": np.log(idata.posterior["noise_precision"].values),
    }
    scores = {}
    for name, value in draws.items():
        scores[f"E {name}"] = z_score(value, exact_moments[name])
        squared = (value - exact_moments[name]) ** 2
        scores[f"Var {name}"] = z_score(squared, exact_var[name])
    w = idata.posterior["w"].values
    for j in range(w.shape[-1]):
        scores[f"E w[{j}]"] = z_score(w[..., j], exact_w[j])
    bad = {name: z for name, z in scores.items() if abs(z) >= Z_LIMIT}
    assert not bad, bad
