"""The multinomial-mixture model functions against independent references.

References: scipy.stats.multinomial / dirichlet / gamma log-densities, brute-force
enumeration of assignments and of the whole support on tiny problems, NumPyro's
own count of unconstrained dimensions, and exact moments for the sampler.
All comparisons are in float64; unless stated, tolerances are a few hundred ulps
of the compared magnitudes (sums of ~10 terms of size ~10).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.stats
from jax.experimental import sparse as jsparse
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density
from scipy.special import logsumexp

from latentmix.data.simulate_counts import (
    make_dataset,
    random_split,
    sample_multinomial_mixture,
)
from latentmix.models.multinomial_mixture import (
    EMPTY_LABEL,
    MultinomialMixtureParams,
    MultinomialMixturePrior,
    assignments,
    check_counts,
    encode_groups,
    log_joint,
    log_likelihood,
    log_prior,
    log_responsibilities,
    model,
    num_parameters,
    responsibilities,
    sample,
)

RTOL = 1e-12
# Absolute slack for values near 0: an empty basket's log-likelihood is
# log(sum_k w_k), a few ulps away from 0 when the weights sum to 1 up to rounding.
ATOL = 1e-13


def scipy_component_log_pmf(counts, probs):
    """(n, k) log Mult(x_i | n_i, p_k) from scipy, one call per component."""
    totals = counts.sum(axis=1)
    return np.column_stack(
        [scipy.stats.multinomial.logpmf(counts, totals, p) for p in probs]
    )


def scipy_log_likelihood(weights, probs, counts, groups=None):
    row_weights = weights if groups is None else weights[groups]
    with np.errstate(divide="ignore"):
        joint = np.log(row_weights) + scipy_component_log_pmf(counts, probs)
    return logsumexp(joint, axis=1)


@pytest.fixture
def small_problem():
    """12 rows over 5 categories, 3 components; one component has a zero probability
    in category 4, and rows with and without counts there; one empty row."""
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, size=(12, 5))
    counts[0] = 0
    counts[1, 4] = 0
    counts[2, 4] = 3
    probs = rng.dirichlet(np.ones(5), size=3)
    probs[1, 4] = 0.0
    probs[1] /= probs[1].sum()
    weights = np.array([0.5, 0.3, 0.2])
    return MultinomialMixtureParams(weights, probs), counts


def test_log_likelihood_matches_scipy_mixture(small_problem):
    params, counts = small_problem
    ours = np.asarray(log_likelihood(params, counts))
    reference = scipy_log_likelihood(params.weights, params.probs, counts)
    np.testing.assert_allclose(ours, reference, rtol=RTOL, atol=ATOL)
    assert abs(ours[0]) <= ATOL  # an empty basket has probability 1
    # The component with p = 0 in category 4 is impossible for row 2 only.
    joint = np.asarray(log_joint(params, counts))
    assert joint[2, 1] == -np.inf and np.isfinite(joint[1, 1])


def test_zero_probability_in_every_component_gives_minus_inf():
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    params = MultinomialMixtureParams(np.array([0.5, 0.5]), probs)
    ours = np.asarray(log_likelihood(params, np.array([[1, 1, 0], [1, 0, 1]])))
    reference = scipy_log_likelihood(params.weights, probs, np.array([[1, 1, 0]]))
    np.testing.assert_allclose(ours[0], reference[0], rtol=RTOL)
    assert ours[1] == -np.inf


def test_grouped_log_likelihood_matches_scipy(small_problem):
    params, counts = small_problem
    rng = np.random.default_rng(4)
    group_weights = rng.dirichlet(np.ones(3), size=4)
    groups = rng.integers(0, 4, size=len(counts))
    grouped = MultinomialMixtureParams(group_weights, params.probs)
    ours = np.asarray(log_likelihood(grouped, counts, groups))
    reference = scipy_log_likelihood(group_weights, params.probs, counts, groups)
    np.testing.assert_allclose(ours, reference, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("grouped", [False, True])
def test_brute_force_marginal_likelihood(grouped):
    """Sum over all K^n assignments of prod_i w_{z_i} Mult(x_i | p_{z_i})."""
    rng = np.random.default_rng(5)
    num_rows, num_components = 4, 3
    counts = rng.integers(0, 5, size=(num_rows, 4))
    probs = rng.dirichlet(np.ones(4), size=num_components)
    if grouped:
        weights = rng.dirichlet(np.ones(num_components), size=2)
        groups = np.array([0, 1, 1, 0])
        row_weights = weights[groups]
    else:
        weights = rng.dirichlet(np.ones(num_components))
        groups = None
        row_weights = np.broadcast_to(weights, (num_rows, num_components))
    pmf = np.exp(scipy_component_log_pmf(counts, probs))
    total = 0.0
    for assignment in itertools.product(range(num_components), repeat=num_rows):
        rows = np.arange(num_rows)
        total += np.prod(row_weights[rows, assignment] * pmf[rows, assignment])
    params = MultinomialMixtureParams(weights, probs)
    ours = float(jnp.sum(log_likelihood(params, counts, groups)))
    np.testing.assert_allclose(ours, np.log(total), rtol=RTOL)


def test_pmf_sums_to_one_over_the_support():
    """All count vectors with total 4 over 3 categories (15 of them)."""
    support = np.array(
        [x for x in itertools.product(range(5), repeat=3) if sum(x) == 4]
    )
    assert len(support) == 15
    rng = np.random.default_rng(6)
    params = MultinomialMixtureParams(
        rng.dirichlet(np.ones(2)), rng.dirichlet(np.ones(3), size=2)
    )
    total = np.exp(np.asarray(log_likelihood(params, support))).sum()
    np.testing.assert_allclose(total, 1.0, rtol=1e-14)


def test_responsibilities_are_the_posterior_of_the_assignment(small_problem):
    params, counts = small_problem
    resp = np.asarray(responsibilities(params, counts))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-14)
    # Bayes' rule with scipy's pmf (coefficient included) ...
    pmf = np.exp(scipy_component_log_pmf(counts, params.probs))
    bayes = params.weights * pmf
    bayes /= bayes.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(resp, bayes, rtol=1e-11, atol=1e-300)
    # ... equals the softmax without the coefficient: it cancels.
    with np.errstate(divide="ignore"):
        kernel = counts @ np.where(params.probs > 0, np.log(params.probs), 0.0).T
        kernel[counts @ (params.probs == 0).T > 0] = -np.inf
    without = np.log(params.weights) + kernel
    without = np.exp(without - logsumexp(without, axis=1, keepdims=True))
    np.testing.assert_allclose(resp, without, rtol=1e-11, atol=1e-300)
    # An empty basket's responsibilities are the weights.
    np.testing.assert_allclose(resp[0], params.weights, rtol=1e-14)
    with np.errstate(divide="ignore"):
        log_resp = np.log(resp[1:])
    np.testing.assert_allclose(
        np.asarray(log_responsibilities(params, counts))[1:], log_resp, rtol=1e-12
    )


def test_assignments_label_empty_rows(small_problem):
    params, counts = small_problem
    labels = np.asarray(assignments(params, counts))
    assert labels[0] == EMPTY_LABEL
    expected = np.argmax(np.asarray(log_joint(params, counts)), axis=1)
    np.testing.assert_array_equal(labels[1:], expected[1:])


@pytest.mark.parametrize(
    "convert",
    [
        scipy.sparse.csr_matrix,
        scipy.sparse.csc_array,
        lambda x: jsparse.BCOO.fromdense(jnp.asarray(x, jnp.float64)),
        jnp.asarray,
    ],
    ids=["csr", "csc", "bcoo", "jax"],
)
def test_sparse_and_jax_inputs_match_dense(small_problem, convert):
    params, counts = small_problem
    dense = np.asarray(log_likelihood(params, counts))
    other = np.asarray(log_likelihood(params, convert(counts)))
    np.testing.assert_allclose(other, dense, rtol=RTOL, atol=ATOL)


def test_num_parameters_matches_numpyro_unconstrained_dimension():
    """NumPyro's unconstrained space of `model` is exactly the free parameters."""
    counts = np.random.default_rng(0).integers(0, 3, size=(10, 6))
    for num_components in (1, 2, 4):
        uniform = {
            "weights": np.full(num_components, 1 / num_components),
            "probs": np.full((num_components, 6), 1 / 6),
        }
        _, model_trace = log_density(model, (counts, num_components), {}, uniform)
        dimension = sum(
            np.prod(biject_to(site["fn"].support).inverse_shape(site["value"].shape))
            for site in model_trace.values()
            if site["type"] == "sample" and not site["is_observed"]
        )
        assert num_parameters(num_components, 6) == dimension
    # Per-group weights: G simplices of K entries each, plus the shared probs.
    assert num_parameters(3, 6, num_groups=5) == 5 * 2 + 3 * 5
    assert num_parameters(1, 2) == 1


