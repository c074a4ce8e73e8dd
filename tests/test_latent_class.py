"""The latent class model and its EM (checklist item 4) against brute force.

References, never our own code: the joint probability written as an explicit
sum over every assignment of the latent classes (and every value of a missing
answer) with Python loops; scipy's Dirichlet density; an EM step written with
loops from the derivation; scipy.optimize on a softmax parametrisation; the
unconstrained dimension NumPyro gives the model. All in float64.
"""

import itertools

import jax
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density
from scipy.special import logsumexp, softmax

from latentmix.inference.align import align_components
from latentmix.inference.em.driver import AllRestartsFailedError
from latentmix.inference.em.latent_class import (
    fit_latent_class,
    fit_latent_class_restarts,
    run_restarts,
)
from latentmix.models.latent_class import (
    MISSING,
    LatentClassParams,
    LatentClassPrior,
    full_table_num_parameters,
    log_likelihood,
    log_prior,
    model,
    num_parameters,
    responsibilities,
    sample,
)


def random_params(seed, num_classes=2, num_variables=3, num_values=3):
    rng = np.random.default_rng(seed)
    return LatentClassParams(
        rng.dirichlet(np.ones(num_classes)),
        rng.dirichlet(np.ones(num_values), size=(num_classes, num_variables)))


def brute_force_probability(params, row):
    """p(x) = sum_l w_l prod_j p_lj[x_j], summing a missing answer over its values."""
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    num_values = probs.shape[-1]
    choices = [range(num_values) if value == MISSING else [value] for value in row]
    total = 0.0
    for completed in itertools.product(*choices):
        for cls in range(len(weights)):
            term = weights[cls]
            for j, value in enumerate(completed):
                term *= probs[cls, j, value]
            total += term
    return total


def test_log_likelihood_equals_enumerating_every_class_assignment():
    """n = 4 rows, L = 2: the product over rows of the per-row sums equals the sum
    over all L^n joint assignments (t_1..t_4), enumerated explicitly."""
    params = random_params(0)
    answers = np.array([[0, 1, 2], [2, 2, 0], [1, 0, 1], [0, 0, 0]])
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    total = 0.0
    for assignment in itertools.product(range(2), repeat=len(answers)):
        term = 1.0
        for row, cls in zip(answers, assignment, strict=True):
            term *= weights[cls] * np.prod([probs[cls, j, v] for j, v in
                                            enumerate(row)])
        total += term
    # Sums and products of 16 positive terms: exact to a few ulps.
    np.testing.assert_allclose(float(np.sum(log_likelihood(params, answers))),
                               np.log(total), rtol=1e-13)


def test_missing_answers_are_marginalised_exactly():
    params = random_params(1, num_classes=3, num_variables=4, num_values=3)
    answers = np.array([[0, MISSING, 2, 1], [MISSING, MISSING, 0, 2],
                        [1, 1, 1, MISSING]])
    expected = [np.log(brute_force_probability(params, row)) for row in answers]
    np.testing.assert_allclose(log_likelihood(params, answers), expected,
                               rtol=1e-13)


def test_the_joint_table_sums_to_one_over_all_v_to_the_m_cells():
    params = random_params(2, num_classes=2, num_variables=4, num_values=3)
    cells = np.array(list(itertools.product(range(3), repeat=4)))
    assert len(cells) == full_table_num_parameters(4, 3) + 1
    probability = np.exp(np.asarray(log_likelihood(params, cells)))
    np.testing.assert_allclose(probability.sum(), 1.0, rtol=1e-13)
    np.testing.assert_allclose(
        probability, [brute_force_probability(params, row) for row in cells],
        rtol=1e-12)


