"""Online (stepwise) EM for the Gaussian mixture: data that arrive in batches.

Stepwise EM (Cappe & Moulines 2009; Liang & Klein 2009) keeps a running average
of the per-row sufficient statistics instead of their sum over all the data.
With s_t the average after t batches, s-hat(B) the mean over the rows of batch
B of the per-row statistics at the current parameters theta_t (counts
gamma_ic, sums gamma_ic x_i, second moments gamma_ic x_i x_i^T or their
diagonal / trace, as ``steps.GMMStats``), and a step size

    gamma_t = (t + tau)^(-kappa)   (tau = step_size_offset >= 0,
                                    kappa = step_size_power in (1/2, 1];
                                    gamma_0 = 1: the first batch sets s_1),

every batch makes one update and one M-step:

    s_{t+1} = (1 - gamma_t) s_t + gamma_t s-hat(B_t),
    theta_{t+1} = M-step(s_{t+1})  (``steps.m_step_from_statistics``; the
                                    M-step is invariant to the scale of s).

sum_t gamma_t = inf and sum_t gamma_t^2 < inf (kappa in (1/2, 1]) make theta_t
converge to a stationary point of the likelihood when the batches are draws
from the data; kappa = 1 with tau = 0 would average the batches with equal
weights (incremental EM's fixed point, but slow to forget the early, poor
statistics).

The public surface is a state and one step, so that an estimator's
``partial_fit(X)`` is ``state = online_step(state, X)``:

  ``online_start(batch, num_components, ...)`` -> ``OnlineState``: the start
      drawn on a first batch (``starts``), the data centre fixed to that
      batch's mean (statistics about it keep float32 accurate), no statistics
      yet (t = 0);
  ``online_step(state, batch)`` -> ``OnlineState``: one update and M-step (one
      jitted program per batch shape and covariance type; a batch smaller than
      the last one is padded with rows of weight 0 by ``fit_*_online``);
  ``fit_gaussian_mixture_online(source, num_components, ...)``: ``num_epochs``
      passes over an array (shuffled each pass) or a ``data.chunks.ChunkedRows``
      (chunks re-cut into batches, in order), then the mean log-likelihood of
      every row at the final parameters (one more pass; ``score=False`` skips
      it).

Maximum likelihood only (a prior's pseudo-counts would need the data size the
averages hide); ``reg_covar`` is added after every M-step as in batch EM;
components are not reseeded (a component whose averaged count falls to 0 keeps
its last parameters' shape through the 10 eps of ``m_step_from_statistics``).
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.batches import array_batches, chunk_batches
from latentmix.data.chunks import ChunkedRows
from latentmix.data.validation import check_int, check_matrix, check_nonnegative
from latentmix.inference.compiler import em_jit
from latentmix.inference.em.gaussian_mixture.checks import check_init
from latentmix.inference.em.gaussian_mixture.starts import initial_params
from latentmix.inference.em.gaussian_mixture.steps import (
    GMMStats,
    m_step_from_statistics,
    statistics,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.threads import blas_on_one_thread
from latentmix.models.gaussian_mixture import GMMParams, check_covariance_type

__all__ = [
    "OnlineOptions",
    "OnlineResult",
    "OnlineState",
    "fit_gaussian_mixture_online",
    "online_start",
    "online_step",
    "score_online",
]


class OnlineOptions(NamedTuple):
    """What every step of one online fit shares (static, not traced)."""

    covariance_type: str
    reg_covar: float
    step_size_offset: float
    step_size_power: float


class OnlineState(NamedTuple):
    """Where stepwise EM stands after ``num_steps`` batches.

    params: GMMParams in the data's units (what an estimator reports).
    stats: ``GMMStats`` of running averages per row, about ``centre`` (None
        before the first step).
    num_steps: t, the batches used so far.
    centre: (d,) the first batch's mean; statistics are about it.
    log_likelihood: mean log-likelihood per row of the last batch at the
        parameters it was given (before its update): a running, noisy monitor
        (NaN before the first step).
    options: ``OnlineOptions``.
    """

    params: GMMParams
    stats: GMMStats | None
    num_steps: int
    centre: jax.Array
    log_likelihood: jax.Array
    options: OnlineOptions


class OnlineResult(NamedTuple):
    """Outcome of ``fit_gaussian_mixture_online``.

    params: the final GMMParams (data units).
    log_likelihood: mean log-likelihood per row of all the data at ``params``
        (NaN with ``score=False``).
    num_steps: batches used; num_epochs: passes over the data.
    trace: (num_steps,) ``OnlineState.log_likelihood`` after every batch.
    state: the final ``OnlineState`` (``online_step`` continues from it).
    """

    params: GMMParams
    log_likelihood: jax.Array
    num_steps: int
    num_epochs: int
    trace: np.ndarray
    state: OnlineState


@follows_input_precision
def online_start(batch, num_components: int, *, covariance_type: str = "full",
                 init="kmeans", reg_covar: float = 1e-6, rng_key=None,
                 step_size_offset: float = 2.0,
                 step_size_power: float = 0.6) -> OnlineState:
    """The state before the first step: a start drawn on ``batch``.

    ``init``: a start method of ``starts.INIT_METHODS`` (drawn on this batch
    with ``rng_key``) or a GMMParams (k,) leaves in the data's units. The
    centre is the batch's mean. Nothing is fitted yet: pass the same batch
    (and the next ones) to ``online_step``.
    """
    batch = check_matrix("batch", batch, min_rows=1, min_cols=1)
    num_components = check_int("num_components", num_components, minimum=1)
    check_covariance_type(covariance_type)
    check_nonnegative("reg_covar", reg_covar)
    check_nonnegative("step_size_offset", step_size_offset)
    if not 0.5 < step_size_power <= 1.0:
        raise ValueError(
            f"step_size_power must be in (0.5, 1] (sum of steps infinite, sum of "
            f"squares finite), got {step_size_power!r}")
    num_rows, num_features = batch.shape
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(batch.dtype))
    init_method, init_params, keys = check_init(
        init, rng_key, num_features, covariance_type, 1, dtype)
    if init_params is None and num_components > num_rows:
        raise ValueError(
            f"num_components={num_components} exceeds the rows of the first batch "
            f"({num_rows}); the start is drawn on it: use a larger batch")
    x = jnp.asarray(batch, dtype)
    centre = jnp.mean(x, axis=0)
    if init_params is None:
        params = _start(keys[0], x - centre, jnp.asarray(reg_covar, dtype),
                        num_components=num_components,
                        covariance_type=covariance_type, init_method=init_method)
        params = params._replace(means=params.means + centre)
    else:
        params = jax.tree_util.tree_map(lambda leaf: leaf[0], init_params)
    options = OnlineOptions(covariance_type, float(reg_covar),
                            float(step_size_offset), float(step_size_power))
    return OnlineState(params, None, 0, centre, jnp.asarray(jnp.nan, dtype), options)


def online_step(state: OnlineState, batch, row_weights=None) -> OnlineState:
    """One stepwise-EM update on ``batch`` (module docstring): the new state.

    ``row_weights`` (n,): 1 per row by default, 0 for a padding row. A float64
    state computes in float64 whatever JAX's global mode
    (``inference.precision``).
    """
    if state.centre.dtype == np.float64 and not jax.config.jax_enable_x64:
        with jax.enable_x64(True):
            return _step(state, batch, row_weights)
    return _step(state, batch, row_weights)


@blas_on_one_thread()
def _step(state: OnlineState, batch, row_weights) -> OnlineState:
    dtype = state.centre.dtype
    x = jnp.asarray(batch, dtype)
    if x.ndim != 2 or x.shape[1] != state.centre.shape[0]:
        raise ValueError(f"batch must have shape (n, {state.centre.shape[0]}), got "
                         f"{tuple(x.shape)}")
    weights = (jnp.ones(x.shape[0], dtype) if row_weights is None
               else jnp.asarray(row_weights, dtype))
    options = state.options
    stats = state.stats
    if stats is None:
        stats = _zero_statistics(state.params, options.covariance_type)
    params, stats, value = _update(
        state.params, stats, jnp.asarray(state.num_steps, dtype), state.centre, x,
        weights, jnp.asarray(options.reg_covar, dtype),
        jnp.asarray(options.step_size_offset, dtype),
        jnp.asarray(options.step_size_power, dtype),
        covariance_type=options.covariance_type)
    return OnlineState(params, stats, state.num_steps + 1, state.centre, value,
                       options)


@follows_input_precision
@blas_on_one_thread()
def fit_gaussian_mixture_online(
    source,
    num_components: int,
    *,
    batch_size: int = 4096,
    num_epochs: int = 2,
    step_size_offset: float = 2.0,
    step_size_power: float = 0.6,
    covariance_type: str = "full",
    init="kmeans",
    reg_covar: float = 1e-6,
    rng_key=None,
    shuffle: bool = True,
    score: bool = True,
    callback: Callable[[int, OnlineState], None] | None = None,
) -> OnlineResult:
    """Fit a Gaussian mixture by stepwise EM over batches (module docstring).

    Args:
      source: (n, d) rows (each pass visits them in a new random order when
        ``shuffle``), or a ``data.chunks.ChunkedRows`` (chunks cut into batches
        in order; nothing but one chunk and one batch in memory).
      num_components: k.
      batch_size: rows per update; the last batch of a pass is padded with
        rows of weight 0 (one compiled program for every batch).
      num_epochs: passes over the data.
      step_size_offset, step_size_power: tau and kappa of gamma_t = (t +
        tau)^(-kappa), kappa in (1/2, 1].
      covariance_type, init, reg_covar: as ``fit_gaussian_mixture``; the start
        is drawn on the first batch.
      rng_key: JAX key for the start and the shuffling (required unless init
        is a GMMParams and shuffle is False).
      score: compute the mean log-likelihood of all the rows at the end (one
        more pass).
      callback: called as callback(epoch, state) after every pass.

    Returns:
      ``OnlineResult``; its ``state`` continues with ``online_step``.

    Raises:
      FloatingPointError: the parameters turned non-finite (a covariance
        became singular: increase reg_covar, or use larger batches).
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_epochs = check_int("num_epochs", num_epochs, minimum=1)
    if rng_key is None and (shuffle or isinstance(init, str)):
        raise ValueError("rng_key is required; pass e.g. rng_key=jax.random.key(0)")
    shuffle_key = None if rng_key is None else jax.random.fold_in(rng_key, 1)
    if isinstance(source, ChunkedRows):
        passes = partial(_chunk_pass, source, batch_size)
    else:
        x = check_matrix("x", source, min_rows=2, min_cols=1)
        passes = partial(_array_pass, x, batch_size, shuffle)
    state, trace = None, []
    for epoch in range(num_epochs):
        key = None if shuffle_key is None else jax.random.fold_in(shuffle_key, epoch)
        for batch, weights in passes(key):
            if state is None:
                state = online_start(
                    batch[weights > 0], num_components,
                    covariance_type=covariance_type, init=init, reg_covar=reg_covar,
                    rng_key=rng_key, step_size_offset=step_size_offset,
                    step_size_power=step_size_power)
            state = online_step(state, batch, weights)
            trace.append(state.log_likelihood)
        if callback is not None:
            callback(epoch, state)
    if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in state.params):
        raise FloatingPointError(
            "online EM: the parameters turned non-finite (a covariance became "
            f"singular); increase reg_covar (now {reg_covar}) or batch_size (now "
            f"{batch_size})")
    value = (score_online(state, passes(None)) if score
             else jnp.asarray(jnp.nan, state.centre.dtype))
    return OnlineResult(state.params, value, state.num_steps, num_epochs,
                        np.asarray(jnp.stack(trace)), state)