def test_model_log_density_is_log_likelihood_plus_dirichlet_priors(small_problem):
    params, counts = small_problem
    probs = np.clip(params.probs, 1e-3, None)
    probs /= probs.sum(axis=1, keepdims=True)
    params = MultinomialMixtureParams(params.weights, probs)
    prior = MultinomialMixturePrior(weight_concentration=2.0, probs_concentration=1.5)
    value, _ = log_density(
        model, (counts, 3), {"prior": prior},
        {"weights": params.weights, "probs": params.probs},
    )
    expected = scipy_log_likelihood(params.weights, probs, counts).sum()
    expected += scipy.stats.dirichlet.logpdf(params.weights, np.full(3, 2.0))
    expected += sum(scipy.stats.dirichlet.logpdf(p, np.full(5, 1.5)) for p in probs)
    np.testing.assert_allclose(float(value), expected, rtol=RTOL)
    np.testing.assert_allclose(
        float(log_prior(params, prior)),
        expected - scipy_log_likelihood(params.weights, probs, counts).sum(),
        rtol=RTOL,
    )


def test_hierarchical_model_log_density(small_problem):
    params, counts = small_problem
    probs = np.clip(params.probs, 1e-3, None)
    probs /= probs.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(7)
    groups = rng.integers(0, 3, size=len(counts))
    group_weights = rng.dirichlet(np.ones(3), size=3)
    concentration = 7.5
    prior = MultinomialMixturePrior(
        group_concentration_shape=3.0, group_concentration_rate=0.2
    )
    value, _ = log_density(
        model, (counts, 3), {"groups": groups, "prior": prior},
        {
            "weights": params.weights, "probs": probs,
            "concentration": concentration, "group_weights": group_weights,
        },
    )
    expected = scipy_log_likelihood(group_weights, probs, counts, groups).sum()
    expected += scipy.stats.dirichlet.logpdf(params.weights, np.ones(3))
    expected += sum(scipy.stats.dirichlet.logpdf(p, np.ones(5)) for p in probs)
    expected += scipy.stats.gamma.logpdf(concentration, 3.0, scale=1 / 0.2)
    expected += sum(
        scipy.stats.dirichlet.logpdf(w, concentration * params.weights)
        for w in group_weights
    )
    np.testing.assert_allclose(float(value), expected, rtol=RTOL)


