"""EM for the multinomial mixture against MAP (AutoDelta), NUTS and VI on `model`.

* MAP-EM with Dirichlet priors maximises log p(x, theta) over the simplex. NumPyro's
  AutoDelta optimises an unconstrained vector u but evaluates the same log joint at
  theta = T(u), with no Jacobian term (its docstring: "MAP inference in
  constrained space"); T is a bijection onto the interior, so both find the same
  mode. A Jacobian term (the mode of the density of u) would instead move the
  answer by O(1/N), about 5e-3 here, which the test checks it would see.
* NUTS on a well-separated 4-component mixture, chains started from permuted EM
  solutions: raw chains disagree on labels (huge R-hat); relabelled against the
  EM fit they agree (R-hat <= 1.01) and contain it in their 94% HDIs. With flat
  Dirichlet(1) priors the posterior mode is the maximum-likelihood estimate.
* Mean-field VI (AutoNormal) agrees with NUTS in posterior means and sds.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import (
    constrain_fn,
    log_density,
    potential_energy,
    unconstrain_fn,
)

from latentmix.data.simulate_counts import sample_multinomial_mixture
from latentmix.inference.align import align_components, relabel_samples
from latentmix.inference.em import MultinomialMixturePrior, fit_multinomial_mixture
from latentmix.inference.mcmc import RHAT_THRESHOLD, diagnostics
from latentmix.inference.svi import fit_map, fit_vi
from latentmix.models.multinomial_mixture import MultinomialMixtureParams, model

NUM_COMPONENTS = 4


@pytest.mark.slow
def test_map_em_equals_autodelta_map(rng_key):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=2)
    counts, _ = sample_multinomial_mixture(
        np.array([0.4, 0.6]), probs, rng.poisson(10, 100) + 1,
        rng_key=jax.random.key(0),
    )
    prior = MultinomialMixturePrior(weight_concentration=2.0, probs_concentration=2.0)
    em = fit_multinomial_mixture(
        counts, 2, prior=prior, num_restarts=5, tol=1e-14, max_iters=20_000,
        rng_key=rng_key,
    )
    assert bool(em.converged)
    # EM's objective is the model's log joint per basket (same priors, same
    # likelihood with its coefficient): equal to float64 rounding.
    em_sites = {"weights": em.params.weights, "probs": em.params.probs}
    log_joint_em, _ = log_density(model, (counts, 2), {"prior": prior}, em_sites)
    np.testing.assert_allclose(
        float(em.log_likelihood) * len(counts), float(log_joint_em), rtol=1e-13
    )
    # AutoDelta from a start pulled halfway towards uniform.
    start = {
        "weights": 0.5 * np.asarray(em.params.weights) + 0.25,
        "probs": 0.6 * np.asarray(em.params.probs) + 0.1,
    }
    result = fit_map(
        model, counts, 2, prior=prior, rng_key=jax.random.key(2), num_steps=3000,
        init_params=start, learning_rate=0.05, final_lr_ratio=1e-3,
    )
    svi_params = MultinomialMixtureParams(
        result.params["weights"], result.params["probs"]
    )
    aligned, _ = align_components(svi_params, em.params)
    # Adam with a decayed step settles ~1e-8 from a smooth optimum; 1e-6 keeps two
    # orders of margin and is 4 orders below the O(1/N) shift a Jacobian causes.
    np.testing.assert_allclose(aligned.weights, em.params.weights, atol=1e-6)
    np.testing.assert_allclose(aligned.probs, em.params.probs, atol=1e-6)
    # EM's closed form is the exact mode: no point SVI found is higher.
    log_joint_svi, _ = log_density(model, (counts, 2), {"prior": prior}, result.params)
    assert float(log_joint_em) >= float(log_joint_svi) - 1e-9
    # Power of the check: the mode of the unconstrained density (log joint plus
    # log |Jacobian|, NumPyro's potential energy) lies far outside 1e-6.
    kwargs = {"prior": prior}
    start_u = unconstrain_fn(model, (counts, 2), kwargs, em_sites)
    flat, unravel = ravel_pytree(start_u)

    def energy(z):
        return potential_energy(model, (counts, 2), kwargs, unravel(z))

    value_and_grad = jax.jit(jax.value_and_grad(energy))
    optimum = scipy.optimize.minimize(
        lambda z: tuple(np.asarray(v) for v in value_and_grad(z)), np.asarray(flat),
        jac=True, method="BFGS", options={"gtol": 1e-9},
    )
    jacobian_mode = constrain_fn(model, (counts, 2), kwargs, unravel(optimum.x))
    shift = np.abs(np.asarray(jacobian_mode["probs"]) - em.params.probs).max()
    assert shift > 1e-3, shift


@pytest.fixture(scope="module")
def separated_mixture():
    """200 baskets from 4 components, each favouring its own category."""
    probs = np.full((NUM_COMPONENTS, 6), 0.06)
    for k in range(NUM_COMPONENTS):
        probs[k, k] += 0.5
        probs[k, (k + 1) % 6] += 0.14
    probs /= probs.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    counts, _ = sample_multinomial_mixture(
        np.array([0.2, 0.3, 0.25, 0.25]), probs, rng.poisson(12, 200) + 4,
        rng_key=jax.random.key(3),
    )
    em = fit_multinomial_mixture(
        counts, NUM_COMPONENTS, num_restarts=10, tol=1e-12, max_iters=5000,
        rng_key=jax.random.key(1),
    )
    assert bool(em.converged)
    return counts, em.params


@pytest.fixture(scope="module")
def nuts_draws(separated_mixture):
    """4 chains x 500 draws, chain c started from the EM fit's labels rolled by c."""
    counts, em_params = separated_mixture
    inits = []
    for shift in range(4):
        order = np.roll(np.arange(NUM_COMPONENTS), shift)
        sites = {"weights": em_params.weights[order], "probs": em_params.probs[order]}
        inits.append(unconstrain_fn(model, (counts, NUM_COMPONENTS), {}, sites))
    init_params = {name: jnp.stack([u[name] for u in inits]) for name in inits[0]}
    mcmc = MCMC(
        NUTS(model), num_warmup=300, num_samples=500, num_chains=4,
        chain_method="parallel", progress_bar=False,
    )
    mcmc.run(
        jax.random.key(5), counts, NUM_COMPONENTS, init_params=init_params,
        extra_fields=("diverging",),
    )
    posterior = {
        name: np.asarray(value)
        for name, value in mcmc.get_samples(group_by_chain=True).items()
    }
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return az.from_dict(posterior=posterior, sample_stats={"diverging": diverging})


