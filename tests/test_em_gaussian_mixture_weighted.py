"""Sample weights in Gaussian-mixture EM: a weight per row equals repeating it.

``inference.em.fit_gaussian_mixture_weighted`` feeds the weights into the
jitted core's row weights; from a given start, EM on weighted rows and EM on
the rows repeated run the same arithmetic up to the order of summation.
"""

import warnings

import jax
import numpy as np
import pytest

from latentmix.inference.em import (
    fit_gaussian_mixture,
    fit_gaussian_mixture_weighted,
    fit_gaussian_mixture_weighted_restarts,
)
from latentmix.inference.em.gaussian_mixture.restarts import run_restarts
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 4])
    return x, rng.integers(0, 4, size=len(x))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows(covariance_type):
    x, weights = data()
    repeated = np.repeat(x, weights, axis=0)
    start = fit_gaussian_mixture(x, 3, covariance_type=covariance_type,
                                 rng_key=jax.random.key(0), max_iters=0).params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 runs max_iters: not converged
        ours = fit_gaussian_mixture_weighted(
            x, 3, sample_weight=weights, covariance_type=covariance_type,
            init=start, tol=0.0, max_iters=50, pad_to=128)
        reference = fit_gaussian_mixture(repeated, 3, covariance_type=covariance_type,
                                         init=start, tol=0.0, max_iters=50)
    # The same float64 sums in another order (weights v against v copies; zero
    # rows dropped and padding added): ~1e-16 relative per iteration, damped by
    # 50 contracting EM steps (measured ~2e-14); 1e-10 leaves room for BLAS.
    for ours_leaf, reference_leaf in zip(ours.params, reference.params, strict=True):
        np.testing.assert_allclose(ours_leaf, reference_leaf, atol=1e-10)
    np.testing.assert_allclose(ours.trace, reference.trace, atol=1e-10)
    np.testing.assert_allclose(ours.log_likelihood, reference.log_likelihood,
                               atol=1e-10)
    assert int(ours.num_iters) == int(reference.num_iters) == 50


def test_unit_weights_and_padding_change_nothing_from_a_start():
    x, _ = data(1)
    start = fit_gaussian_mixture(x, 2, rng_key=jax.random.key(1), max_iters=0).params
    plain = fit_gaussian_mixture(x, 2, init=start, tol=1e-8, max_iters=200)
    weighted = fit_gaussian_mixture_weighted(x, 2, init=start, tol=1e-8,
                                             max_iters=200, pad_to=200)
    assert int(weighted.num_iters) == int(plain.num_iters)
    # Zero-weight rows add exact zeros: only the summation order changes.
    np.testing.assert_allclose(weighted.params.means, plain.params.means, atol=1e-12)


def test_one_compiled_program_per_row_bucket():
    """pad_to makes data sets of different sizes reuse the compiled core."""
    x, _ = data(2)
    fit_gaussian_mixture_weighted(x[:50], 2, rng_key=jax.random.key(0), pad_to=96)
    before = run_restarts._cache_size()
    fit_gaussian_mixture_weighted(x[:70], 2, rng_key=jax.random.key(1), pad_to=96)
    fit_gaussian_mixture_weighted(x[:61], 2, sample_weight=np.arange(61) % 3,
                                  rng_key=jax.random.key(2), pad_to=96)
    assert run_restarts._cache_size() == before


def test_zero_weight_rows_take_no_part():
    x, weights = data(3)
    weights[::3] = 0
    restarts = fit_gaussian_mixture_weighted_restarts(
        x, 2, sample_weight=weights, rng_key=jax.random.key(0), num_restarts=3)
    dropped = fit_gaussian_mixture_weighted_restarts(
        x[weights > 0], 2, sample_weight=weights[weights > 0],
        rng_key=jax.random.key(0), num_restarts=3)
    np.testing.assert_array_equal(restarts.results.params.means,
                                  dropped.results.params.means)


@pytest.mark.parametrize(("weights", "message"), [
    (np.ones(5), "shape"),
    (-np.ones(80), "finite values >= 0"),
    (np.full(80, np.nan), "finite values >= 0"),
    (np.zeros(80), "every sample_weight is zero"),
])
def test_bad_weights_are_refused(weights, message):
    x, _ = data()
    with pytest.raises(ValueError, match=message):
        fit_gaussian_mixture_weighted(x, 2, sample_weight=weights,
                                      rng_key=jax.random.key(0))