def score_online(state: OnlineState, batches) -> jax.Array:
    """Mean log-likelihood per row at ``state.params`` over (batch, weights)."""
    dtype = state.centre.dtype
    total = jnp.zeros((), dtype)
    count = 0.0
    for batch, weights in batches:
        total = total + _batch_log_likelihood(
            state.params, state.centre, jnp.asarray(batch, dtype),
            jnp.asarray(weights, dtype), covariance_type=state.options.covariance_type)
        count += float(np.sum(weights))
    return total / count


# ------------------------------------------------------------------ jitted


@partial(jax.jit, static_argnames=("num_components", "covariance_type",
                                   "init_method"))
def _start(key, x, reg_covar, *, num_components, covariance_type, init_method):
    weights = jnp.ones(x.shape[0], x.dtype)
    active = jnp.ones((num_components,), bool)
    return initial_params(key, x, weights, active, num_components, covariance_type,
                          init_method, reg_covar, None)


@partial(em_jit, static_argnames="covariance_type")
def _update(params, stats, num_steps, centre, x, row_weights, reg_covar, offset,
            power, *, covariance_type):
    """s <- (1 - g) s + g s-hat(batch), then the M-step (module docstring)."""
    centred = params._replace(means=params.means - centre)
    batch = statistics(centred, x - centre, row_weights, covariance_type,
                       about_origin=True)
    size = jnp.sum(row_weights)
    step = jnp.where(num_steps > 0, (num_steps + offset) ** (-power), 1.0)
    mixed = [(1.0 - step) * old + step * new / size for old, new in zip(
        (stats.counts, stats.sums, stats.second, stats.log_likelihood),
        (batch.counts, batch.sums, batch.second, batch.log_likelihood), strict=True)]
    stats = batch._replace(counts=mixed[0], sums=mixed[1], second=mixed[2],
                           log_likelihood=mixed[3])
    new = m_step_from_statistics(stats, covariance_type, reg_covar=reg_covar)
    new = new._replace(means=new.means + centre)
    return new, stats, batch.log_likelihood / size


