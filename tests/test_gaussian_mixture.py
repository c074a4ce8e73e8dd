"""The Gaussian mixture model module against scipy, scikit-learn and NumPyro.

Cross-check 1 of issue 3 (responsibilities = Bayes' rule with scipy densities) and
the model's densities: component log-densities, log-likelihood, the conjugate
prior (scipy's invwishart / invgamma / dirichlet / norm) and the NumPyro model's
log joint, which must equal log_prior + sum(log_likelihood) exactly (that equality
is what makes MAP-EM and AutoDelta optimise the same function).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from numpyro.infer.util import log_density
from sklearn.mixture import GaussianMixture

from latentmix.models import gaussian_mixture as gm
from latentmix.models.gaussian_mixture import GMMParams, GMMPrior

COVARIANCE_TYPES = gm.COVARIANCE_TYPES

# Float64 throughout: a log-density sums O(d) terms of O(10) each, so agreement
# to 1e-10 absolute leaves four orders of magnitude above rounding (~1e-14).
ATOL = 1e-10


def random_params(rng, num_components, num_features, covariance_type):
    """Random well-conditioned parameters with the structure of the type."""
    weights = rng.dirichlet(np.ones(num_components) * 2.0)
    means = rng.normal(scale=3.0, size=(num_components, num_features))
    if covariance_type == "full":
        factors = rng.normal(size=(num_components, num_features, num_features))
        covs = factors @ np.swapaxes(factors, 1, 2) + 0.5 * np.eye(num_features)
    elif covariance_type == "tied":
        factor = rng.normal(size=(num_features, num_features))
        shared = factor @ factor.T + 0.5 * np.eye(num_features)
        covs = np.broadcast_to(shared, (num_components, num_features, num_features))
    elif covariance_type == "diag":
        covs = rng.uniform(0.3, 2.0, (num_components, num_features))[..., None] * (
            np.eye(num_features)
        )
    else:
        covs = rng.uniform(0.3, 2.0, (num_components, 1, 1)) * np.eye(num_features)
    return GMMParams(weights, means, np.array(covs))


def random_prior(rng, num_features):
    factor = rng.normal(size=(num_features, num_features))
    return GMMPrior(
        weight_concentration=np.asarray(1.7),
        mean_prior=rng.normal(size=num_features),
        mean_precision=np.asarray(0.3),
        dof=np.asarray(num_features + 1.5),
        scale=factor @ factor.T + np.eye(num_features),
    )


def scipy_component_log_prob(params, x):
    return np.stack(
        [
            st.multivariate_normal(mean, cov).logpdf(x)
            for mean, cov in zip(params.means, params.covariances, strict=True)
        ],
        axis=1,
    ).reshape(len(x), -1)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_component_log_prob_matches_scipy(covariance_type):
    rng = np.random.default_rng(1)
    params = random_params(rng, 3, 4, covariance_type)
    x = rng.normal(scale=3.0, size=(50, 4))
    ours = gm.component_log_prob(params, x, covariance_type)
    np.testing.assert_allclose(ours, scipy_component_log_prob(params, x), atol=ATOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_responsibilities_are_bayes_rule_with_scipy_densities(covariance_type):
    """Cross-check 1: gamma_ic = w_c N_c(x_i) / sum_j w_j N_j(x_i); rows sum to 1."""
    rng = np.random.default_rng(2)
    params = random_params(rng, 4, 3, covariance_type)
    x = rng.normal(scale=4.0, size=(60, 3))
    joint = params.weights * np.exp(scipy_component_log_prob(params, x))
    expected = joint / joint.sum(axis=1, keepdims=True)
    resp = np.asarray(gm.responsibilities(params, x, covariance_type))
    # Probabilities in [0, 1]: absolute 1e-12 is ~1e4 ulps of 1.
    np.testing.assert_allclose(resp, expected, atol=1e-12)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(
        gm.log_likelihood(params, x, covariance_type), np.log(joint.sum(1)), atol=ATOL
    )


def test_responsibilities_do_not_underflow_far_from_every_component():
    """Rows 1e3 standard deviations away: exp of the densities is 0 in float64."""
    params = GMMParams(
        np.array([0.5, 0.5]), np.array([[0.0], [1.0]]), np.ones((2, 1, 1))
    )
    x = np.array([[1e3], [-1e3]])
    resp = np.asarray(gm.responsibilities(params, x, "full"))
    assert np.all(np.isfinite(resp))
    # Far right the component at 1 wins, far left the one at 0 (ratio exp(1e3)).
    np.testing.assert_allclose(resp, [[0.0, 1.0], [1.0, 0.0]], atol=1e-300)
    assert np.all(np.isfinite(gm.log_likelihood(params, x)))


def test_log_likelihood_equals_brute_force_enumeration():
    """sum_i log p(x_i) = log of the sum over all k^n assignments of the joint."""
    rng = np.random.default_rng(3)
    params = random_params(rng, 2, 2, "full")
    x = rng.normal(size=(4, 2))
    log_comp = scipy_component_log_prob(params, x) + np.log(params.weights)
    assignments = np.array(np.meshgrid(*[range(2)] * 4)).reshape(4, -1).T
    joint = [log_comp[np.arange(4), a].sum() for a in assignments]
    brute = np.log(np.sum(np.exp(joint)))
    np.testing.assert_allclose(np.sum(gm.log_likelihood(params, x)), brute, atol=ATOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_num_parameters_matches_scikit_learn(covariance_type):
    for num_components, num_features in [(1, 1), (3, 2), (5, 7)]:
        model = GaussianMixture(num_components, covariance_type=covariance_type)
        model.means_ = np.zeros((num_components, num_features))
        assert gm.num_parameters(
            num_components, num_features, covariance_type
        ) == model._n_parameters()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_prior_matches_scipy_densities(covariance_type):
    rng = np.random.default_rng(4)
    params = random_params(rng, 3, 3, covariance_type)
    prior = random_prior(rng, 3)
    nu, psi, m0, kappa0 = float(prior.dof), prior.scale, prior.mean_prior, 0.3
    expected = st.dirichlet(np.full(3, 1.7)).logpdf(params.weights)
    if covariance_type in ("full", "tied"):
        covs = params.covariances
        covs = covs if covariance_type == "full" else covs[:1]
        expected += sum(st.invwishart(nu, psi).logpdf(c) for c in covs)
        expected += sum(
            st.multivariate_normal(m0, c / kappa0).logpdf(m)
            for m, c in zip(params.means, params.covariances, strict=True)
        )
    else:
        variances = np.diagonal(params.covariances, axis1=1, axis2=2)
        if covariance_type == "diag":
            inv_gamma = st.invgamma(nu / 2, scale=np.diag(psi) / 2)
            expected += inv_gamma.logpdf(variances).sum()
        else:
            expected += st.invgamma(3 * nu / 2, scale=np.trace(psi) / 2).logpdf(
                variances[:, 0]
            ).sum()
        expected += st.norm(m0, np.sqrt(variances / kappa0)).logpdf(params.means).sum()
    ours = gm.log_prior(params, prior, covariance_type)
    np.testing.assert_allclose(ours, expected, atol=ATOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_numpyro_log_joint_equals_log_prior_plus_log_likelihood(covariance_type):
    """The NumPyro model's density is exactly the MAP-EM objective times n."""
    rng = np.random.default_rng(5)
    params = random_params(rng, 3, 2, covariance_type)
    x = rng.normal(scale=3.0, size=(40, 2))
    for prior in (random_prior(rng, 2), None):
        used = gm.default_prior(x, 3) if prior is None else prior
        sites = gm.to_sites(params, covariance_type)
        kwargs = {"covariance_type": covariance_type, "prior": prior}
        # jit: NumPyro's eager op-by-op dispatch is slow; the value is the same.
        joint = jax.jit(lambda s, kw=kwargs: log_density(gm.model, (x, 3), kw, s)[0])(
            sites
        )
        expected = gm.log_prior(params, used, covariance_type) + np.sum(
            gm.log_likelihood(params, x, covariance_type)
        )
        np.testing.assert_allclose(joint, expected, atol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sites_round_trip(covariance_type):
    params = random_params(np.random.default_rng(6), 3, 2, covariance_type)
    back = gm.from_sites(gm.to_sites(params, covariance_type))
    for ours, theirs in zip(back, params, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # Leading (chain, draw) axes survive, as posterior draws need.
    stacked = jax.tree_util.tree_map(
        lambda a: jnp.broadcast_to(a, (2, 5) + a.shape),
        gm.to_sites(params, covariance_type),
    )
    assert gm.from_sites(stacked).covariances.shape == (2, 5, 3, 2, 2)


def test_sample_reproduces_weights_and_moments(rng_key):
    params = GMMParams(
        np.array([0.2, 0.8]),
        np.array([[-5.0, 0.0], [5.0, 1.0]]),
        np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.3]]]),
    )
    num_samples = 20_000
    x, labels = gm.sample(rng_key, params, num_samples)
    x, labels = np.asarray(x), np.asarray(labels)
    assert x.shape == (num_samples, 2)
    # Label frequency: binomial standard error; |z| < 4 fails with prob ~6e-5.
    share = labels.mean()
    assert abs(share - 0.8) < 4 * np.sqrt(0.8 * 0.2 / num_samples)
    for c in range(2):
        rows = x[labels == c]
        std_error = np.sqrt(np.diag(params.covariances[c]) / len(rows))
        assert np.all(np.abs(rows.mean(0) - params.means[c]) < 4 * std_error)
        # Sample covariance: relative error ~ sqrt(2 / n_c) per entry.
        np.testing.assert_allclose(
            np.cov(rows.T), params.covariances[c], atol=6 * np.sqrt(2 / len(rows))
        )


