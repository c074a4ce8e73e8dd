"""Out-of-core EM for the Gaussian mixture: every iteration streams the chunks.

The M-step needs only the sufficient statistics ``steps.GMMStats`` (sums over
rows), so one EM iteration reads the rows chunk by chunk, adds up each chunk's
statistics and then updates the parameters: the same iteration as in memory
(``restarts``), summed in another order. Memory holds one chunk and the
statistics, whatever the number of rows.

The data live on the host, so the loop over iterations and chunks is a Python
loop (a ``lax.while_loop`` cannot read a file); each piece inside it is compiled
once: the statistics of a chunk (``chunk_statistics``: every chunk is padded to
``chunk_rows`` rows of weight zero, so all chunks share one program, and restarts
run under ``vmap``), their sum, and the M-step with the loop's bookkeeping
(``inference.em.driver.advance_restarts``, as for the multinomial mixture): per
restart, a restart that has stopped keeps its parameters while the others go
on.

Passes over the data:
  1. float64 column sums and cross-products on the host: n, the centre, the
     data covariance (for reseeding), constant columns;
  2. (random starts only) a uniform random sample of ``INIT_SAMPLE_ROWS`` rows
     (all rows when n is smaller, so the starts equal the in-memory ones), on
     which k-means++ and Lloyd run in memory;
  3. one pass per EM iteration, and one more for the objective at the final
     parameters.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.chunks import ChunkedRows
from latentmix.inference.compiler import em_jit
from latentmix.inference.em.driver import (
    EMRestarts,
    EMResult,
    advance_restarts,
    collect_restarts,
    initial_carry,
    stopping_rule_met,
)
from latentmix.inference.em.gaussian_mixture.checks import (
    check_constant_columns,
    check_init,
    check_options,
    prepare_prior,
)
from latentmix.inference.em.gaussian_mixture.outcome import best_fit
from latentmix.inference.em.gaussian_mixture.restarts import finished_result
from latentmix.inference.em.gaussian_mixture.starts import initial_params
from latentmix.inference.em.gaussian_mixture.steps import (
    LoopState,
    add_statistics,
    mean_log_likelihood,
    reseed_covariance_from,
    statistics,
    step_from_statistics,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.sharding import check_devices, padded_rows, place_rows
from latentmix.inference.threads import blas_on_one_thread
from latentmix.models.gaussian_mixture import GMMPrior, log_prior

__all__ = [
    "INIT_SAMPLE_ROWS",
    "chunk_statistics",
    "chunked_restarts",
    "fit_gaussian_mixture_chunked",
]

# k-means++ and Lloyd need the rows in memory: they run on a uniform sample of
# this many rows (a start only needs to land in the right basins).
INIT_SAMPLE_ROWS = 100_000


@follows_input_precision
def fit_gaussian_mixture_chunked(
    source: ChunkedRows,
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
) -> EMResult:
    """``fit_gaussian_mixture`` on rows read chunk by chunk (out of core).

    Arguments as ``fit_gaussian_mixture``; ``source`` is a
    ``data.chunks.ChunkedRows`` (a .npy read in chunks, parquet record batches,
    a chunk factory), read 3 + (iterations) times. ``fit_gaussian_mixture``
    given a ChunkedRows gives the same result. Returns the best restart's
    EMResult; raises ``AllRestartsFailedError`` as ``fit_gaussian_mixture``.
    """
    restarts, varying = chunked_restarts(
        source, num_components, covariance_type=covariance_type, init=init,
        num_restarts=num_restarts, max_iters=max_iters, tol=tol, rtol=rtol,
        reg_covar=reg_covar, prior=prior, rng_key=rng_key, devices=devices)
    return best_fit(restarts, varying, covariance_type=covariance_type,
                    reg_covar=reg_covar, max_iters=max_iters, tol=tol, rtol=rtol)


def chunked_restarts(
    source: ChunkedRows,
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
) -> tuple[EMRestarts, np.ndarray]:
    """Every restart on rows read chunk by chunk, nothing raised or warned.

    Returns:
      (EMRestarts, varying): every restart (``driver.EMRestarts``; nothing is
      raised when restarts fail) and (d,) True for the non-constant columns.
    """
    if not isinstance(source, ChunkedRows):
        raise TypeError(
            f"source must be a data.chunks.ChunkedRows, got "
            f"{type(source).__name__}; fit an in-memory array with "
            f"fit_gaussian_mixture"
        )
    options = check_options(num_components, covariance_type, num_restarts,
                            max_iters, tol, reg_covar, rtol)
    max_iters = options.max_iters
    devices = check_devices(devices)
    moments = _Moments(source)
    _check_source(moments, num_components, reg_covar, prior)
    dtype = moments.dtype
    num_features = source.num_columns
    centre = moments.centre.astype(dtype)
    prior = prepare_prior(prior, num_components, num_features, dtype)
    if prior is not None:
        prior = prior._replace(mean_prior=prior.mean_prior - centre)
    init_method, params, keys = check_init(
        init, rng_key, num_features, covariance_type, options.num_restarts, dtype
    )
    if params is None:
        sample_key = jax.random.fold_in(keys[0], 1)
        sample = _sample_rows(source, moments.num_rows, sample_key)
        params = _initial_starts(
            jnp.asarray(sample - centre, dtype), keys, jnp.asarray(reg_covar, dtype),
            prior, num_components=num_components, covariance_type=covariance_type,
            init_method=init_method,
        )
    else:
        params = params._replace(means=params.means - centre)
    num_restarts = params.weights.shape[0]
    reseed_covariance = reseed_covariance_from(
        jnp.asarray(moments.covariance, dtype), covariance_type,
        jnp.asarray(reg_covar, dtype),
    )
    num_rows = jnp.asarray(moments.num_rows, dtype)
    chunks = partial(_padded_chunks, source, centre, dtype, devices)

    def pass_statistics(params):
        total = None
        for chunk, weights in chunks():
            stats = chunk_statistics(params, chunk, weights,
                                     covariance_type=covariance_type)
            previous = total
            total = stats if total is None else _add(total, stats)
            # Dispatch is asynchronous: waiting for the previous sum bounds the
            # chunks in flight to two while the host reads the next one.
            jax.block_until_ready(previous)
        return total

    tol = jnp.asarray(tol, dtype)
    rtol = jnp.asarray(rtol, dtype)
    carry = initial_carry(LoopState(params, jnp.zeros(num_restarts, jnp.int32)),
                          max_iters, dtype, num_restarts)
    going = max_iters > 0
    # The iterations' programs with BLAS on one thread (``inference.threads``);
    # the host's pass over the chunks above kept every thread for its products.
    with blas_on_one_thread():
        while going:
            carry, active = _step(
                carry, pass_statistics(carry.params.params), num_rows,
                jnp.asarray(reg_covar, dtype), prior, reseed_covariance, tol, rtol,
                covariance_type=covariance_type, max_iters=max_iters,
            )
            going = bool(np.asarray(active).any())
        converged = stopping_rule_met(carry.objective, carry.delta, tol, rtol)
        state = carry.params
        params = state.params
        total = np.zeros(num_restarts)
        for chunk, weights in chunks():
            total += np.asarray(_chunk_log_likelihood(
                params, chunk, weights, covariance_type=covariance_type
            ))
    value = total / moments.num_rows
    if prior is not None:
        value = value + np.asarray(
            jax.vmap(lambda p: log_prior(p, prior, covariance_type))(params)
        ) / moments.num_rows
    results, failed = jax.vmap(partial(finished_result, centre=centre))(
        params, jnp.asarray(value, dtype), carry.num_iters, jnp.asarray(converged),
        carry.trace,
    )
    return collect_restarts(results, state.num_reseeds, failed), moments.varying


@partial(em_jit, static_argnames=("covariance_type",))
def chunk_statistics(params, chunk, row_weights, *, covariance_type):
    """GMMStats of one chunk for every restart (vmap over the params)."""
    return jax.vmap(lambda p: statistics(p, chunk, row_weights, covariance_type))(
        params
    )


class _Moments:
    """First pass: row count, centre, covariance, constant columns (float64)."""

    def __init__(self, source: ChunkedRows):
        origin = total = cross = low = high = None
        num_rows = 0
        dtype = None
        for chunk in source:
            if origin is None:
                # Sums about the first chunk's mean keep the float64 cross
                # products accurate for data far from the origin.
                origin = chunk.mean(axis=0, dtype=np.float64)
                total = np.zeros_like(origin)
                cross = np.zeros((origin.size, origin.size))
                low, high = chunk.min(axis=0), chunk.max(axis=0)
                dtype = chunk.dtype
            deviations = chunk.astype(np.float64) - origin
            total += deviations.sum(axis=0)
            cross += deviations.T @ deviations
            low = np.minimum(low, chunk.min(axis=0))
            high = np.maximum(high, chunk.max(axis=0))
            num_rows += chunk.shape[0]
        if num_rows == 0:
            raise ValueError(f"{source.description} holds no rows; nothing to fit")
        mean_deviation = total / num_rows
        self.num_rows = num_rows
        self.centre = origin + mean_deviation
        self.covariance = cross / num_rows - np.outer(mean_deviation, mean_deviation)
        self.varying = high > low
        self.dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _check_source(moments: _Moments, num_components, reg_covar, prior):
    """The in-memory fit's checks that need the data (``checks.check_data``)."""
    if moments.num_rows < 2:
        raise ValueError(f"x has {moments.num_rows} row(s); EM needs at least 2")
    if num_components > moments.num_rows:
        raise ValueError(
            f"num_components={num_components} exceeds the number of rows of x "
            f"({moments.num_rows}); use num_components <= {moments.num_rows}"
        )
    check_constant_columns(moments.varying, reg_covar, prior)


