"""EM for the multinomial mixture against closed forms and an independent reference.

The reference EM below is written from the derivation (article 4, §4.2, §4.7) in
plain NumPy with scipy's multinomial log-pmf, in probability-normalised log space,
one row at a time where it matters: no code is shared with the JAX fitter. Most
tests start both from the same explicit initialisation and compare parameters,
which removes the randomness of restarts from the comparison.

Tolerances (float64): a few EM iterations reorder sums of ~10^3 terms, so
parameters agree to ~1e-13; 1e-10 leaves room for the error amplification of a
few dozen iterations near a slowly converging optimum.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.stats
from jax.experimental import sparse as jsparse
from scipy.special import logsumexp

from latentmix.data.simulate_counts import (
    TRINOMIAL_EXPERIMENTS,
    make_dataset,
    random_split,
    sample_multinomial_mixture,
)
from latentmix.data.validation import DataWarning
from latentmix.inference.align import align_components
from latentmix.inference.em import (
    ConvergenceWarning,
    EMResult,
    MultinomialMixtureParams,
    MultinomialMixturePrior,
    fit_multinomial_mixture,
)
from latentmix.inference.em import multinomial_mixture as em_module
from latentmix.inference.em.driver import AllRestartsFailedError, EMRestarts
from latentmix.inference.em.multinomial_mixture import (
    fit_multinomial_mixture_restarts,
)
from latentmix.inference.em.multinomial_mixture.restarts import (
    best_restart,
    run_restarts,
)
from latentmix.inference.selection import (
    heldout_log_likelihood,
    multinomial_bic,
    multinomial_icl,
    select_num_components_multinomial,
)
from latentmix.models.multinomial_mixture import (
    EMPTY_LABEL,
    assignments,
    log_likelihood,
    log_prior,
)

PARAM_TOL = 1e-10


# ----------------------------------------------------------------------------
# Independent reference
# ----------------------------------------------------------------------------


def reference_log_joint(weights, probs, counts, groups=None):
    totals = counts.sum(axis=1)
    log_pmf = np.column_stack(
        [scipy.stats.multinomial.logpmf(counts, totals, p) for p in probs]
    )
    row_weights = weights if groups is None else weights[groups]
    with np.errstate(divide="ignore"):
        return np.log(row_weights) + log_pmf


def reference_em_step(weights, probs, counts, groups=None, a=1.0, b=1.0):
    """One E-step and (MAP) M-step from the derivation; also the mean objective."""
    joint = reference_log_joint(weights, probs, counts, groups)
    log_norm = logsumexp(joint, axis=1)
    resp = np.exp(joint - log_norm[:, None])
    objective = log_norm.sum()
    if a != 1.0 or b != 1.0:
        w = np.atleast_2d(weights)
        objective += sum(scipy.stats.dirichlet.logpdf(row, np.full(len(row), a))
                         for row in w)
        objective += sum(scipy.stats.dirichlet.logpdf(p, np.full(len(p), b))
                         for p in probs)
    num_components = probs.shape[0]
    if groups is None:
        new_weights = (resp.sum(axis=0) + a - 1) / (
            len(counts) + num_components * (a - 1)
        )
    else:
        new_weights = np.empty_like(weights)
        for group in range(weights.shape[0]):
            rows = groups == group
            new_weights[group] = (resp[rows].sum(axis=0) + a - 1) / (
                rows.sum() + num_components * (a - 1)
            )
    category_counts = resp.T @ counts + b - 1
    new_probs = category_counts / category_counts.sum(axis=1, keepdims=True)
    return new_weights, new_probs, objective / len(counts)


def simulate(seed, num_rows=300, num_categories=6, num_components=3, num_groups=None,
             mean_total=8):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(num_categories, 0.5), size=num_components)
    totals = rng.poisson(mean_total, size=num_rows) + 1
    if num_groups is None:
        weights, groups = rng.dirichlet(np.full(num_components, 3.0)), None
    else:
        weights = rng.dirichlet(np.ones(num_components), size=num_groups)
        groups = rng.integers(0, num_groups, size=num_rows)
    counts, _ = sample_multinomial_mixture(
        weights, probs, totals, rng_key=jax.random.key(seed), groups=groups
    )
    return counts, groups


def random_params(seed, num_components, num_categories, num_groups=None):
    rng = np.random.default_rng(seed)
    shape = (num_components,) if num_groups is None else (num_groups, num_components)
    weights = rng.dirichlet(np.full(num_components, 5.0), size=shape[:-1] or None)
    probs = rng.dirichlet(np.full(num_categories, 5.0), size=num_components)
    return MultinomialMixtureParams(weights, probs)


def fit_quietly(*args, **kwargs):
    """Fit and swallow the ConvergenceWarning of deliberately truncated runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_multinomial_mixture(*args, **kwargs)


