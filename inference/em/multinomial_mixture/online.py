"""Online (stepwise) EM for the multinomial mixture: baskets that arrive in batches.

The stepwise EM of ``gaussian_mixture.online`` (Cappe & Moulines 2009; Liang &
Klein 2009) with this model's statistics: per non-empty row i, gamma_ik and
gamma_ik x_ic. With s_t = (N-bar_k, S-bar_kc) the running averages per row,
s-hat(B) the means over the non-empty rows of batch B at theta_t and a step

    gamma_t = (t + tau)^(-kappa),  gamma_0 = 1,

every batch makes one update and one M-step (``steps.update`` with flat
Dirichlets, i.e. maximum likelihood):

    s_{t+1} = (1 - gamma_t) s_t + gamma_t s-hat(B_t),
    w_k = N-bar_k / sum_j N-bar_j,   p_kc = S-bar_kc / sum_c' S-bar_kc'.

``online_start`` draws the start (the batch fit's "random": uniform weights,
p_k ~ Dirichlet(2C 1_C)), ``online_step`` makes one update (an estimator's
``partial_fit``), ``fit_multinomial_mixture_online`` makes ``num_epochs``
passes over dense counts (shuffled) or a ``data.chunks.ChunkedRows`` of count
chunks (in order), then scores every basket at the final parameters (mean
log-likelihood per non-empty basket including the multinomial coefficient, as
``fit_multinomial_mixture``'s objective). Global model, maximum likelihood,
dense counts.
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from latentmix.data.batches import array_batches, chunk_batches
from latentmix.data.chunks import ChunkedRows
from latentmix.data.validation import check_int, check_nonnegative
from latentmix.inference.em.multinomial_mixture.restarts import random_starts
from latentmix.inference.em.multinomial_mixture.steps import (
    DenseCounts,
    responsibilities,
    sufficient_statistics,
    update,
)
from latentmix.models.multinomial_mixture import (
    MultinomialMixtureParams,
    MultinomialMixturePrior,
)

__all__ = [
    "MultinomialOnlineResult",
    "MultinomialOnlineState",
    "fit_multinomial_mixture_online",
    "multinomial_online_start",
    "multinomial_online_step",
    "score_multinomial_online",
]


class MultinomialOnlineState(NamedTuple):
    """Where stepwise EM stands after ``num_steps`` batches.

    params: MultinomialMixtureParams (weights (k,), probs (k, c)).
    counts_k, totals: running averages per non-empty row of gamma_ik and
        gamma_ik x_ic, (k,) and (k, c) (zeros before the first step).
    num_steps: t; log_likelihood: mean log-likelihood (without the multinomial
        coefficient) of the last batch's non-empty rows at the parameters it
        was given (NaN before the first step).
    step_size_offset, step_size_power: tau and kappa.
    """

    params: MultinomialMixtureParams
    counts_k: jax.Array
    totals: jax.Array
    num_steps: int
    log_likelihood: jax.Array
    step_size_offset: float
    step_size_power: float


class MultinomialOnlineResult(NamedTuple):
    """As ``gaussian_mixture.online.OnlineResult``: final params, the mean
    log-likelihood per non-empty basket of all the data (with the multinomial
    coefficient), batches, passes, the per-batch trace and the final state."""

    params: MultinomialMixtureParams
    log_likelihood: jax.Array
    num_steps: int
    num_epochs: int
    trace: np.ndarray
    state: MultinomialOnlineState


def multinomial_online_start(num_components: int, num_categories: int, *,
                             init="random", rng_key=None, dtype=None,
                             step_size_offset: float = 2.0,
                             step_size_power: float = 0.6
                             ) -> MultinomialOnlineState:
    """The state before the first step: "random" (drawn from ``rng_key``) or a
    MultinomialMixtureParams with (k,) weights and (k, c) probs."""
    num_components = check_int("num_components", num_components, minimum=1)
    num_categories = check_int("num_categories", num_categories, minimum=1)
    check_nonnegative("step_size_offset", step_size_offset)
    if not 0.5 < step_size_power <= 1.0:
        raise ValueError(
            f"step_size_power must be in (0.5, 1] (sum of steps infinite, sum of "
            f"squares finite), got {step_size_power!r}")
    dtype = jnp.dtype(dtype or jax.dtypes.canonicalize_dtype(jnp.float64))
    if isinstance(init, str):
        if init != "random":
            raise ValueError(f"init must be 'random' or MultinomialMixtureParams, "
                             f"got {init!r}")
        if rng_key is None:
            raise ValueError("rng_key is required with init='random'")
        start = random_starts(rng_key, 1, num_components, num_categories, dtype)
        params = MultinomialMixtureParams(start.weights[0], start.probs[0])
    else:
        params = MultinomialMixtureParams(jnp.asarray(init.weights, dtype),
                                          jnp.asarray(init.probs, dtype))
        if params.probs.shape != (num_components, num_categories):
            raise ValueError(f"init.probs must have shape ({num_components}, "
                             f"{num_categories}), got {params.probs.shape}")
    return MultinomialOnlineState(
        params, jnp.zeros(num_components, dtype),
        jnp.zeros((num_components, num_categories), dtype), 0,
        jnp.asarray(jnp.nan, dtype), float(step_size_offset), float(step_size_power))


def multinomial_online_step(state: MultinomialOnlineState, batch,
                            row_weights=None) -> MultinomialOnlineState:
    """One stepwise-EM update on a (n, c) batch of counts (module docstring).

    Empty rows and rows of ``row_weights`` 0 (padding) count nowhere; a batch
    without a non-empty row leaves the state as it is.
    """
    dtype = state.totals.dtype
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        with jax.enable_x64(True):
            return multinomial_online_step(state, batch, row_weights)
    counts = jnp.asarray(batch, dtype)
    if counts.ndim != 2 or counts.shape[1] != state.totals.shape[1]:
        raise ValueError(f"batch must have shape (n, {state.totals.shape[1]}), "
                         f"got {tuple(counts.shape)}")
    weights = (jnp.ones(counts.shape[0], dtype) if row_weights is None
               else jnp.asarray(row_weights, dtype))
    params, counts_k, totals, value = _update(
        state.params, state.counts_k, state.totals,
        jnp.asarray(state.num_steps, dtype), counts, weights,
        jnp.asarray(state.step_size_offset, dtype),
        jnp.asarray(state.step_size_power, dtype))
    return state._replace(params=params, counts_k=counts_k, totals=totals,
                          num_steps=state.num_steps + 1, log_likelihood=value)


def fit_multinomial_mixture_online(
    source,
    num_components: int,
    *,
    batch_size: int = 4096,
    num_epochs: int = 2,
    step_size_offset: float = 2.0,
    step_size_power: float = 0.6,
    init="random",
    rng_key=None,
    dtype=None,
    shuffle: bool = True,
    score: bool = True,
    callback: Callable[[int, MultinomialOnlineState], None] | None = None,
) -> MultinomialOnlineResult:
    """Fit a multinomial mixture by stepwise EM over batches (module docstring).

    Args:
      source: (n, c) non-negative counts (NumPy or JAX, dense), each pass in a
        new random order when ``shuffle``; or a ``data.chunks.ChunkedRows`` of
        count chunks, cut into batches in order.
      num_components: K. batch_size, num_epochs, step_size_offset,
        step_size_power, callback, score: as
        ``gaussian_mixture.fit_gaussian_mixture_online``.
      init: "random" or a MultinomialMixtureParams ((k,) weights, (k, c)
        probs).
      rng_key: JAX key for the start and the shuffling.
      dtype: float32 or float64 (default float64 when JAX's x64 mode is on,
        else float32).

    Returns:
      ``MultinomialOnlineResult``.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_epochs = check_int("num_epochs", num_epochs, minimum=1)
    if isinstance(source, ChunkedRows):
        num_categories = source.num_columns
        passes = partial(_chunk_pass, source, batch_size)
    else:
        counts = np.asarray(source)
        if counts.ndim != 2 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("counts must be a 2-D array of finite non-negative "
                             "numbers")
        num_categories = counts.shape[1]
        passes = partial(_array_pass, counts, batch_size, shuffle)
    if shuffle and rng_key is None:
        raise ValueError("rng_key is required with shuffle=True")
    state = multinomial_online_start(
        num_components, num_categories, init=init, rng_key=rng_key, dtype=dtype,
        step_size_offset=step_size_offset, step_size_power=step_size_power)
    shuffle_key = None if rng_key is None else jax.random.fold_in(rng_key, 1)
    trace = []
    for epoch in range(num_epochs):
        key = None if shuffle_key is None else jax.random.fold_in(shuffle_key, epoch)
        for batch, weights in passes(key):
            state = multinomial_online_step(state, batch, weights)
            trace.append(state.log_likelihood)
        if callback is not None:
            callback(epoch, state)
    value = (score_multinomial_online(state, passes(None)) if score
             else jnp.asarray(jnp.nan, state.totals.dtype))
    return MultinomialOnlineResult(state.params, value, state.num_steps, num_epochs,
                                   np.asarray(jnp.stack(trace)), state)