def test_responsibilities_are_bayes_rule():
    params = random_params(3, num_classes=3)
    answers = np.array([[0, 1, 2], [2, MISSING, 0]])
    resp = np.asarray(responsibilities(params, answers))
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    for i, row in enumerate(answers):
        joint = np.array([weights[c] * np.prod([probs[c, j, v] for j, v in
                                                enumerate(row) if v != MISSING])
                          for c in range(3)])
        np.testing.assert_allclose(resp[i], joint / joint.sum(), rtol=1e-12)


def test_parameter_counts_against_numpyro_and_the_hiring_example():
    # The latent class count is the unconstrained dimension NumPyro gives the
    # model's sites (each simplex of size V has V - 1 free coordinates).
    answers = np.array([[0, 1, 2, 0, 1], [2, 2, 0, 1, 1]])
    trace = handlers.trace(handlers.seed(model, jax.random.key(0))).get_trace(
        answers, 3, num_values=3)
    dimension = sum(
        np.size(biject_to(site["fn"].support).inv(site["value"]))
        for site in trace.values()
        if site["type"] == "sample" and not site["is_observed"])
    assert num_parameters(3, 5, 3) == dimension == 2 + 5 * 3 * 2
    # The hiring example: 5 variables of 3 values, a latent variable with 3 values.
    assert full_table_num_parameters(5, 3) == 3**5 - 1 == 242
    assert num_parameters(3, 5, 3) == 32
    # Exponential against linear in m: at m = 20 the table needs 3.5e9 numbers.
    assert full_table_num_parameters(20, 3) > 10**9 > num_parameters(3, 20, 3)


def test_numpyro_log_density_is_log_likelihood_plus_dirichlet_priors():
    params = random_params(4)
    answers = np.array([[0, 1, 2], [2, MISSING, 0], [1, 1, 1]])
    prior = LatentClassPrior(2.0, 1.5)
    got, _ = log_density(model, (answers, 2), {"prior": prior},
                         {"weights": params.weights, "probs": params.probs})
    expected = (np.sum([np.log(brute_force_probability(params, row))
                        for row in answers])
                + scipy.stats.dirichlet.logpdf(params.weights, [2.0, 2.0])
                + sum(scipy.stats.dirichlet.logpdf(p, np.full(3, 1.5))
                      for p in np.asarray(params.probs).reshape(-1, 3)))
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)
    np.testing.assert_allclose(float(log_prior(params, prior)),
                               expected - np.sum(np.log([brute_force_probability(
                                   params, row) for row in answers])), rtol=1e-12)


# --- EM -------------------------------------------------------------------------------


def reference_em_step(params, answers, a=1.0, b=1.0):
    """One EM step from the derivation, with loops; missing answers skipped."""
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    num_classes, num_variables, num_values = probs.shape
    resp = np.zeros((len(answers), num_classes))
    for i, row in enumerate(answers):
        for c in range(num_classes):
            resp[i, c] = weights[c] * np.prod([probs[c, j, v] for j, v in
                                               enumerate(row) if v != MISSING])
        resp[i] /= resp[i].sum()
    new_weights = (resp.sum(0) + a - 1) / (len(answers) + num_classes * (a - 1))
    new_probs = np.zeros_like(probs)
    for c in range(num_classes):
        for j in range(num_variables):
            for v in range(num_values):
                new_probs[c, j, v] = sum(resp[i, c] for i in range(len(answers))
                                         if answers[i, j] == v) + b - 1
            new_probs[c, j] /= new_probs[c, j].sum()
    return LatentClassParams(new_weights, new_probs)


@pytest.mark.parametrize("prior", [None, LatentClassPrior(2.0, 1.5)])
def test_em_steps_match_the_derivation(prior):
    params = random_params(5, num_classes=3, num_variables=4, num_values=3)
    answers, _ = sample(random_params(6, 3, 4, 3), 40, rng_key=jax.random.key(1),
                        missing_rate=0.2)
    a, b = (1.0, 1.0) if prior is None else prior
    expected = params
    for _ in range(3):
        expected = reference_em_step(expected, answers, a, b)
    with pytest.warns(UserWarning, match="did not converge"):
        fit = fit_latent_class(answers, 3, init=params, max_iters=3, tol=0.0,
                               prior=prior, num_values=3)
    # Three steps of sums over 40 rows: rounding ~1e-15, amplified little.
    np.testing.assert_allclose(fit.params.weights, expected.weights, rtol=1e-11)
    np.testing.assert_allclose(fit.params.probs, expected.probs, rtol=1e-11)