# ----------------------------------------------------------------------------
# Closed forms and the M-step
# ----------------------------------------------------------------------------


def test_k1_is_column_sums_over_total_after_one_step(rng_key):
    counts, _ = simulate(0)
    with pytest.warns(ConvergenceWarning):
        one_step = fit_multinomial_mixture(counts, 1, max_iters=1, rng_key=rng_key)
    expected = counts.sum(axis=0) / counts.sum()
    np.testing.assert_allclose(one_step.params.probs[0], expected, rtol=1e-14)
    np.testing.assert_allclose(one_step.params.weights, [1.0], rtol=1e-15)
    # Iteration 2 evaluates the closed form and iteration 3 finds it unchanged:
    # converged after three, at the closed form.
    full = fit_multinomial_mixture(counts, 1, rng_key=rng_key)
    assert bool(full.converged) and int(full.num_iters) == 3
    reference = scipy.stats.multinomial.logpmf(counts, counts.sum(1), expected).mean()
    np.testing.assert_allclose(float(full.log_likelihood), reference, rtol=1e-13)


def test_k1_map_adds_pseudocounts(rng_key):
    counts, _ = simulate(1)
    prior = MultinomialMixturePrior(weight_concentration=3.0, probs_concentration=2.5)
    with pytest.warns(ConvergenceWarning):
        result = fit_multinomial_mixture(
            counts, 1, max_iters=1, prior=prior, rng_key=rng_key
        )
    expected = (counts.sum(axis=0) + 1.5) / (counts.sum() + 1.5 * counts.shape[1])
    np.testing.assert_allclose(result.params.probs[0], expected, rtol=1e-14)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("grouped", [False, True], ids=["global", "grouped"])
@pytest.mark.parametrize("prior", [None, (2.0, 1.5)], ids=["ml", "map"])
def test_m_step_matches_the_derivation(layout, grouped, prior):
    num_groups = 4 if grouped else None
    counts, groups = simulate(2, num_groups=num_groups)
    init = random_params(3, 3, counts.shape[1], num_groups)
    a, b = (1.0, 1.0) if prior is None else prior
    prior_arg = None if prior is None else MultinomialMixturePrior(a, b)
    result = fit_quietly(
        counts, 3, groups=groups, init=init, max_iters=1, prior=prior_arg,
        layout=layout,
    )
    weights, probs, objective = reference_em_step(
        np.asarray(init.weights), np.asarray(init.probs), counts, groups, a, b
    )
    np.testing.assert_allclose(result.params.weights, weights, rtol=1e-12)
    np.testing.assert_allclose(result.params.probs, probs, rtol=1e-12)
    np.testing.assert_allclose(float(result.trace[0]), objective, rtol=1e-13)


def test_many_iterations_match_the_reference_including_exact_zeros():
    """Three components on disjoint category blocks: ML probs become exactly 0.

    The reference uses scipy's exact -inf for impossible components; the fitter
    uses its LOG_ZERO stand-in. Both must give identical iterates (and zeros).
    """
    rng = np.random.default_rng(4)
    blocks = np.zeros((3, 6))
    blocks[0, :2] = blocks[1, 2:4] = blocks[2, 4:] = 0.5
    counts, _ = sample_multinomial_mixture(
        np.full(3, 1 / 3), blocks, rng.poisson(5, 200) + 1, rng_key=jax.random.key(4)
    )
    init = random_params(5, 3, 6)
    weights, probs = np.asarray(init.weights), np.asarray(init.probs)
    objectives = []
    for _ in range(40):
        weights, probs, objective = reference_em_step(weights, probs, counts)
        objectives.append(objective)
    result = fit_quietly(counts, 3, init=init, max_iters=40, tol=0.0)
    assert np.sum(probs == 0) >= 6  # the block structure is found exactly
    np.testing.assert_allclose(result.params.weights, weights, atol=PARAM_TOL)
    np.testing.assert_allclose(result.params.probs, probs, atol=PARAM_TOL)
    np.testing.assert_array_equal(np.asarray(result.params.probs) == 0, probs == 0)
    np.testing.assert_allclose(result.trace, objectives, rtol=1e-12)


