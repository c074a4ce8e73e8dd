"""The public entry points of Gaussian-mixture EM.

``fit_gaussian_mixture`` returns the best restart (and warns about what deserves
attention, ``outcome.best_fit``); ``fit_gaussian_mixture_restarts`` returns
every restart. Both check their arguments (``checks``), then run the one jitted
program of ``restarts`` on rows in memory (sharded over ``devices`` if asked),
or hand a ``data.chunks.ChunkedRows`` to ``chunked.chunked_restarts``.
"""

import jax
import jax.numpy as jnp

from latentmix.data.chunks import ChunkedRows
from latentmix.inference.em.driver import (
    EMRestarts,
    EMResult,
    collect_restarts,
)
from latentmix.inference.em.gaussian_mixture.checks import (
    check_data,
    check_init,
    check_options,
    check_screen_iters,
    prepare_prior,
)
from latentmix.inference.em.gaussian_mixture.chunked import chunked_restarts
from latentmix.inference.em.gaussian_mixture.outcome import best_fit
from latentmix.inference.em.gaussian_mixture.restarts import run_restarts
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.sharding import check_devices, place_rows, splits_rows
from latentmix.inference.threads import blas_on_one_thread
from latentmix.models.gaussian_mixture import GMMPrior

__all__ = ["fit_gaussian_mixture", "fit_gaussian_mixture_restarts"]


@follows_input_precision
def fit_gaussian_mixture(
    x,
    num_components: int,
    *,
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
) -> EMResult:
    """Fit a Gaussian mixture by EM (maximum likelihood, or MAP with ``prior``).

    One jit-compiled call runs every restart (vmap) and every iteration
    (lax.while_loop); calling again with data of the same shape, dtype and static
    options (num_components, covariance_type, init method, max_iters, prior or
    not) reuses the compiled code, whatever tol, rtol, reg_covar, the data
    values, the prior's values or the key.

    Args:
      x: (n, d) data, n >= 2; float32 stays float32, integers become float64.
        Or a ``data.chunks.ChunkedRows`` (a .npy read in chunks, parquet record
        batches, a chunk factory) for exact out-of-core EM: every iteration
        streams the chunks (``fit_gaussian_mixture_chunked``).
      num_components: k, 1 <= k <= n.
      covariance_type: "full", "tied", "diag" or "spherical".
      init: "kmeans++" (k-means++ seeding plus 10 Lloyd steps, in JAX) or
        "random_from_data" (k distinct random rows): the start is then one
        M-step from the hard assignments of the rows to those centres. Or a
        GMMParams used as given ((k,) leaves, or (r, k) leaves for r stacked
        starts), e.g. to start from scikit-learn's or another fit's parameters.
      num_restarts: independent starts; the best finite one is returned.
      max_iters: bound on EM iterations (sizes ``trace``); 0 returns the start.
      tol: stopping rule (scikit-learn's): stop after iteration t >= 2 once
        |trace[t] - trace[t-1]| < tol + rtol |trace[t]|, the objective being
        the mean per-row log-likelihood (log posterior with a prior). tol=0
        (with rtol=0) runs exactly max_iters iterations (and warns that EM did
        not converge).
      rtol: relative tolerance of the same rule (``inference.em.driver``);
        0 (the default) is scikit-learn's absolute rule alone.
      reg_covar: added to every variance after each M-step (scikit-learn's floor).
      prior: a GMMPrior for MAP-EM with the prior of ``models.gaussian_mixture
        .model`` (then the objective is the mean log posterior per row); None for
        maximum likelihood.
      rng_key: JAX PRNG key; required unless ``init`` is a GMMParams.
      devices: None (JAX's default device), an int m (the first m of
        ``jax.devices()``) or a list of devices: data-parallel EM with the rows
        sharded over the devices (``inference.sharding``); the result equals
        the one-device fit up to floating-point summation order (and exactly
        the same starts when n is a multiple of the device count; otherwise the
        zero-weight padding rows change the random draws of the starts).
      screen_iters: 0 (default): every restart runs to its stopping rule and the
        best is returned (scikit-learn's ``n_init``). s > 0: every restart runs
        s iterations, then only the best of them continues ("em-EM" / small-EM
        starts, Biernacki, Celeux & Govaert 2003): r restarts then cost about
        r s + max_iters iterations instead of r x max_iters, at the risk of
        dropping a restart that starts slowly but would have ended higher.

    Returns:
      EMResult of the best restart: ``params`` (GMMParams in the units of x),
      ``log_likelihood`` (the objective recomputed at ``params``: mean per-row
      log-likelihood, or mean per-row log posterior with a prior), ``num_iters``,
      ``converged`` and ``trace``.

    Raises:
      AllRestartsFailedError: (a FloatingPointError) every restart's objective
        turned non-finite.

    Warns:
      ConvergenceWarning: the best restart reached max_iters (max_iters > 0).
      DataWarning: constant columns, fewer distinct rows than components, empty
        components reseeded, or components collapsed onto the reg_covar floor.
    """
    restarts, varying = _fit_restarts(
        x, num_components, covariance_type=covariance_type, init=init,
        num_restarts=num_restarts, max_iters=max_iters, tol=tol, rtol=rtol,
        reg_covar=reg_covar, prior=prior, rng_key=rng_key, devices=devices,
        screen_iters=screen_iters,
    )
    return best_fit(restarts, varying, covariance_type=covariance_type,
                    reg_covar=reg_covar, max_iters=max_iters, tol=tol, rtol=rtol)


