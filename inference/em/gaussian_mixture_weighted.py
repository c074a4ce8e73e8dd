"""Gaussian-mixture EM with sample weights (a weight per row).

``fit_gaussian_mixture_weighted(x, num_components, sample_weight=...)`` is
``inference.em.fit_gaussian_mixture`` on data whose row i counts ``sample_weight[i]``
times: the jitted core already carries a weight per row (0 for padding,
``inference.sharding``), so the weights go straight into it. Every sufficient
statistic is a weighted sum over rows (PRML eq. 9.24-9.27 with N_c = sum_i v_i
gamma_ic, v_i the weight) and the objective is the weighted mean per-row
log-likelihood

    (1 / sum_i v_i) sum_i v_i log p(x_i | theta),

so with integer weights, from a given start, the fit equals EM on the data with
row i repeated v_i times (tests/test_estimators_gaussian_mixture.py checks it).
Rows of weight 0 take no part in the fit. What the weights do not change: the
random seeding of a start ("kmeans++", "random_from_data") draws among the rows
of positive weight without regard to their size; the Lloyd steps and the M-step
of the start are weighted.

``pad_to``: the fit runs on at least that many rows, the extra ones of weight 0,
so that calls with different numbers of rows share one compiled program
(``latentmix.inference.GaussianMixture`` pads to size buckets). Padding changes
the random draws of a start (as device padding does), not the EM from a start.
"""

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.validation import check_matrix
from latentmix.inference.em.driver import EMRestarts, EMResult, collect_restarts
from latentmix.inference.em.gaussian_mixture.checks import (
    check_data,
    check_init,
    check_options,
    check_screen_iters,
    prepare_prior,
)
from latentmix.inference.em.gaussian_mixture.outcome import best_fit
from latentmix.inference.em.gaussian_mixture.restarts import run_restarts
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.sharding import (
    check_devices,
    padded_rows,
    place_rows,
    shard_rows,
    splits_rows,
)
from latentmix.inference.threads import blas_on_one_thread
from latentmix.models.gaussian_mixture import GMMPrior

__all__ = [
    "check_sample_weight",
    "fit_gaussian_mixture_weighted",
    "fit_gaussian_mixture_weighted_restarts",
]


@follows_input_precision
def fit_gaussian_mixture_weighted(
    x,
    num_components: int,
    *,
    sample_weight=None,
    covariance_type: str = "full",
    init="kmeans++",
    num_restarts: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    rtol: float = 0.0,
    reg_covar: float = 1e-6,
    prior: GMMPrior | None = None,
    rng_key=None,
    devices=None,
    screen_iters: int = 0,
    pad_to: int | None = None,
) -> EMResult:
    """``fit_gaussian_mixture`` with a weight per row (module docstring).

    Args:
      x: (n, d) data (in memory).
      sample_weight: (n,) finite weights >= 0 with a positive sum, or None
        (every row 1: then this is ``fit_gaussian_mixture``, up to padding).
      pad_to: run on max(n, pad_to) rows (zero-weight padding), so fits of
        different sizes reuse one compiled program.
      The other arguments are ``fit_gaussian_mixture``'s; ``num_components``
      must not exceed the number of rows of positive weight.

    Returns:
      EMResult of the best restart (highest weighted mean log-likelihood), with
      the warnings of ``fit_gaussian_mixture``.
    """
    restarts, varying = _weighted_restarts(
        x, num_components, sample_weight=sample_weight,
        covariance_type=covariance_type, init=init, num_restarts=num_restarts,
        max_iters=max_iters, tol=tol, rtol=rtol, reg_covar=reg_covar, prior=prior,
        rng_key=rng_key, devices=devices, screen_iters=screen_iters, pad_to=pad_to,
    )
    return best_fit(restarts, varying, covariance_type=covariance_type,
                    reg_covar=reg_covar, max_iters=max_iters, tol=tol, rtol=rtol)