def test_sample_moments_match_the_mixture():
    """Component frequencies and mean counts within 4 standard errors.

    Exact moments: E x_c = n m_c with m_c = sum_k w_k p_kc, and by the law of total
    variance Var x_c = n sum_k w_k p_kc (1 - p_kc) + n^2 (sum_k w_k p_kc^2 - m_c^2).
    |z| < 4 has false-alarm probability 6e-5 per check (7 checks here).
    """
    rng = np.random.default_rng(8)
    weights = np.array([0.2, 0.5, 0.3])
    probs = rng.dirichlet(np.ones(4), size=3)
    num_rows, total = 20_000, 10
    counts, components = sample(
        MultinomialMixtureParams(weights, probs),
        np.full(num_rows, total),
        rng_key=jax.random.key(1),
    )
    np.testing.assert_array_equal(counts.sum(axis=1), total)
    frequency = np.bincount(components, minlength=3) / num_rows
    z = (frequency - weights) / np.sqrt(weights * (1 - weights) / num_rows)
    assert np.all(np.abs(z) < 4), z
    mean = weights @ probs
    variance = total * (weights @ (probs * (1 - probs))) + total**2 * (
        weights @ probs**2 - mean**2
    )
    z = (counts.mean(axis=0) - total * mean) / np.sqrt(variance / num_rows)
    assert np.all(np.abs(z) < 4), z


def test_grouped_sampling_uses_each_groups_weights():
    probs = np.eye(3) * 0.7 + 0.1
    weights = np.eye(3)  # group g always draws component g
    groups = np.array([2, 0, 1, 1, 2])
    counts, components = sample_multinomial_mixture(
        weights, probs, np.full(5, 4), rng_key=jax.random.key(0), groups=groups
    )
    np.testing.assert_array_equal(components, groups)
    assert counts.shape == (5, 3)