def _sample_rows(source: ChunkedRows, num_rows: int, rng_key) -> np.ndarray:
    """All rows if n <= INIT_SAMPLE_ROWS, else a uniform sample without replacement."""
    if num_rows <= INIT_SAMPLE_ROWS:
        return np.concatenate(list(source))
    # NumPy's Floyd-style draw without replacement needs memory for the sample
    # only (jax.random.choice would permute all n indices).
    seed = int(jax.random.randint(rng_key, (), 0, np.iinfo(np.int32).max))
    chosen = np.sort(np.random.default_rng(seed).choice(
        num_rows, INIT_SAMPLE_ROWS, replace=False
    ))
    parts, start = [], 0
    for chunk in source:
        stop = start + chunk.shape[0]
        inside = chosen[(chosen >= start) & (chosen < stop)] - start
        parts.append(chunk[inside])
        start = stop
    return np.concatenate(parts)


def _padded_chunks(source: ChunkedRows, centre, dtype, devices):
    """Centred chunks padded to one shape with zero-weight rows (and sharded)."""
    size = padded_rows(source.chunk_rows, devices)
    for chunk in source:
        rows = chunk.shape[0]
        centred = np.zeros((size, chunk.shape[1]), dtype)
        centred[:rows] = chunk - centre
        weights = np.zeros(size, dtype)
        weights[:rows] = 1.0
        placed, _, (weights,) = place_rows(centred, devices, (jnp.asarray(weights),))
        yield placed, weights


