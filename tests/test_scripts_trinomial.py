"""Checklist item 14: the tutorial's synthetic trinomial experiments
(scripts/trinomial.py), against what the data-generating process implies."""

import numpy as np

from latentmix.scripts.trinomial import run_experiment


def test_well_separated_mixture_selects_three_and_recovers_the_probabilities():
    """alpha = (0.1, 0.1, 0.8): with restarts BIC picks the true K = 3 (the
    reference's single restart picked 4 after a local optimum at 3). Each row of
    the fitted probabilities rests on >= 800 training rows x 16 trials, so its
    binomial standard error is <= sqrt(0.8 x 0.2 / 12800) = 0.0035; the tutorial's
    +-0.02 is over 5 standard errors."""
    result = run_experiment("well_separated", (2, 3, 4, 5), num_restarts=4, seed=0)
    assert result["chosen_k"] == 3, result["table"]
    assert result["max_probs_error"] < 0.02
    np.testing.assert_allclose(result["fit_at_true_k"].weights,
                               [0.1, 0.1, 0.8], atol=4 * np.sqrt(0.16 / 8000))


def test_bic_grows_about_linearly_past_the_true_k():
    """Overlapping components (true K = 3), N = 80,000 training rows. Each extra
    component adds C = 3 parameters, so the penalty grows by 3 ln N = 33.9 per
    component; the maximised log-likelihood of nested models gains only fitting
    noise past the truth (chi^2_3 / 2 nats on average), so the slope of BIC lies
    between 3 ln N - 2 x 3 (twice the mean noise gain) and 3 ln N plus a nat of
    EM stopping slack, and the points lie on a line (R^2 > 0.99)."""
    result = run_experiment("overlapping", (3, 6, 9, 12), num_restarts=4, seed=1)
    assert result["chosen_k"] == 3, result["table"]
    growth = result["growth"]
    expected = 3 * np.log(result["num_train"])
    np.testing.assert_allclose(growth["expected_slope"], expected)
    assert expected - 6 <= growth["slope"] <= expected + 1, growth
    assert growth["r_squared"] > 0.99, growth