def test_numpyro_inverse_wishart_matches_scipy():
    """The model relies on NumPyro's InverseWishart density being scipy's."""
    import numpyro.distributions as dist

    rng = np.random.default_rng(7)
    factor = rng.normal(size=(3, 3))
    psi = factor @ factor.T + np.eye(3)
    value = st.invwishart(5.0, psi).rvs(random_state=rng)
    np.testing.assert_allclose(
        dist.InverseWishart(5.0, psi).log_prob(value),
        st.invwishart(5.0, psi).logpdf(value),
        atol=ATOL,
    )


def test_batched_component_map_equals_single_batch(monkeypatch):
    """The memory-bounded lax.map path gives the all-at-once result."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 2))
    for covariance_type in COVARIANCE_TYPES:
        params = random_params(rng, 5, 2, covariance_type)
        whole = gm.component_log_prob(params, x, covariance_type)
        monkeypatch.setattr(gm, "_MAX_BATCH_ELEMENTS", 2 * 30 * 2)
        batched = gm.component_log_prob(params, x, covariance_type)
        monkeypatch.undo()
        np.testing.assert_allclose(batched, whole, atol=1e-12)


def test_default_prior_is_valid_and_documented_values():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    prior = gm.default_prior(x, 2)
    np.testing.assert_allclose(prior.mean_prior, [2.0, 1.0])
    # The constant second column gets a unit scale instead of a singular 0.
    np.testing.assert_allclose(prior.scale, np.diag([8.0 / 3.0, 1.0]))
    assert float(prior.dof) == 2.0 and float(prior.weight_concentration) == 1.0
    gm.check_prior(prior, 2, 2, for_map=True)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("weight_concentration", 0.0, "weight_concentration"),
        ("mean_prior", np.zeros(3), "mean_prior"),
        ("mean_precision", -1.0, "mean_precision"),
        ("dof", 0.5, "dof"),
        ("scale", -np.eye(2), "scale"),
    ],
)
def test_check_prior_rejects_bad_hyperparameters(field, value, match):
    prior = gm.default_prior(np.random.default_rng(0).normal(size=(10, 2)), 3)
    with pytest.raises(ValueError, match=match):
        gm.check_prior(prior._replace(**{field: value}), 3, 2)


def test_check_prior_for_map_needs_concentration_at_least_one():
    prior = gm.default_prior(np.random.default_rng(0).normal(size=(10, 2)), 3)
    prior = prior._replace(weight_concentration=0.5)
    gm.check_prior(prior, 3, 2)
    with pytest.raises(ValueError, match="MAP-EM needs"):
        gm.check_prior(prior, 3, 2, for_map=True)


def test_check_params_rejects_wrong_structure():
    params = random_params(np.random.default_rng(9), 2, 2, "full")
    gm.check_params(params, 2, "full")
    with pytest.raises(ValueError, match="structure"):
        gm.check_params(params, 2, "diag")
    with pytest.raises(ValueError, match="sum to 1"):
        gm.check_params(params._replace(weights=np.array([0.5, 0.6])), 2)
    bad = params.covariances.copy()
    bad[0] = -np.eye(2)
    with pytest.raises(ValueError, match="positive-definite"):
        gm.check_params(params._replace(covariances=bad), 2)
    with pytest.raises(ValueError, match="features"):
        gm.check_params(params, 3)