def test_make_dataset_follows_the_tutorial_protocol():
    counts, labels = make_dataset(
        99, np.full(3, 1 / 3), np.eye(3) * 0.7 + 0.1, 16, rng_key=jax.random.key(0)
    )
    # int(99 / 3) = 33 rows per component, 16 trials each, shuffled.
    np.testing.assert_array_equal(np.bincount(labels), [33, 33, 33])
    np.testing.assert_array_equal(counts.sum(axis=1), 16)
    assert not np.all(np.diff(labels) >= 0)
    train, test = random_split(len(counts), rng_key=jax.random.key(1))
    assert len(test) == 20 and len(np.intersect1d(train, test)) == 0


def test_encode_groups_maps_arbitrary_labels():
    codes, labels = encode_groups(np.array(["b", "a", "c", "a"]))
    np.testing.assert_array_equal(labels, ["a", "b", "c"])
    np.testing.assert_array_equal(codes, [1, 0, 2, 0])
    codes, _ = encode_groups(np.array([30, 10]), labels=np.array([30, 20, 10]))
    np.testing.assert_array_equal(codes, [0, 2])
    with pytest.raises(ValueError, match="not among the fitted groups"):
        encode_groups(np.array([10, 99]), labels=np.array([10, 20]))


@pytest.mark.parametrize(
    "counts, error, message",
    [
        ([[1, -1], [2, 0]], ValueError, "negative"),
        ([[1.5, 1], [2, 0]], ValueError, "non-integer"),
        ([[np.nan, 1], [2, 0]], ValueError, "non-finite"),
        ([1, 2, 3], ValueError, "2-D"),
        ([[3], [2]], ValueError, "at least 2 categories"),
        (np.zeros((0, 3)), ValueError, "no rows"),
        ([["a", "b"]], TypeError, "numeric"),
        (scipy.sparse.csr_matrix([[1, -2], [0, 1]]), ValueError, "negative"),
        (scipy.sparse.csr_matrix([[0.5, 0], [0, 1]]), ValueError, "row 0, column 0"),
        (np.array([[2**60, 1]], dtype=np.int64), ValueError, "above 2\\*\\*53"),
    ],
)
def test_check_counts_rejects_bad_counts(counts, error, message):
    with pytest.raises(error, match=message):
        check_counts(counts)


def test_integer_valued_floats_are_accepted():
    np.testing.assert_array_equal(check_counts(np.array([[1.0, 2.0]])), [[1, 2]])


def test_bad_params_and_groups_are_rejected(small_problem):
    params, counts = small_problem
    with pytest.raises(ValueError, match="simplex"):
        log_likelihood(params._replace(weights=np.array([0.5, 0.5, 0.5])), counts)
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(params._replace(probs=params.probs[:, :4]), counts)
    grouped = params._replace(weights=np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="pass groups"):
        log_likelihood(grouped, counts)
    with pytest.raises(ValueError, match=r"codes in \[0, 2\)"):
        log_likelihood(grouped, counts, np.full(len(counts), 2))
    with pytest.raises(ValueError, match="integer codes"):
        log_likelihood(grouped, counts, np.zeros(len(counts)))


# --- checklist item 12: the lower bound (VLB) ---------------------------------------


def test_lower_bound_is_below_the_log_likelihood_by_the_kl_divergence(small_problem):
    """For random q the VLB is below the log-likelihood, and the gap equals
    sum_i KL(q_i || posterior_i), computed with scipy's rel_entr from scipy's own
    multinomial log-pmf; with q = the posterior the gap is 0."""
    from scipy.special import rel_entr

    from latentmix.models.multinomial_mixture import lower_bound

    params, counts = small_problem
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    total = scipy_log_likelihood(weights, probs, counts).sum()
    with np.errstate(divide="ignore"):
        joint = np.log(weights) + scipy_component_log_pmf(counts, probs)
    posterior = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    rng = np.random.default_rng(11)
    for _ in range(5):
        q = rng.dirichlet(np.ones(3), size=len(counts))
        # q must be 0 where the component is impossible (else the bound is -inf).
        q = np.where(posterior > 0, q, 0.0)
        q /= q.sum(axis=1, keepdims=True)
        bound = float(lower_bound(params, counts, q))
        kl = rel_entr(q, posterior).sum()
        assert bound <= total
        # Sums of ~36 terms of size ~10: 1e-11 absolute covers the rounding.
        np.testing.assert_allclose(total - bound, kl, atol=1e-11)
    np.testing.assert_allclose(float(lower_bound(params, counts, posterior)), total,
                               atol=1e-11)