# ----------------------------------------------------------------------------
# Objective, trace and restarts
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("grouped", [False, True], ids=["global", "grouped"])
@pytest.mark.parametrize("prior", [None, (1.5, 1.2)], ids=["ml", "map"])
def test_trace_never_decreases_and_is_finite(grouped, prior, rng_key):
    counts, groups = simulate(6, num_rows=2000, num_groups=20 if grouped else None)
    prior_arg = None if prior is None else MultinomialMixturePrior(*prior)
    result = fit_multinomial_mixture(
        counts, 3, groups=groups, prior=prior_arg, num_restarts=3, rng_key=rng_key,
        tol=1e-10, max_iters=3000,
    )
    trace = np.asarray(result.trace)[: int(result.num_iters)]
    assert bool(result.converged) and np.all(np.isfinite(trace))
    # EM never decreases its objective; the slack is float64 rounding of a mean
    # of 2000 terms of size ~20 (about 1e-16 * 20 * sqrt(2000)).
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:])), np.diff(trace).min()
    assert float(result.log_likelihood) >= trace[-1] - 1e-12 * abs(trace[-1])


@pytest.mark.parametrize("grouped", [False, True], ids=["global", "grouped"])
def test_reported_objective_is_the_model_log_likelihood(grouped, rng_key):
    counts, groups = simulate(7, num_groups=5 if grouped else None)
    result = fit_multinomial_mixture(counts, 3, groups=groups, rng_key=rng_key)
    mean_ll = float(jnp.mean(log_likelihood(result.params, counts, groups)))
    np.testing.assert_allclose(float(result.log_likelihood), mean_ll, rtol=1e-13)
    prior = MultinomialMixturePrior(2.0, 1.5)
    result = fit_multinomial_mixture(
        counts, 3, groups=groups, rng_key=rng_key, prior=prior
    )
    mean_ll = float(jnp.mean(log_likelihood(result.params, counts, groups)))
    expected = mean_ll + float(log_prior(result.params, prior)) / len(counts)
    np.testing.assert_allclose(float(result.log_likelihood), expected, rtol=1e-13)


def test_grouped_fit_is_at_least_as_likely_as_the_global_fit(rng_key):
    """The grouped model nests the global one and starts from its fit."""
    counts, groups = simulate(8, num_rows=600, num_groups=12)
    global_fit = fit_multinomial_mixture(counts, 3, rng_key=rng_key, num_restarts=2)
    grouped_fit = fit_multinomial_mixture(
        counts, 3, groups=groups, rng_key=rng_key, num_restarts=2
    )
    assert grouped_fit.params.weights.shape == (12, 3)
    assert float(grouped_fit.log_likelihood) >= float(global_fit.log_likelihood)
    # Starting the grouped stage from the global fit's params gives the same.
    from_global = fit_multinomial_mixture(counts, 3, groups=groups,
                                          init=global_fit.params)
    np.testing.assert_allclose(
        float(from_global.log_likelihood), float(grouped_fit.log_likelihood),
        rtol=1e-9,
    )


def test_best_restart_is_the_highest_finite_objective():
    """NaN and -inf objectives are skipped; ties go to the first restart."""
    objectives = jnp.array([-3.0, jnp.nan, -1.5, -jnp.inf, -1.5])
    results = EMResult(
        params=MultinomialMixtureParams(jnp.arange(5.0)[:, None], jnp.zeros((5, 1, 2))),
        log_likelihood=objectives,
        num_iters=jnp.arange(5),
        converged=jnp.array([True, False, True, False, True]),
        trace=jnp.zeros((5, 3)),
    )
    best = best_restart(results)
    assert float(best.log_likelihood) == -1.5 and int(best.num_iters) == 2
    assert float(best.params.weights[0]) == 2.0
    failed = results._replace(log_likelihood=jnp.full(5, jnp.nan))
    assert int(best_restart(failed).num_iters) == 0


def test_impossible_start_is_never_converged(rng_key):
    """An init giving every row probability 0 yields a non-finite objective.

    Every restart then fails: the fit raises AllRestartsFailedError (a
    FloatingPointError) naming the fix; the restarts function reports them.
    """
    counts = np.array([[1, 2, 0], [0, 1, 3], [2, 0, 1]])
    init = MultinomialMixtureParams(
        np.array([0.5, 0.5]), np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    )
    with pytest.raises(AllRestartsFailedError, match="non-finite") as error:
        fit_multinomial_mixture(counts, 2, init=init)
    assert isinstance(error.value, FloatingPointError)
    assert "init" in str(error.value) and "prior" in str(error.value)
    every = fit_multinomial_mixture_restarts(counts, 2, init=init, num_restarts=2)
    assert every.best_index == -1 and np.all(every.failed)
    result = jax.tree_util.tree_map(lambda leaf: leaf[0], every.results)
    assert not bool(result.converged)
    assert not np.isfinite(float(result.log_likelihood))


