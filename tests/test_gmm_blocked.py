"""Full-covariance statistics in row blocks (blocked.py) and the pair layout
(pairs.py), against sums written out directly.

The blocks change the order of summation only: both routes ("pairs", "whiten")
must give the statistics of ``steps.statistics`` with scipy responsibilities
to float64 rounding, whatever the block size, with padding rows of weight 0
anywhere; and a fit whose products do not fit in memory (so that every
iteration runs over blocks) must follow scikit-learn from the same start.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
import threadpoolctl
from sklearn.mixture import GaussianMixture

from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.inference.em.gaussian_mixture import blocked, pairs, restarts
from latentmix.models.gaussian_mixture import GMMParams


@pytest.mark.parametrize("num_features", [1, 2, 3, 5, 8, 16, 17, 33, 64])
def test_pair_layout_gives_quadratic_forms_and_second_moments(num_features):
    rng = np.random.default_rng(num_features)
    layout = pairs.pair_layout(num_features)
    # Every pair j <= l is covered, and the layout is never wider than d^2.
    covered = {(min(j, m), max(j, m)) for j, m, real in zip(
        layout.left, layout.right, layout.real, strict=True) if real}
    assert covered == {(j, m) for j in range(num_features)
                       for m in range(j, num_features)}
    assert layout.left.shape[0] <= max(num_features**2, 1)
    x = rng.normal(size=(num_features, 7))
    root = rng.normal(size=(num_features, num_features))
    precision = root @ root.T
    products = np.asarray(pairs.pairs_of_columns(jnp.asarray(x), layout))
    coefficients = np.asarray(pairs.pair_coefficients(jnp.asarray(precision), layout))
    np.testing.assert_allclose(coefficients @ products,
                               np.einsum("ib,ij,jb->b", x, precision, x),
                               rtol=1e-12, atol=1e-12)
    second = np.asarray(pairs.unpack_pairs(jnp.asarray(products.sum(axis=1)),
                                           layout, num_features))
    np.testing.assert_allclose(second, x @ x.T, rtol=1e-12, atol=1e-12)


def test_pairs_are_the_cheaper_route_except_for_few_components():
    assert pairs.pair_layout(64).left.shape[0] == 2112  # 2080 pairs j <= l
    assert pairs.pair_layout(16).left.shape[0] == 144  # 136 pairs
    assert blocked.full_route(16, 64) == "whiten"
    assert blocked.full_route(64, 64) == "pairs"
    assert blocked.full_route(16, 16) == "pairs"


def _problem(seed, num_rows=300, num_features=4, num_components=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_rows, num_features)) * rng.uniform(0.5, 2, num_features)
    x = x - x.mean(axis=0)
    means = rng.normal(size=(num_components, num_features))
    roots = rng.normal(size=(num_components, num_features, num_features))
    covariances = roots @ np.swapaxes(roots, 1, 2) / num_features + np.eye(
        num_features)
    weights = rng.dirichlet(np.ones(num_components))
    return x, GMMParams(weights, means, covariances)


@pytest.mark.parametrize("route", ["pairs", "whiten"])
@pytest.mark.parametrize("rows_per_block", [8, 64, 4096])
def test_block_statistics_equal_direct_sums(route, rows_per_block, monkeypatch):
    monkeypatch.setattr(blocked, "full_route", lambda k, d: route)
    monkeypatch.setattr(blocked, "block_rows",
                        lambda elements, rows, itemsize=8: rows_per_block)
    x, params = _problem(0)
    row_weights = np.ones(len(x))
    row_weights[[3, 100, 299]] = 0.0  # padding rows, anywhere
    densities = np.stack([w * st.multivariate_normal(m, c).pdf(x) for w, m, c in zip(
        *params, strict=True)], axis=1)
    resp = densities / densities.sum(axis=1, keepdims=True) * row_weights[:, None]
    shift = params.means + 0.1
    counts, sums, second, total, worst, worst_row, used_shift = (
        blocked.full_block_statistics(
            *(jnp.asarray(a) for a in (params.means, params.covariances,
                                       np.log(params.weights), x, row_weights,
                                       shift))))
    used_shift = np.asarray(used_shift)
    np.testing.assert_array_equal(used_shift, shift if route == "whiten" else 0.0)
    offsets = x[:, None, :] - used_shift[None]
    # float64 sums of 300 terms of size ~10: ~1e-13 relative.
    tolerance = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(counts, resp.sum(axis=0), **tolerance)
    np.testing.assert_allclose(sums, np.einsum("nc,ncd->cd", resp, offsets),
                               **tolerance)
    np.testing.assert_allclose(second, np.einsum("nc,ncd,nce->cde", resp, offsets,
                                                 offsets), **tolerance)
    log_norm = np.log(densities.sum(axis=1))
    np.testing.assert_allclose(total, np.sum(log_norm * row_weights), **tolerance)
    real = row_weights > 0
    np.testing.assert_allclose(worst, log_norm[real].min(), **tolerance)
    np.testing.assert_array_equal(worst_row, x[real][np.argmin(log_norm[real])])


@pytest.mark.parametrize("num_features, num_components", [(6, 3), (9, 1)])
def test_fit_over_blocks_follows_scikit_learn(num_features, num_components,
                                              monkeypatch):
    """No per-fit products (as at d = 64, n = 1e5): every iteration runs over
    row blocks; same start, 30 iterations, the same parameters as scikit-learn.
    (6, 3) takes the "pairs" route, (9, 1) the "whiten" route."""
    monkeypatch.setattr(restarts, "PRODUCTS_MAX_ELEMENTS", 0)
    x, start = _problem(1, num_rows=517, num_features=num_features,
                        num_components=num_components)
    x = x + 3.0  # not centred: the core centres
    start = start._replace(means=start.means + 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = fit_gaussian_mixture(x, num_components, init=start, tol=0.0,
                                    max_iters=30)
    with threadpoolctl.threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = GaussianMixture(
            num_components, tol=0.0, max_iter=30, weights_init=start.weights,
            means_init=start.means, precisions_init=np.linalg.inv(start.covariances),
            reg_covar=1e-6).fit(x)
    np.testing.assert_allclose(ours.params.means, reference.means_, atol=1e-10)
    np.testing.assert_allclose(ours.params.covariances, reference.covariances_,
                               atol=1e-10)
    np.testing.assert_allclose(ours.trace, reference.lower_bounds_, atol=1e-10)
    np.testing.assert_allclose(ours.log_likelihood, reference.score(x), atol=1e-10)
    assert jax.numpy.asarray(ours.log_likelihood).dtype == jnp.float64