def test_trace_never_decreases_and_reports_the_model_log_likelihood():
    truth = random_params(7, num_classes=3, num_variables=5, num_values=3)
    answers, _ = sample(truth, 300, rng_key=jax.random.key(2), missing_rate=0.1)
    fit = fit_latent_class(answers, 3, num_restarts=4, rng_key=jax.random.key(3))
    trace = np.asarray(fit.trace[: int(fit.num_iters)])
    # EM ascent: each step's change is >= 0 up to float rounding of a mean of
    # 300 log terms (~1e-15 relative).
    assert np.all(np.diff(trace) >= -1e-12), np.diff(trace).min()
    np.testing.assert_allclose(
        float(fit.log_likelihood),
        np.mean([np.log(brute_force_probability(fit.params, row)) for row in answers]),
        rtol=1e-12)
    assert bool(fit.converged)


def test_em_reaches_the_maximum_a_generic_optimiser_finds_on_tiny_data():
    """6 rows, L = 2, m = 3, V = 2: scipy's BFGS on softmax coordinates from 30
    starts; the best EM restart must be at least as likely, to the optimisers'
    tolerance (BFGS gtol 1e-8 on a function of order 1: ~1e-9 in value)."""
    answers = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0],
                        [1, 0, 1]])

    def negative_log_likelihood(theta):
        weights = softmax(np.r_[0.0, theta[:1]])
        probs = softmax(np.c_[np.zeros(6), theta[1:]].reshape(2, 3, 2), axis=-1)
        return -sum(np.log(brute_force_probability(
            LatentClassParams(weights, probs), row)) for row in answers)

    rng = np.random.default_rng(0)
    best = min(scipy.optimize.minimize(negative_log_likelihood, rng.normal(0, 2, 7),
                                       method="BFGS", options={"gtol": 1e-8}).fun
               for _ in range(30))
    fit = fit_latent_class(answers, 2, num_restarts=30, rng_key=jax.random.key(4),
                           tol=1e-13, max_iters=20_000)
    assert -len(answers) * float(fit.log_likelihood) <= best + 1e-7


def test_em_recovers_simulated_classes_up_to_a_permutation():
    truth = LatentClassParams(
        np.array([0.5, 0.3, 0.2]),
        np.array([[[0.8, 0.1, 0.1]] * 5, [[0.1, 0.8, 0.1]] * 5,
                  [[0.1, 0.1, 0.8]] * 5]))
    answers, classes = sample(truth, 4000, rng_key=jax.random.key(5),
                              missing_rate=0.1)
    fit = fit_latent_class(answers, 3, num_restarts=5, rng_key=jax.random.key(6))
    aligned, _ = align_components(fit.params, truth)
    # Binomial standard errors: a weight has sd sqrt(w(1-w)/n) <= 0.008; an answer
    # probability of class l rests on ~0.9 n w_l >= 720 answers, sd <= 0.015, and
    # the classes are well separated (posterior class probabilities ~0.99), so the
    # classification adds little. 4 sd.
    np.testing.assert_allclose(aligned.weights, truth.weights, atol=0.035)
    np.testing.assert_allclose(aligned.probs, truth.probs, atol=0.06)