def test_max_iters_warning_and_zero_iterations(rng_key):
    counts, _ = simulate(10)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        result = fit_multinomial_mixture(counts, 3, max_iters=2, rng_key=rng_key)
    assert int(result.num_iters) == 2 and not bool(result.converged)
    init = random_params(11, 3, counts.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero = fit_multinomial_mixture(counts, 3, init=init, max_iters=0)
    np.testing.assert_allclose(zero.params.probs, init.probs, rtol=1e-15)
    assert int(zero.num_iters) == 0 and not bool(zero.converged)


def test_compiles_once_for_same_shapes(rng_key):
    """New data of the same size bucket and a new tol reuse the compiled core."""
    first, _ = simulate(12, num_rows=200, num_categories=20, mean_total=30)
    second, _ = simulate(13, num_rows=200, num_categories=20, mean_total=30)
    fit_multinomial_mixture(first, 3, rng_key=rng_key, num_restarts=2, tol=1e-6)
    size = run_restarts._cache_size()
    fit_multinomial_mixture(second, 3, rng_key=rng_key, num_restarts=2, tol=1e-7)
    fit_multinomial_mixture(first, 3, rng_key=jax.random.key(5), num_restarts=2)
    assert run_restarts._cache_size() == size


def test_a_repeated_sweep_compiles_nothing_new(rng_key):
    """Restarts share one compiled core per K; a second sweep reuses them all."""
    counts, _ = simulate(26, num_rows=120)
    select_num_components_multinomial(counts, [1, 2], num_restarts=3, rng_key=rng_key)
    size = run_restarts._cache_size()
    again = select_num_components_multinomial(
        counts, [1, 2], num_restarts=3, rng_key=jax.random.key(9)
    )
    assert run_restarts._cache_size() == size
    assert list(again.table["num_components"]) == [1, 2]


# ----------------------------------------------------------------------------
# Layouts, folding and invariances
# ----------------------------------------------------------------------------


def assert_same_fit(a, b, atol=0.0):
    np.testing.assert_allclose(a.params.weights, b.params.weights, rtol=0, atol=atol)
    np.testing.assert_allclose(a.params.probs, b.params.probs, rtol=0, atol=atol)
    np.testing.assert_allclose(
        float(a.log_likelihood), float(b.log_likelihood), rtol=max(atol, 0.0)
    )


@pytest.mark.parametrize(
    "convert",
    [
        scipy.sparse.csr_matrix,
        scipy.sparse.coo_array,
        lambda x: jsparse.BCOO.fromdense(jnp.asarray(x)),
        jnp.asarray,
    ],
    ids=["csr", "coo", "bcoo", "jax"],
)
def test_dense_and_sparse_inputs_give_identical_fits(convert, rng_key):
    counts, _ = simulate(14)
    dense = fit_multinomial_mixture(counts, 3, rng_key=rng_key, num_restarts=2)
    other = fit_multinomial_mixture(convert(counts), 3, rng_key=rng_key, num_restarts=2)
    assert_same_fit(dense, other)  # bit-identical: one preparation path


def test_layout_rule():
    assert em_module.choose_layout(120_000, 94, int(0.05 * 120_000 * 94)) == "dense"
    assert em_module.choose_layout(120_000, 2000, 6 * 120_000) == "sparse"
    assert em_module.choose_layout(10**6, 1000, 10**8) == "sparse"  # 8 GB dense


def test_dense_and_sparse_layouts_agree(rng_key):
    counts, groups = simulate(15, num_groups=6)
    for group_labels in (None, groups):
        dense = fit_multinomial_mixture(
            counts, 3, groups=group_labels, rng_key=rng_key, layout="dense"
        )
        sparse = fit_multinomial_mixture(
            counts, 3, groups=group_labels, rng_key=rng_key, layout="sparse"
        )
        assert_same_fit(dense, sparse, atol=PARAM_TOL)


def test_folding_is_exact(rng_key):
    counts, groups = simulate(16, num_categories=3, mean_total=3, num_groups=4)
    assert len(np.unique(counts, axis=0)) < len(counts) / 3  # many duplicates
    fits = {}
    for name, group_labels in (("global", None), ("grouped", groups)):
        fits[name] = fit_multinomial_mixture(
            counts, 3, groups=group_labels, rng_key=rng_key
        )
        unfolded = fit_multinomial_mixture(
            counts, 3, groups=group_labels, rng_key=rng_key, fold=False
        )
        assert_same_fit(fits[name], unfolded, atol=PARAM_TOL)
    # Duplicating every row leaves the maximum-likelihood fit unchanged.
    doubled = fit_multinomial_mixture(np.vstack([counts, counts]), 3, rng_key=rng_key)
    assert_same_fit(fits["global"], doubled, atol=PARAM_TOL)


@pytest.mark.parametrize("grouped", [False, True], ids=["global", "grouped"])
def test_row_order_does_not_matter(grouped, rng_key):
    counts, groups = simulate(17, num_groups=7 if grouped else None)
    order = np.random.default_rng(0).permutation(len(counts))
    base = fit_multinomial_mixture(counts, 3, groups=groups, rng_key=rng_key)
    permuted = fit_multinomial_mixture(
        counts[order], 3, groups=None if groups is None else groups[order],
        rng_key=rng_key,
    )
    assert_same_fit(base, permuted, atol=1e-12)


def test_group_labels_are_arbitrary(rng_key):
    counts, groups = simulate(18, num_groups=5)
    by_code = fit_multinomial_mixture(counts, 3, groups=groups, rng_key=rng_key)
    names = np.array(["eve", "bob", "dan", "amy", "cat"])  # sorted: amy bob cat ...
    by_name = fit_multinomial_mixture(counts, 3, groups=names[groups], rng_key=rng_key)
    # Weights rows follow np.unique(labels). Relabelling reorders the folded rows,
    # hence the summation order: equal to rounding (1e-12).
    order = np.argsort(names)
    np.testing.assert_allclose(by_name.params.weights,
                               by_code.params.weights[order], atol=1e-12)
    sparse_ids = np.array([900, 7, 31, 4000, 12])[groups]
    by_id = fit_multinomial_mixture(counts, 3, groups=sparse_ids, rng_key=rng_key)
    order = np.argsort([900, 7, 31, 4000, 12])
    np.testing.assert_allclose(by_id.params.weights, by_code.params.weights[order],
                               atol=1e-12)


# ----------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------


def test_float32_matches_float64():
    counts, _ = simulate(19, num_rows=1000)
    init = random_params(20, 3, counts.shape[1])
    f64 = fit_multinomial_mixture(counts, 3, init=init, tol=1e-9, max_iters=3000)
    # float32 resolves ~1e-6 nats on a mean of ~-15: a tol above that noise.
    f32 = fit_multinomial_mixture(
        counts, 3, init=init, dtype=jnp.float32, tol=1e-5, max_iters=3000
    )
    assert f32.params.probs.dtype == jnp.float32
    # Parameters within float32 round-off amplified by a flat optimum, and the
    # mean log-likelihood within the stopping tolerance.
    np.testing.assert_allclose(f32.params.probs, f64.params.probs, atol=1e-3)
    np.testing.assert_allclose(float(f32.log_likelihood), float(f64.log_likelihood),
                               atol=2e-5)


def test_counts_beyond_float32_range_route_to_float64(rng_key):
    counts = np.array([[2**25, 3, 4], [5, 2**25, 1], [1, 2, 3], [7, 1, 2**25]])
    with pytest.warns(DataWarning, match="float32's exact"):
        result = fit_multinomial_mixture(counts, 2, rng_key=rng_key, dtype=jnp.float32)
    assert result.params.probs.dtype == jnp.float64


# ----------------------------------------------------------------------------
# Bad input (issue §8)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, message",
    [
        ([[1, -2, 3], [1, 1, 1]], "negative"),
        ([[1, 2.5, 3], [1, 1, 1]], "non-integer"),
        ([[3], [4]], "at least 2 categories"),
        ([[0, 0], [0, 0]], "every row of counts is zero"),
    ],
)
def test_bad_counts_are_rejected(counts, message, rng_key):
    with pytest.raises(ValueError, match=message):
        fit_multinomial_mixture(counts, 1, rng_key=rng_key)


