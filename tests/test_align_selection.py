"""Component alignment, relabelling of posterior draws, and model selection.

References: known permutations (alignment must invert them), scikit-learn's
``bic`` / ``aic`` and the free-parameter counts, scipy's entropy for ICL, and the
true number of components of simulated data (cross-check 9 of issue 3).
"""

import warnings
from typing import NamedTuple

import arviz as az
import jax
import numpy as np
import pytest
import threadpoolctl
from scipy.special import entr
from sklearn.mixture import GaussianMixture

from latentmix.data.simulate import simulate_gaussian_mixture
from latentmix.inference.align import (
    align_components,
    gaussian_jeffreys_divergence,
    relabel_samples,
)
from latentmix.inference.selection import (
    gmm_aic,
    gmm_bic,
    gmm_icl,
    select_num_components,
)
from latentmix.models import gaussian_mixture as gm
from latentmix.models.gaussian_mixture import GMMParams
from latentmix.models.multinomial_mixture import MultinomialMixtureParams


def separated_params(num_components=4, num_features=2, seed=0):
    rng = np.random.default_rng(seed)
    means = np.arange(num_components)[:, None] * 5.0 + rng.normal(
        size=(num_components, num_features)
    )
    factors = rng.normal(size=(num_components, num_features, num_features)) * 0.3
    covs = factors @ np.swapaxes(factors, 1, 2) + 0.5 * np.eye(num_features)
    return GMMParams(rng.dirichlet(np.ones(num_components) * 5), means, covs)


def test_jeffreys_divergence_matches_two_kl_divergences():
    """J = KL(a||b) + KL(b||a), each from the closed form written out here."""
    params = separated_params(2, 3)
    (ma, mb), (sa, sb) = params.means, params.covariances

    def kl(m0, s0, m1, s1):
        inv1 = np.linalg.inv(s1)
        return 0.5 * (
            np.trace(inv1 @ s0) + (m1 - m0) @ inv1 @ (m1 - m0) - 3
            + np.log(np.linalg.det(s1) / np.linalg.det(s0))
        )

    ours = gaussian_jeffreys_divergence(
        params.means, params.covariances, params.means, params.covariances
    )
    np.testing.assert_allclose(ours[0, 1], kl(ma, sa, mb, sb) + kl(mb, sb, ma, sa),
                               rtol=1e-10)
    np.testing.assert_allclose(np.diag(ours), 0.0, atol=1e-10)


def test_align_components_inverts_a_known_permutation():
    reference = separated_params()
    shuffle = np.array([2, 0, 3, 1])
    rng = np.random.default_rng(1)
    # A nearby fit, labelled differently.
    noisy = GMMParams(
        reference.weights,
        reference.means + rng.normal(scale=0.1, size=reference.means.shape),
        reference.covariances * 1.05,
    )
    shuffled = jax.tree_util.tree_map(lambda a: a[shuffle], noisy)
    aligned, permutation = align_components(shuffled, reference)
    np.testing.assert_array_equal(shuffle[permutation], np.arange(4))
    np.testing.assert_array_equal(aligned.means, noisy.means)


class CategoricalMixture(NamedTuple):
    """A stand-in for the multinomial mixture's parameters."""

    weights: np.ndarray
    probs: np.ndarray


def test_align_components_is_generic_over_named_tuples():
    reference = CategoricalMixture(
        np.array([0.5, 0.3, 0.2]),
        np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),
    )
    shuffle = np.array([1, 2, 0])
    shuffled = CategoricalMixture(*(a[shuffle] for a in reference))
    aligned, permutation = align_components(shuffled, reference)
    np.testing.assert_array_equal(shuffle[permutation], np.arange(3))
    np.testing.assert_array_equal(aligned.probs, reference.probs)
    # A custom cost (here: on weights only) replaces the default.
    _, by_weight = align_components(
        shuffled, reference,
        cost_fn=lambda p, r: np.abs(np.asarray(r.weights)[:, None] - p.weights),
    )
    np.testing.assert_array_equal(by_weight, permutation)