@pytest.mark.slow
def test_nuts_label_switching_and_relabelling(separated_mixture, nuts_draws):
    _, em_params = separated_mixture
    raw = diagnostics(nuts_draws, warn=False)
    assert int(raw["divergences"].iloc[0]) == 0
    # Each chain sits in its own labelling: R-hat of probs far above 1.01.
    assert raw.filter(like="probs", axis=0)["r_hat"].max() > 1.5
    relabelled, permutations = relabel_samples(nuts_draws, em_params)
    # Chain c was started at roll(labels, c): relabelling undoes exactly that.
    for chain in range(4):
        expected = np.roll(np.arange(NUM_COMPONENTS), chain)
        assert np.all(permutations[chain] == np.argsort(expected))
    table = diagnostics(relabelled, warn=False)
    assert table["r_hat"].max() <= RHAT_THRESHOLD, table
    assert table["ok"].all(), table
    hdi = az.hdi(relabelled, hdi_prob=0.94)
    for name in ("weights", "probs"):
        low = hdi[name].sel(hdi="lower").values
        high = hdi[name].sel(hdi="higher").values
        estimate = np.asarray(getattr(em_params, name))
        assert np.all((low <= estimate) & (estimate <= high)), name


@pytest.mark.slow
def test_mean_field_vi_agrees_with_nuts(separated_mixture, nuts_draws):
    counts, em_params = separated_mixture
    relabelled, _ = relabel_samples(nuts_draws, em_params)
    result = fit_vi(
        model, counts, NUM_COMPONENTS, rng_key=jax.random.key(7), guide="normal",
        num_steps=1500, learning_rate=0.02,
        init_params={"weights": em_params.weights, "probs": em_params.probs},
    )
    draws = result.guide.sample_posterior(
        jax.random.key(8), result.guide_params, sample_shape=(4000,)
    )
    for name in ("weights", "probs"):
        nuts = relabelled.posterior[name].values.reshape(-1, *draws[name].shape[1:])
        nuts_mean, nuts_sd = nuts.mean(axis=0), nuts.std(axis=0)
        vi = np.asarray(draws[name])
        # Means within 0.2 posterior sd: Monte Carlo error is ~0.02 sd on each
        # side (ESS > 2000 for NUTS, 4000 independent VI draws), so 0.2 sd leaves
        # room for the stochastic optimiser and still flags a shifted mode.
        assert np.all(np.abs(vi.mean(axis=0) - nuts_mean) < 0.2 * nuts_sd), name
        # Sds within 25%: mean-field VI under-disperses only along posterior
        # correlations, which are weak between well-separated components.
        ratio = vi.std(axis=0) / nuts_sd
        assert np.all((ratio > 0.75) & (ratio < 1.25)), (name, ratio)