def test_empty_rows_are_excluded_with_a_warning_and_labelled(rng_key):
    counts, _ = simulate(21)
    with_empty = np.vstack([np.zeros((3, counts.shape[1]), int), counts])
    with pytest.warns(DataWarning, match="3 of 303 rows .* all zero"):
        result = fit_multinomial_mixture(with_empty, 3, rng_key=rng_key)
    assert_same_fit(result, fit_multinomial_mixture(counts, 3, rng_key=rng_key))
    labels = np.asarray(assignments(result.params, with_empty))
    assert np.all(labels[:3] == EMPTY_LABEL) and np.all(labels[3:] >= 0)


def test_unobserved_category_is_kept_with_a_warning(rng_key):
    counts, _ = simulate(22)
    counts[:, 2] = 0
    with pytest.warns(DataWarning, match=r"categories \[2\] are never observed"):
        result = fit_multinomial_mixture(counts, 3, rng_key=rng_key)
    assert result.params.probs.shape[1] == counts.shape[1]
    np.testing.assert_array_equal(result.params.probs[:, 2], 0.0)
    new_basket = np.zeros((1, counts.shape[1]), int)
    new_basket[0, 2] = 1
    assert float(heldout_log_likelihood(result.params, new_basket)) == -np.inf
    # A pseudocount keeps it possible, without a warning.
    prior = MultinomialMixturePrior(probs_concentration=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        smoothed = fit_multinomial_mixture(counts, 3, rng_key=rng_key, prior=prior)
    assert np.all(np.asarray(smoothed.params.probs[:, 2]) > 0)
    assert np.isfinite(float(heldout_log_likelihood(smoothed.params, new_basket)))


def test_more_components_than_distinct_rows_is_an_error(rng_key):
    counts = np.array([[1, 2], [1, 2], [3, 0], [1, 2], [3, 0]])
    with pytest.raises(ValueError, match="distinct non-empty rows \\(2\\)"):
        fit_multinomial_mixture(counts, 3, rng_key=rng_key)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"prior": MultinomialMixturePrior(probs_concentration=0.5)}, ValueError,
         ">= 1 for MAP-EM"),
        ({"num_restarts": 0}, ValueError, "num_restarts"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"layout": "csr"}, ValueError, "layout"),
        ({"init": "kmeans"}, ValueError, "init must be"),
        ({"rng_key": None}, ValueError, "rng_key is required"),
        ({"groups": np.arange(5)}, ValueError, "one label per row"),
        ({"dtype": jnp.int32}, ValueError, "dtype"),
    ],
)
def test_bad_options_are_rejected(kwargs, error, message, rng_key):
    counts, _ = simulate(23, num_rows=30)
    options = {"rng_key": rng_key, **kwargs}
    with pytest.raises(error, match=message):
        fit_multinomial_mixture(counts, 2, **options)