def _permuted_draws(reference, covariance_type, num_chains=3, num_draws=40, seed=2,
                    per_chain=False):
    """Draws near the reference with a random labelling per (chain, draw), or
    one labelling per chain (the switching NUTS shows between chains)."""
    rng = np.random.default_rng(seed)
    k = reference.weights.shape[0]
    sites = {name: np.asarray(v) for name, v in
             gm.to_sites(reference, covariance_type).items()}
    perms = np.stack([[rng.permutation(k) for _ in range(num_draws)]
                      for _ in range(num_chains)])
    if per_chain:
        perms = np.stack([np.roll(np.arange(k), c) for c in range(num_chains)])
        perms = np.repeat(perms[:, None, :], num_draws, axis=1)
    draws = {}
    for name, value in sites.items():
        shape = (num_chains, num_draws) + value.shape
        noisy = value + rng.normal(scale=0.02, size=shape)
        if name in ("weights", "means", "covariances", "variances"):
            index = perms.reshape(perms.shape + (1,) * (value.ndim - 1))
            noisy = np.take_along_axis(noisy, index, axis=2)
        draws[name] = noisy
    return draws, perms


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_relabel_samples_undoes_every_permutation(covariance_type):
    reference = separated_params(3)
    if covariance_type != "full":
        diag = np.diagonal(reference.covariances, axis1=1, axis2=2)
        covs = {
            "tied": np.broadcast_to(reference.covariances[0], (3, 2, 2)),
            "diag": diag[..., None] * np.eye(2),
            "spherical": diag[:, :1, None] * np.eye(2),
        }[covariance_type]
        reference = reference._replace(covariances=np.array(covs))
    draws, perms = _permuted_draws(reference, covariance_type)
    relabelled, found = relabel_samples(draws, reference)
    # Draw component perms[c, s, i] was put at i; relabelling must undo it.
    restored = np.take_along_axis(perms, found, axis=2)
    np.testing.assert_array_equal(restored, np.broadcast_to(np.arange(3), perms.shape))
    sites = gm.to_sites(reference, covariance_type)
    for name, value in relabelled.items():
        # Only the 0.02 noise remains (> 10 noise sd is impossible).
        assert np.max(np.abs(value - np.asarray(sites[name]))) < 0.2
    if covariance_type == "tied":
        np.testing.assert_array_equal(relabelled["covariance"], draws["covariance"])


def test_relabel_samples_permutes_group_weights_with_the_weights():
    """group_weights (chain, draw, g, k) follow the permutation on their last axis."""
    rng = np.random.default_rng(3)
    num_chains, num_draws, num_groups = 2, 5, 3
    reference = MultinomialMixtureParams(
        weights=np.array([0.2, 0.3, 0.5]),
        probs=np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]),
    )
    group_weights = rng.dirichlet(np.ones(3), size=num_groups)  # (g, k) truth
    perms = np.stack([[rng.permutation(3) for _ in range(num_draws)]
                      for _ in range(num_chains)])
    draws = {
        "weights": np.take_along_axis(
            np.broadcast_to(reference.weights, perms.shape), perms, axis=2),
        "probs": np.take_along_axis(
            np.broadcast_to(reference.probs, perms.shape + (3,)),
            perms[..., None], axis=2),
        "group_weights": np.take_along_axis(
            np.broadcast_to(group_weights, (num_chains, num_draws, num_groups, 3)),
            perms[:, :, None, :], axis=3),
    }
    relabelled, _ = relabel_samples(draws, reference)
    # Exact: every draw is a permutation of the truth, so relabelling restores it.
    np.testing.assert_array_equal(
        relabelled["group_weights"],
        np.broadcast_to(group_weights, (num_chains, num_draws, num_groups, 3)))
    np.testing.assert_array_equal(
        relabelled["weights"], np.broadcast_to(reference.weights, perms.shape))
    idata, _ = relabel_samples(az.from_dict(posterior=draws), reference)
    np.testing.assert_array_equal(idata.posterior["group_weights"].values,
                                  relabelled["group_weights"])