@partial(jax.jit, static_argnames=("num_components", "covariance_type",
                                   "init_method"))
def _initial_starts(sample, keys, reg_covar, prior, *, num_components,
                    covariance_type, init_method):
    """Starts (centred coordinates) of every restart from the in-memory sample."""
    weights = jnp.ones(sample.shape[0], sample.dtype)
    active = jnp.ones((num_components,), bool)
    return jax.vmap(
        lambda key: initial_params(key, sample, weights, active, num_components,
                                   covariance_type, init_method, reg_covar, prior)
    )(keys)


_add = jax.jit(jax.vmap(add_statistics))


@partial(jax.jit, static_argnames=("covariance_type", "max_iters"))
def _step(carry, stats, num_rows, reg_covar, prior, reseed_covariance, tol, rtol,
          *, covariance_type, max_iters):
    """One EM iteration from the summed statistics for every restart
    (``inference.em.driver.advance_restarts``): the carry, whose params are a
    ``steps.LoopState`` (parameters and reseed count), and per restart whether
    it goes on."""

    def one(state, stats):
        return step_from_statistics(state, stats, num_rows, covariance_type,
                                    reg_covar, prior, reseed_covariance)

    states, values = jax.vmap(one)(carry.params, stats)
    return advance_restarts(carry, states, values, tol, rtol, max_iters)


@partial(em_jit, static_argnames=("covariance_type",))
def _chunk_log_likelihood(params, chunk, row_weights, *, covariance_type):
    """sum_i v_i log p(x_i | theta) over one chunk, for every restart."""
    return jax.vmap(
        lambda p: mean_log_likelihood(p, chunk, row_weights, 1.0, covariance_type)
    )(params)