@follows_input_precision
def fit_gaussian_mixture_weighted_restarts(
    x,
    num_components: int,
    *,
    sample_weight=None,
    covariance_type: str = "full",
    init="kmeans++",
    num_restarts: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    rtol: float = 0.0,
    reg_covar: float = 1e-6,
    prior: GMMPrior | None = None,
    rng_key=None,
    devices=None,
    screen_iters: int = 0,
    pad_to: int | None = None,
) -> EMRestarts:
    """Every restart of ``fit_gaussian_mixture_weighted`` (as
    ``fit_gaussian_mixture_restarts``: nothing raised, data warnings only)."""
    return _weighted_restarts(
        x, num_components, sample_weight=sample_weight,
        covariance_type=covariance_type, init=init, num_restarts=num_restarts,
        max_iters=max_iters, tol=tol, rtol=rtol, reg_covar=reg_covar, prior=prior,
        rng_key=rng_key, devices=devices, screen_iters=screen_iters, pad_to=pad_to,
    )[0]


def check_sample_weight(sample_weight, num_rows: int, dtype=np.float64) -> np.ndarray:
    """(n,) finite weights >= 0 with a positive sum (ones for None)."""
    if sample_weight is None:
        return np.ones(num_rows, dtype)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.ndim == 0:
        weights = np.full(num_rows, float(weights))
    if weights.shape != (num_rows,):
        raise ValueError(
            f"sample_weight must have shape ({num_rows},), one weight per row of "
            f"x, got {weights.shape}"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(
            "sample_weight must hold finite values >= 0 (a row's multiplicity)"
        )
    if not weights.sum() > 0:
        raise ValueError("every sample_weight is zero: no row takes part in the fit")
    return weights.astype(dtype)


@blas_on_one_thread()
def _weighted_restarts(x, num_components, *, sample_weight, covariance_type, init,
                       num_restarts, max_iters, tol, rtol, reg_covar, prior,
                       rng_key, devices, screen_iters, pad_to):
    """(EMRestarts, (d,) True for the non-constant columns of the weighted rows)."""
    options = check_options(num_components, covariance_type, num_restarts,
                            max_iters, tol, reg_covar, rtol)
    screen_iters = check_screen_iters(screen_iters, options.max_iters)
    x = check_matrix("x", x, min_rows=1, min_cols=1)
    weights = check_sample_weight(sample_weight, x.shape[0])
    # The core seeds its starts among the first rows of positive weight and
    # treats what follows as padding: keep only the rows that count.
    positive = weights > 0
    if not positive.all():
        x, weights = x[positive], weights[positive]
    x, varying = check_data(x, num_components, covariance_type, reg_covar, prior)
    num_features = x.shape[1]
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    prior = prepare_prior(prior, num_components, num_features, dtype)
    init_method, init_params, keys = check_init(
        init, rng_key, num_features, covariance_type, options.num_restarts, dtype
    )
    devices = check_devices(devices)
    num_rows = x.shape[0]
    if pad_to is not None and pad_to > num_rows:
        # Padding rows repeat the first row: real points, so every log-density
        # evaluated on them stays finite; their weight 0 removes them.
        x = np.concatenate([x, np.repeat(x[:1], pad_to - num_rows, axis=0)])
    total = padded_rows(x.shape[0], devices)
    weights = np.concatenate([weights, np.zeros(total - num_rows)]).astype(x.dtype)
    x, row_weights, (init_params, keys, prior) = place_rows(
        x, devices, (init_params, keys, prior)
    )
    weights = jnp.asarray(weights)
    if devices:
        weights = shard_rows(weights, devices)
    row_weights = row_weights * weights
    results, num_reseeds, failed = run_restarts(
        x,
        row_weights,
        init_params,
        keys,
        jnp.asarray(tol, dtype),
        jnp.asarray(rtol, dtype),
        jnp.asarray(reg_covar, dtype),
        prior,
        num_components=num_components,
        covariance_type=covariance_type,
        init_method=init_method,
        max_iters=options.max_iters,
        screen_iters=screen_iters if options.num_restarts > 1 else 0,
        sharded=splits_rows(devices),
    )
    return collect_restarts(results, num_reseeds, failed), varying