def test_relabel_samples_accepts_inference_data():
    reference = separated_params(3)
    draws, _ = _permuted_draws(reference, "full", num_chains=4, per_chain=True)
    idata = az.from_dict(posterior=draws)
    raw_rhat = float(az.rhat(idata, var_names=["means"])["means"].max())
    relabelled, _ = relabel_samples(idata, reference)
    assert isinstance(relabelled, az.InferenceData)
    fixed_rhat = float(az.rhat(relabelled, var_names=["means"])["means"].max())
    # Chains labelled differently sit on clusters 5 apart: R-hat far above 1;
    # after relabelling the chains are i.i.d. noise around the same values.
    assert raw_rhat > 1.1 and fixed_rhat < 1.05
    # The input is left untouched.
    np.testing.assert_array_equal(idata.posterior["means"].values, draws["means"])


# --------------------------------------------------------- cross-check 9


def _sklearn_params(model, covariance_type, num_features):
    covs = model.covariances_
    k = model.weights_.shape[0]
    eye = np.eye(num_features)
    covs = {
        "full": lambda: covs,
        "tied": lambda: np.broadcast_to(covs, (k, num_features, num_features)),
        "diag": lambda: covs[..., None] * eye,
        "spherical": lambda: covs[:, None, None] * eye,
    }[covariance_type]()
    return GMMParams(model.weights_, model.means_, np.array(covs))


@pytest.mark.parametrize("covariance_type", gm.COVARIANCE_TYPES)
def test_bic_and_aic_equal_scikit_learn(covariance_type):
    x = np.random.default_rng(3).normal(size=(120, 3)) * [1.0, 2.0, 0.5]
    with threadpoolctl.threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianMixture(3, covariance_type=covariance_type,
                                random_state=0).fit(x)
    params = _sklearn_params(model, covariance_type, 3)
    # Same formula on the same log-likelihood (float64 sums of 120 terms).
    np.testing.assert_allclose(gmm_bic(params, x, covariance_type), model.bic(x),
                               rtol=1e-12)
    np.testing.assert_allclose(gmm_aic(params, x, covariance_type), model.aic(x),
                               rtol=1e-12)
    resp = model.predict_proba(x)
    np.testing.assert_allclose(
        gmm_icl(params, x, covariance_type), model.bic(x) + 2 * entr(resp).sum(),
        rtol=1e-10,
    )


@pytest.mark.slow
def test_bic_picks_the_true_number_of_components():
    truth = separated_params(3, 2, seed=4)
    # 150 rows and max_iters=100: the shapes of the EM tests, so K = 3 reuses
    # their compiled program.
    x, _ = simulate_gaussian_mixture(jax.random.key(4), truth, 150)
    selection = select_num_components(
        np.asarray(x), [2, 3, 4], num_restarts=3, rng_key=jax.random.key(5),
        max_iters=100,
    )
    assert selection.best_num_components == 3
    table = selection.table.set_index("num_components")
    assert list(table.columns) == [
        "log_likelihood", "num_parameters", "aic", "bic", "icl", "converged"
    ]
    # The table's BIC is the one of the returned fit (same function, same data).
    np.testing.assert_allclose(
        table.loc[3, "bic"], gmm_bic(selection.fits[3].params, np.asarray(x)),
        rtol=1e-12,
    )
    assert (table["icl"] >= table["bic"] - 1e-9).all()
    # The likelihood grows with K, the penalty makes BIC turn back up.
    assert table["log_likelihood"].is_monotonic_increasing


def test_select_num_components_rejects_bad_arguments():
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="criterion"):
        select_num_components(x, [1, 2], criterion="dic", rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="distinct"):
        select_num_components(x, [2, 2], rng_key=jax.random.key(0))