def test_one_explicit_init_is_repeated_for_every_restart():
    """One start with num_restarts=r: r identical restarts (the GMM's rule)."""
    counts, _ = simulate(24, num_rows=30)
    init = random_params(0, 2, counts.shape[1])
    every = fit_multinomial_mixture_restarts(counts, 2, init=init, num_restarts=3)
    assert every.results.params.probs.shape == (3, 2, counts.shape[1])
    for index in (1, 2):
        np.testing.assert_array_equal(every.results.params.probs[index],
                                      every.results.params.probs[0])
    single = fit_quietly(counts, 2, init=init)
    # One restart or three under vmap: the same iterates up to summation order.
    assert_same_fit(fit_quietly(counts, 2, init=init, num_restarts=3), single,
                    atol=1e-12)


@pytest.mark.parametrize("grouped", [False, True], ids=["global", "grouped"])
def test_stacked_inits_are_separate_restarts(grouped):
    """probs (r, K, C) stack r starts; each equals the fit from that start."""
    num_groups = 4 if grouped else None
    counts, groups = simulate(27, num_rows=200, num_groups=num_groups)
    starts = [random_params(seed, 3, counts.shape[1], num_groups)
              for seed in (30, 31)]
    stacked = MultinomialMixtureParams(
        np.stack([start.weights for start in starts]),
        np.stack([start.probs for start in starts]),
    )
    every = fit_multinomial_mixture_restarts(counts, 3, groups=groups, init=stacked)
    assert every.results.params.probs.shape == (2, 3, counts.shape[1])
    assert not np.any(every.failed) and np.all(every.num_reseeds == 0)
    for index, start in enumerate(starts):
        separate = fit_quietly(counts, 3, groups=groups, init=start)
        one = jax.tree_util.tree_map(lambda leaf, i=index: leaf[i], every.results)
        assert_same_fit(separate, one, atol=1e-12)
    best = fit_quietly(counts, 3, groups=groups, init=stacked, num_restarts=2)
    assert float(best.log_likelihood) == float(
        np.max(np.asarray(every.results.log_likelihood))
    )
    with pytest.raises(ValueError, match="2 stacked starts but num_restarts=3"):
        fit_multinomial_mixture(counts, 3, groups=groups, init=stacked,
                                num_restarts=3)