@partial(em_jit, static_argnames="covariance_type")
def _batch_log_likelihood(params, centre, x, row_weights, *, covariance_type):
    centred = params._replace(means=params.means - centre)
    return statistics(centred, x - centre, row_weights, covariance_type,
                      about_origin=True).log_likelihood


def _zero_statistics(params: GMMParams, covariance_type: str) -> GMMStats:
    num_components, num_features = params.means.shape
    dtype = params.means.dtype
    second = {"full": (num_components, num_features, num_features),
              "tied": (num_features, num_features),
              "diag": (num_components, num_features),
              "spherical": (num_components, 1)}[covariance_type]
    zero = jnp.zeros((), dtype)
    return GMMStats(jnp.zeros(num_components, dtype),
                    jnp.zeros((num_components, num_features), dtype),
                    jnp.zeros(second, dtype), zero, zero,
                    jnp.zeros(num_features, dtype),
                    jnp.zeros((num_components, num_features), dtype))


def _array_pass(x, batch_size, shuffle, key):
    """One pass over the rows of x, in a random order when shuffling."""
    order = (np.asarray(jax.random.permutation(key, x.shape[0]))
             if shuffle and key is not None else None)
    return array_batches(x, batch_size, order)


def _chunk_pass(source, batch_size, _key):
    """One pass over chunks, in order (the key is unused)."""
    return chunk_batches(source, batch_size)