def score_multinomial_online(state: MultinomialOnlineState, batches) -> jax.Array:
    """Mean log-likelihood per non-empty basket (with the multinomial
    coefficient) at ``state.params`` over (batch, weights) pairs."""
    dtype = state.totals.dtype
    total, count = 0.0, 0.0
    for batch, weights in batches:
        value, rows = _batch_log_likelihood(state.params, jnp.asarray(batch, dtype),
                                            jnp.asarray(weights, dtype))
        total += float(value)
        count += float(rows)
    return jnp.asarray(total / count, dtype)


# ------------------------------------------------------------------ jitted


@jax.jit
def _update(params, counts_k, totals, num_steps, counts, row_weights, offset,
            power):
    """s <- (1 - g) s + g s-hat(batch), then the maximum-likelihood M-step."""
    weights = row_weights * (jnp.sum(counts, axis=1) > 0)
    resp, log_norm = responsibilities(params, DenseCounts(counts), None,
                                      counts.shape[0], grouped=False)
    batch_k, batch_totals = sufficient_statistics(
        DenseCounts(counts), resp, weights, None, grouped=False, num_groups=1,
        num_categories=counts.shape[1])
    size = jnp.sum(weights)
    step = jnp.where(num_steps > 0, (num_steps + offset) ** (-power), 1.0)
    step = jnp.where(size > 0, step, 0.0)  # an empty batch changes nothing
    safe = jnp.maximum(size, 1.0)
    counts_k = (1.0 - step) * counts_k + step * batch_k / safe
    totals = (1.0 - step) * totals + step * batch_totals / safe
    flat = MultinomialMixturePrior(jnp.ones((), counts.dtype),
                                   jnp.ones((), counts.dtype))
    value = jnp.sum(jnp.where(weights > 0, weights * log_norm, 0.0)) / safe
    return update(params, counts_k, totals, flat), counts_k, totals, value


@jax.jit
def _batch_log_likelihood(params, counts, row_weights):
    """(sum of log p(x_i) with the coefficient over non-empty rows, their count)."""
    weights = row_weights * (jnp.sum(counts, axis=1) > 0)
    _, log_norm = responsibilities(params, DenseCounts(counts), None,
                                   counts.shape[0], grouped=False)
    coefficient = (gammaln(jnp.sum(counts, axis=1) + 1.0)
                   - jnp.sum(gammaln(counts + 1.0), axis=1))
    total = jnp.sum(jnp.where(weights > 0, weights * (log_norm + coefficient), 0.0))
    return total, jnp.sum(weights)


def _array_pass(x, batch_size, shuffle, key):
    """One pass over the rows of x, in a random order when shuffling."""
    order = (np.asarray(jax.random.permutation(key, x.shape[0]))
             if shuffle and key is not None else None)
    return array_batches(x, batch_size, order)


def _chunk_pass(source, batch_size, _key):
    """One pass over chunks, in order (the key is unused)."""
    return chunk_batches(source, batch_size)