def test_restarts_returns_every_restart_and_the_best(rng_key):
    counts, _ = simulate(28)
    every = fit_multinomial_mixture_restarts(counts, 3, num_restarts=4,
                                             rng_key=rng_key)
    assert isinstance(every, EMRestarts)
    assert every.results.params.weights.shape == (4, 3)
    assert every.num_reseeds.tolist() == [0] * 4 and not np.any(every.failed)
    objectives = np.asarray(every.results.log_likelihood)
    assert every.best_index == int(np.argmax(objectives))
    best = fit_multinomial_mixture(counts, 3, num_restarts=4, rng_key=rng_key)
    assert float(best.log_likelihood) == objectives[every.best_index]


def test_screening_continues_the_best_restart_only(rng_key):
    """screen_iters = s: all restarts run s iterations, then the best goes on.

    The best restart's result is the fit started from its screened params; the
    others stop at s iterations, so r restarts cost at most (r - 1) s +
    max_iters iterations.
    """
    counts, _ = simulate(29, num_rows=600)
    num_restarts, screen, max_iters = 5, 3, 400
    options = dict(num_restarts=num_restarts, rng_key=rng_key, max_iters=max_iters)
    screened = fit_multinomial_mixture_restarts(
        counts, 3, max_iters=screen, num_restarts=num_restarts, rng_key=rng_key
    )
    every = fit_multinomial_mixture_restarts(counts, 3, screen_iters=screen,
                                             **options)
    best = int(np.argmax(np.asarray(screened.results.log_likelihood)))
    assert every.best_index == best
    iters = np.asarray(every.results.num_iters)
    others = np.arange(num_restarts) != best
    assert np.all(iters[others] == screen)
    assert iters.sum() <= (num_restarts - 1) * screen + max_iters
    full = fit_multinomial_mixture_restarts(counts, 3, **options)
    assert iters.sum() < np.asarray(full.results.num_iters).sum()
    start = jax.tree_util.tree_map(lambda leaf: leaf[best], screened.results.params)
    continued = fit_multinomial_mixture(counts, 3, init=start,
                                        max_iters=max_iters - screen)
    result = fit_multinomial_mixture(counts, 3, screen_iters=screen, **options)
    # Other programs (batched or not) sum in another order: 1e-12, not bits.
    assert_same_fit(result, continued, atol=1e-12)
    assert int(result.num_iters) == screen + int(continued.num_iters)
    assert bool(result.converged) and bool(continued.converged)
    np.testing.assert_allclose(
        np.asarray(result.trace)[: int(result.num_iters)],
        np.concatenate([
            np.asarray(screened.results.trace[best]),
            np.asarray(continued.trace)[: int(continued.num_iters)],
        ]),
        rtol=1e-12,
    )


def test_screening_options_are_checked(rng_key):
    counts, groups = simulate(30, num_rows=60, num_groups=3)
    with pytest.raises(ValueError, match="screen_iters=5 must be below max_iters"):
        fit_multinomial_mixture(counts, 2, rng_key=rng_key, num_restarts=2,
                                screen_iters=5, max_iters=5)
    with pytest.raises(ValueError, match="screen_iters is not offered with groups"):
        fit_multinomial_mixture(counts, 2, rng_key=rng_key, num_restarts=2,
                                groups=groups, screen_iters=2)
    with pytest.raises(ValueError, match="screen_iters"):
        fit_multinomial_mixture(counts, 2, rng_key=rng_key, screen_iters=-1)


# ----------------------------------------------------------------------------
# Recovery and model selection
# ----------------------------------------------------------------------------


def test_well_separated_trinomial_is_recovered(rng_key):
    """The tutorial's alpha = (0.1, 0.1, 0.8) mixture: beta rows to about +-0.02.

    With 10 000 rows of 16 trials the standard error of a probability is below
    sqrt(0.8 * 0.2 / (1000 * 16)) = 0.003 for the smallest component, so 0.02 is
    over 6 standard errors; weights are checked to 4 binomial standard errors.
    """
    experiment = TRINOMIAL_EXPERIMENTS["well_separated"]
    counts, _ = make_dataset(
        experiment.num_rows, experiment.weights, experiment.probs,
        experiment.total_count, rng_key=jax.random.key(1),
    )
    result = fit_multinomial_mixture(counts, 3, num_restarts=10, rng_key=rng_key)
    truth = MultinomialMixtureParams(experiment.weights, experiment.probs)
    aligned, _ = align_components(result.params, truth)
    np.testing.assert_allclose(aligned.probs, experiment.probs, atol=0.02)
    weights = experiment.weights
    standard_error = np.sqrt(weights * (1 - weights) / len(counts))
    assert np.all(np.abs(aligned.weights - weights) < 4 * standard_error)