@follows_input_precision
def fit_gaussian_mixture_restarts(
    x,
    num_components: int,
    *,
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
) -> EMRestarts:
    """Run every restart of ``fit_gaussian_mixture`` and return them all.

    Same arguments as ``fit_gaussian_mixture``; nothing is raised when restarts
    fail (``failed``, ``best_index == -1``), and only data warnings are emitted.
    Returns a ``driver.EMRestarts`` (also known as ``GMMRestarts``).
    """
    return _fit_restarts(
        x, num_components, covariance_type=covariance_type, init=init,
        num_restarts=num_restarts, max_iters=max_iters, tol=tol, rtol=rtol,
        reg_covar=reg_covar, prior=prior, rng_key=rng_key, devices=devices,
        screen_iters=screen_iters,
    )[0]


@blas_on_one_thread()
def _fit_restarts(x, num_components, *, covariance_type, init, num_restarts,
                  max_iters, tol, rtol, reg_covar, prior, rng_key, devices,
                  screen_iters):
    """(EMRestarts, (d,) True for the non-constant columns of x)."""
    options = check_options(num_components, covariance_type, num_restarts,
                            max_iters, tol, reg_covar, rtol)
    screen_iters = check_screen_iters(screen_iters, options.max_iters)
    if isinstance(x, ChunkedRows):
        if screen_iters:
            raise ValueError(
                "screen_iters is not offered for chunked data; pass "
                "screen_iters=0 (each restart then streams the data once per "
                "iteration, under vmap)"
            )
        return chunked_restarts(
            x, num_components, covariance_type=covariance_type, init=init,
            num_restarts=num_restarts, max_iters=max_iters, tol=tol, rtol=rtol,
            reg_covar=reg_covar, prior=prior, rng_key=rng_key, devices=devices,
        )
    x, varying = check_data(x, num_components, covariance_type, reg_covar, prior)
    num_features = x.shape[1]
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    prior = prepare_prior(prior, num_components, num_features, dtype)
    init_method, init_params, keys = check_init(
        init, rng_key, num_features, covariance_type, options.num_restarts, dtype
    )
    devices = check_devices(devices)
    x, row_weights, (init_params, keys, prior) = place_rows(
        x, devices, (init_params, keys, prior)
    )
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