def test_restarts_run_under_one_program_and_the_best_is_returned():
    truth = random_params(8, num_classes=3, num_variables=4, num_values=3)
    answers, _ = sample(truth, 200, rng_key=jax.random.key(7))
    restarts = fit_latent_class_restarts(answers, 3, num_restarts=6,
                                         rng_key=jax.random.key(8))
    scores = np.asarray(restarts.results.log_likelihood)
    assert scores.shape == (6,) and restarts.best_index == int(np.argmax(scores))
    before = run_restarts._cache_size()
    other, _ = sample(truth, 200, rng_key=jax.random.key(9))
    fit_latent_class_restarts(other, 3, num_restarts=6, rng_key=jax.random.key(10),
                              tol=1e-6)
    assert run_restarts._cache_size() == before  # new values, same shapes


def test_every_restart_failing_raises_the_drivers_error():
    start = LatentClassParams(np.array([0.5, 0.5]),
                              np.array([[[1.0, 0.0]] * 2, [[1.0, 0.0]] * 2]))
    with pytest.raises(AllRestartsFailedError, match="impossible under every class"):
        fit_latent_class(np.array([[0, 1], [0, 0]]), 2, init=start)


@pytest.mark.parametrize("answers, match", [
    (np.array([[0, 3]]), "codes must lie in 0..2"),
    (np.array([[MISSING, MISSING], [0, 1]]), "every answer missing"),
    (np.array([0, 1]), "2-D table"),
    (np.array([[0.5, 1.0]]), "integer codes"),
])
def test_bad_answers_are_rejected(answers, match):
    with pytest.raises(ValueError, match=match):
        fit_latent_class(answers, 2, num_values=3, rng_key=jax.random.key(0))


def test_bad_options_are_rejected():
    answers = np.array([[0, 1], [1, 0], [1, 1]])
    with pytest.raises(ValueError, match="rng_key is required"):
        fit_latent_class(answers, 2)
    with pytest.raises(ValueError, match="must be >= 1 for MAP-EM"):
        fit_latent_class(answers, 2, prior=LatentClassPrior(0.5, 1.0),
                         rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="simplex"):
        fit_latent_class(answers, 2, init=LatentClassParams(
            np.array([0.7, 0.7]), np.full((2, 2, 2), 0.5)))


def test_log_likelihood_from_logsumexp_and_loops_agree_on_a_larger_table():
    params = random_params(9, num_classes=4, num_variables=6, num_values=4)
    answers, _ = sample(params, 50, rng_key=jax.random.key(11), missing_rate=0.3)
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    expected = []
    for row in answers:
        terms = [np.log(weights[c]) + sum(np.log(probs[c, j, v]) for j, v in
                                          enumerate(row) if v != MISSING)
                 for c in range(4)]
        expected.append(logsumexp(terms))
    np.testing.assert_allclose(log_likelihood(params, answers), expected, rtol=1e-12)


@pytest.mark.slow
def test_crosscheck_em_map_and_nuts_agree():
    """The library's cross-check (inference.crosscheck.latent_class): EM, MAP
    and NUTS of the same model agree, every row within its stated tolerance."""
    from latentmix.inference.crosscheck import crosscheck_latent_class

    truth = LatentClassParams(np.array([0.6, 0.4]),
                              np.array([[[0.8, 0.2]] * 4, [[0.25, 0.75]] * 4]))
    answers, _ = sample(truth, 1000, rng_key=jax.random.key(20), missing_rate=0.1)
    # 1,000 draws per chain: with 500 the largest relabelled r_hat was
    # 1.003-1.0105 over keys 21-24 (the gate is 1.01), so a change of rounding
    # alone could fail it.
    check = crosscheck_latent_class(answers, 2, rng_key=jax.random.key(21),
                                    methods=("map", "nuts"), num_warmup=500,
                                    num_samples=1000)
    assert check.table["passed"].all(), check.table
    assert {"log-likelihood vs loops", "the joint sums to 1", "EM vs AutoDelta MAP",
            "NUTS raw draws: label switching", "NUTS relabelled draws: r_hat",
            "EM inside NUTS 94% HDI"} <= set(check.table["check"])