def test_criteria_match_their_formulas(rng_key):
    counts, groups = simulate(25, num_groups=4)
    counts[:2] = 0  # empty rows count neither in N nor in the entropy
    with pytest.warns(DataWarning):
        result = fit_multinomial_mixture(counts, 3, rng_key=rng_key)
    weights, probs = np.asarray(result.params.weights), np.asarray(result.params.probs)
    joint = reference_log_joint(weights, probs, counts[2:])
    total = logsumexp(joint, axis=1).sum()
    num_rows, num_params = len(counts) - 2, 2 + 3 * (counts.shape[1] - 1)
    bic = -2 * total + num_params * np.log(num_rows)
    np.testing.assert_allclose(float(multinomial_bic(result.params, counts)), bic,
                               rtol=1e-12)
    resp = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    entropy = -np.sum(resp * np.log(np.where(resp > 0, resp, 1.0)))
    icl = float(multinomial_icl(result.params, counts))
    np.testing.assert_allclose(icl, bic + 2 * entropy, rtol=1e-12)
    assert icl >= float(multinomial_bic(result.params, counts))
    # Grouped: G(K-1) + K(C-1) parameters, held-out rows mapped by label.
    with pytest.warns(DataWarning):
        grouped = fit_multinomial_mixture(counts, 3, groups=groups, rng_key=rng_key)
    grouped_params = 4 * 2 + 3 * (counts.shape[1] - 1)
    total = float(jnp.sum(log_likelihood(grouped.params, counts, groups)))
    np.testing.assert_allclose(
        float(multinomial_bic(grouped.params, counts, groups)),
        -2 * total + grouped_params * np.log(num_rows), rtol=1e-12,
    )
    labels = np.array([10, 20, 30, 40])
    np.testing.assert_allclose(
        float(heldout_log_likelihood(grouped.params, counts, labels[groups],
                                     group_labels=labels)),
        total, rtol=1e-13,
    )


def trinomial_split(name, seed):
    experiment = TRINOMIAL_EXPERIMENTS[name]
    counts, _ = make_dataset(
        experiment.num_rows, experiment.weights, experiment.probs,
        experiment.total_count, rng_key=jax.random.key(seed),
    )
    train, test = random_split(len(counts), rng_key=jax.random.key(seed + 1))
    return counts[train], counts[test]


@pytest.mark.slow
def test_bic_selects_three_overlapping_components():
    """Tutorial §4.4: three overlapping trinomials (n = 16), ~100k rows, 80/20.

    All 100k rows are used: with 16 trials over 3 categories there are only 153
    distinct rows, so after folding the cost does not depend on the row count.
    K = 2..5 is enough to see the minimum at 3 and the rise after it (sweeping
    K = 2..14 also selected 3 for data seeds 2 to 5).
    """
    train, test = trinomial_split("overlapping", 1)
    selection = select_num_components_multinomial(
        train, range(2, 6), num_restarts=10, heldout_counts=test,
        rng_key=jax.random.key(3),
    )
    assert selection.best_num_components == 3, selection.table
    table = selection.table.set_index("num_components")
    # Held-out log-likelihood: the jump from K = 2 to K = 3 (about 100 nats on
    # 20k rows over seeds 1-5) dwarfs later changes, which are fitting noise of a
    # few nats (below the BIC penalty of ln(80000) / 2 = 5.6 nats per parameter).
    gain = table["heldout_log_likelihood"].diff()
    assert gain[3] > 50 and np.all(np.abs(gain[4:]) < 10), gain
    assert np.all(table["icl"] >= table["bic"])


@pytest.mark.slow
def test_bic_selects_about_ten_grid_components():
    """Tutorial §4.4: ten components on a simplex grid; the reference found K = 11.

    Sweeping every K = 2..14 for data seeds 2 to 5 selected 10, 11, 10, 10; the
    test keeps the K values around the plateau and two below it.
    """
    train, test = trinomial_split("ten_components", 1)
    selection = select_num_components_multinomial(
        train, [2, 6, 8, 9, 10, 11, 12, 14], num_restarts=10,
        heldout_counts=test, rng_key=jax.random.key(3),
    )
    assert 9 <= selection.best_num_components <= 12, selection.table
    heldout = selection.table.set_index("num_components")["heldout_log_likelihood"]
    # A plateau from about K = 7: later gains are tiny next to the early ones.
    assert heldout[6] - heldout[2] > 1000 and abs(heldout[14] - heldout[10]) < 20