def test_lower_bound_and_log_likelihood_over_em_iterations():
    """Tutorial §4.2: the VLB the reference computes, L(q_t, theta_{t+1}) with the
    E-step's q_t and the M-step's theta_{t+1}, and the log-likelihood both never
    decrease, the VLB stays below the log-likelihood, and right after each E-step
    (q_t = posterior at theta_t) the bound equals the log-likelihood."""
    import warnings

    from latentmix.inference.em import fit_multinomial_mixture
    from latentmix.inference.em.driver import ConvergenceWarning
    from latentmix.models.multinomial_mixture import lower_bound

    truth = MultinomialMixtureParams(
        np.array([0.5, 0.3, 0.2]), np.random.default_rng(12).dirichlet(
            np.ones(6), size=3))
    counts, _ = sample(truth, np.full(300, 8), rng_key=jax.random.key(13))
    params = MultinomialMixtureParams(np.full(3, 1 / 3), np.random.default_rng(
        14).dirichlet(np.full(6, 12.0), size=3))
    log_liks, bounds = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one step at a time
        for _ in range(25):
            q = np.asarray(responsibilities(params, counts))
            ll = float(jnp.sum(log_likelihood(params, counts)))
            # Equality right after the E-step, to float rounding of 300 terms.
            np.testing.assert_allclose(float(lower_bound(params, counts, q)), ll,
                                       rtol=1e-12)
            params = fit_multinomial_mixture(counts, 3, init=params, max_iters=1,
                                             tol=0.0).params
            log_liks.append(ll)
            bounds.append(float(lower_bound(params, counts, q)))
    log_liks.append(float(jnp.sum(log_likelihood(params, counts))))
    log_liks, bounds = np.array(log_liks), np.array(bounds)
    # Monotone up to float rounding of sums of ~2,000 terms of size ~10 (1e-9).
    assert np.all(np.diff(log_liks) >= -1e-9) and np.all(np.diff(bounds) >= -1e-9)
    assert np.all(bounds <= log_liks[1:] + 1e-9)
    assert log_liks[-1] - log_liks[0] > 10  # the run actually climbs


# --- checklist item 13: large baskets in log space ----------------------------------


def test_large_baskets_do_not_underflow_where_the_pmf_product_does():
    """Baskets of 3,000 lines over 40 categories: the reference's product of
    probabilities prod_c p_kc^x_c is about exp(-1e4), far below the smallest
    double (~exp(-745)), so it is exactly 0 for every component and its
    responsibilities are 0/0. In log space the likelihood (coefficient included)
    equals scipy's logpmf combined by logsumexp, and the responsibilities are
    finite and sum to 1. The coefficient cancels in them: they equal the softmax
    of log w_k + sum_c x_c log p_kc, and the argmax is that softmax's."""
    rng = np.random.default_rng(21)
    probs = rng.dirichlet(np.ones(40), size=3)
    weights = np.array([0.2, 0.3, 0.5])
    counts = np.stack([rng.multinomial(3000, probs[k]) for k in (0, 1, 2, 2)])
    params = MultinomialMixtureParams(weights, probs)
    with np.errstate(under="ignore"):
        product = np.prod(probs[None] ** counts[:, None], axis=2)
    assert np.all(product == 0.0)  # the pmf-product version underflows
    kernel = np.log(weights) + counts @ np.log(probs).T
    assert np.all(kernel < -745)
    ours = np.asarray(log_likelihood(params, counts))
    assert np.all(np.isfinite(ours))
    # Sums of ~40 terms of size ~1e3: a few hundred ulps of 1e4 is ~1e-12 relative.
    np.testing.assert_allclose(ours, scipy_log_likelihood(weights, probs, counts),
                               rtol=1e-12)
    resp = np.asarray(responsibilities(params, counts))
    assert np.all(np.isfinite(resp))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-14)
    expected = np.exp(kernel - logsumexp(kernel, axis=1, keepdims=True))
    np.testing.assert_allclose(resp, expected, rtol=1e-10, atol=1e-300)
    np.testing.assert_array_equal(np.asarray(assignments(params, counts)),
                                  np.argmax(kernel, axis=1))
