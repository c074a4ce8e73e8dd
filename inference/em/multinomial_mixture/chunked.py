"""Out-of-core EM for the multinomial mixture: counts streamed in row chunks.

The E- and M-steps (``steps``) only need three sums over rows at the current
parameters theta:

    N_k  = sum_i v_i gamma_ik            (expected component sizes)
    S_kc = sum_i v_i gamma_ik x_ic       (expected category counts)
    L    = sum_i v_i log p(x_i | theta)  (objective, without the coefficient)

with v_i = 1 for a non-empty basket and 0 for an empty one. Sums split over any
partition of the rows, so one EM iteration reads the rows chunk by chunk (a
``data.chunks.ChunkedRows``: a .npy read at offsets, parquet record batches, any
iterator factory), adds each chunk's (N, S, L), and then runs the usual M-step
on the totals. Only one chunk is in memory at a time, and the statistics are
(K, C) per restart, so memory does not grow with the number of rows.

A Python loop over iterations and chunks is unavoidable here: the data live on
the host and are read again on every pass, which a ``lax.while_loop`` cannot do.
What is compiled is (i) the per-chunk statistics, vmapped over restarts, with
every chunk padded to ``chunk_rows`` zero rows (weight 0: an all-zero row adds
nothing to N, S or L) so that one program serves every chunk (``accumulate``),
and (ii) the M-step plus the stopping-rule bookkeeping on the summed statistics
(``advance``). Each pass ends with one device-to-host read (has any restart
still to go?).

Iterations follow ``inference.em.driver.run_em`` exactly: the same loop
condition and bookkeeping (``driver.advance_restarts``), trace, num_iters and
converged; each restart stops on its own rule and is then carried unchanged, as
a vmapped while loop does. So with the same start and tolerances the result
equals the in-memory fit up to the order of floating-point summation (rows are
not folded here, and chunks are summed one after another). Global model only,
dense layout, no screening (``screen_iters``): every restart streams with the
others, one pass per iteration.

Passes over the data: one first pass on the host (``summarise_chunks``)
validates every value (non-negative whole numbers, naming the chunk and row of
the first bad one), counts the non-empty rows N, sums the multinomial
coefficient sum_i [log n_i! - sum_c log x_ic!] in float64 (it does not depend on
theta), finds the largest row total (float32's exact range) and the
never-observed categories; then one pass per EM iteration, and a last one for
the objective at the returned parameters (sklearn's final E-step). Later passes
rely on ``ChunkedRows``' own checks (shape, finiteness, same row count).

With ``devices``, every padded chunk is sharded over them (rows padded to a
multiple of the device count) and the parameters replicated, as in memory.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln

from latentmix.data.chunks import ChunkedRows
from latentmix.data.validation import check_int
from latentmix.inference.em.driver import (
    EMCarry,
    EMRestarts,
    EMResult,
    advance_restarts,
    collect_restarts,
    initial_carry,
    stopping_rule_met,
)
from latentmix.inference.em.multinomial_mixture.checks import (
    check_distinct,
    check_init,
    check_options,
    check_prior,
    resolve_dtype,
)
from latentmix.inference.em.multinomial_mixture.counts import (
    warn_empty_rows,
    warn_unobserved,
)
from latentmix.inference.em.multinomial_mixture.restarts import (
    best_fit,
    random_starts,
    restart_failed,
)
from latentmix.inference.em.multinomial_mixture.steps import (
    DenseCounts,
    objective,
    responsibilities,
    sufficient_statistics,
    update,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.sharding import (
    check_devices,
    padded_rows,
    replicate,
    shard_rows,
)
from latentmix.models.multinomial_mixture import (
    MAX_EXACT_COUNT,
    MultinomialMixturePrior,
)

__all__ = [
    "ChunkSummary",
    "Statistics",
    "accumulate",
    "advance",
    "chunked_restarts",
    "final_objective",
    "fit_multinomial_mixture_chunked",
    "summarise_chunks",
]


@follows_input_precision
def fit_multinomial_mixture_chunked(
    source: ChunkedRows,
    num_components: int,
    *,
    init="random",
    num_restarts: int = 1,
    max_iters: int = 1000,
    tol: float = 1e-6,
    rtol: float = 0.0,
    prior: MultinomialMixturePrior | None = None,
    rng_key=None,
    devices=None,
    dtype=None,
) -> EMResult:
    """Out-of-core (MAP-)EM of the global multinomial mixture (module docstring).

    ``fit_multinomial_mixture`` calls this when ``counts`` is a ``ChunkedRows``;
    the arguments and the result are those of the in-memory fit (global model:
    no groups; rows not folded; dense layout; no screening): same random starts
    for the same ``rng_key``, same objective, trace, num_iters and converged, up
    to floating-point summation order.

    Raises:
      AllRestartsFailedError: every restart's objective is non-finite.

    Warns:
      ConvergenceWarning: the best restart stopped at max_iters.
      DataWarning: empty rows, never-observed categories.
    """
    restarts = chunked_restarts(
        source, num_components, init=init, num_restarts=num_restarts,
        max_iters=max_iters, tol=tol, rtol=rtol, prior=prior, rng_key=rng_key,
        devices=devices, dtype=dtype,
    )
    return best_fit(restarts, max_iters, tol, rtol)


def chunked_restarts(
    source: ChunkedRows,
    num_components: int,
    *,
    init="random",
    num_restarts: int = 1,
    max_iters: int = 1000,
    tol: float = 1e-6,
    rtol: float = 0.0,
    prior: MultinomialMixturePrior | None = None,
    rng_key=None,
    devices=None,
    dtype=None,
) -> EMRestarts:
    """Every restart of ``fit_multinomial_mixture_chunked`` (nothing raised when
    restarts fail): the host loop over passes, one per EM iteration."""
    num_components = check_int("num_components", num_components, minimum=1)
    options = check_options(num_restarts, max_iters, tol, rtol)
    max_iters = options.max_iters
    devices = check_devices(devices)
    summary = summarise_chunks(source, num_components)
    if summary.num_input_rows == 0:
        raise ValueError(f"{source.description} holds no rows; there is nothing to fit")
    if summary.num_rows == 0:
        raise ValueError("every row of counts is zero; there is nothing to fit")
    if summary.num_rows < summary.num_input_rows:
        warn_empty_rows(
            summary.num_input_rows - summary.num_rows, summary.num_input_rows,
        )
    num_categories = source.num_columns
    dtype = resolve_dtype(dtype, summary.max_row_total)
    prior_arrays = check_prior(prior, num_components, num_categories, dtype)
    map_estimate = prior is not None
    warn_unobserved(summary.column_totals, prior_arrays)
    check_distinct(num_components, summary.num_distinct)
    init_params = check_init(init, num_components, num_categories, None,
                             options.num_restarts, dtype)
    if init_params is None:
        if rng_key is None:
            raise ValueError("rng_key is required with init='random'")
        init_params = random_starts(
            rng_key, options.num_restarts, num_components, num_categories, dtype
        )

    num_restarts = init_params.weights.shape[0]
    constants = (
        prior_arrays,
        jnp.asarray(tol, dtype),
        jnp.asarray(rtol, dtype),
        jnp.asarray(summary.num_rows, dtype),
        jnp.asarray(summary.log_coefficient / summary.num_rows, dtype),
    )
    state = initial_carry(init_params, max_iters, dtype, num_restarts)
    if devices is not None:
        constants, state = replicate((constants, state), devices)
    prior_arrays, tol_array, rtol_array, num_rows, mean_log_coefficient = constants

    keep_going = max_iters > 0
    while keep_going:
        statistics = _stream_statistics(source, state.params, dtype, devices)
        state, next_active = advance(
            state, statistics, prior_arrays, tol_array, rtol_array, num_rows,
            mean_log_coefficient, max_iters=max_iters, map_estimate=map_estimate,
        )
        keep_going = bool(np.asarray(next_active).any())

    statistics = _stream_statistics(source, state.params, dtype, devices)
    log_likelihood = final_objective(
        state.params, statistics, prior_arrays, num_rows, mean_log_coefficient,
        map_estimate=map_estimate,
    )
    converged = stopping_rule_met(state.objective, state.delta, tol_array, rtol_array)
    results = EMResult(
        state.params, log_likelihood, state.num_iters, converged, state.trace
    )
    failed = np.asarray(restart_failed(results))
    results = results._replace(converged=results.converged & ~failed)
    return collect_restarts(results, np.zeros(num_restarts, np.int32), failed)


# ----------------------------------------------------------------------------
# First pass (host): validation and the constants of the objective
# ----------------------------------------------------------------------------


class ChunkSummary(NamedTuple):
    """What the first pass over a chunked count source learns.

    num_input_rows: rows read, empty ones included.
    num_rows: N, the non-empty rows (baskets).
    max_row_total: the largest basket size (float32 holds integers to 2**24).
    column_totals: (c,) total count of each category.
    log_coefficient: sum over baskets of log n_i! - sum_c log x_ic! (float64).
    num_distinct: distinct non-empty rows, counted only up to the K asked for.
    """

    num_input_rows: int
    num_rows: int
    max_row_total: float
    column_totals: np.ndarray
    log_coefficient: float
    num_distinct: int


def summarise_chunks(source: ChunkedRows, num_components: int = 1) -> ChunkSummary:
    """Validate every chunk and accumulate the host-side constants (first pass).

    Memory is one chunk plus (c,) totals and at most ``num_components`` distinct
    rows (enough to check that K components can be told apart).
    """
    if not isinstance(source, ChunkedRows):
        raise TypeError(
            f"source must be a data.chunks.ChunkedRows, got {type(source).__name__}"
        )
    if source.num_columns < 2:
        raise ValueError(
            f"{source.description} has {source.num_columns} column(s); a "
            f"multinomial mixture needs at least 2 categories"
        )
    num_input_rows = num_rows = 0
    max_row_total = 0.0
    column_totals = np.zeros(source.num_columns)
    log_coefficient = 0.0
    distinct: set[bytes] = set()
    for index, chunk in enumerate(source):
        _check_count_chunk(chunk, index, num_input_rows, source)
        row_totals = chunk.sum(axis=1)
        nonempty = row_totals > 0
        num_input_rows += chunk.shape[0]
        num_rows += int(nonempty.sum())
        if nonempty.any():
            max_row_total = max(max_row_total, float(row_totals.max()))
        column_totals += chunk.sum(axis=0)
        # log n! - sum_c log x_c!, zero for an empty row: float64, on the host.
        log_coefficient += float(
            gammaln(row_totals + 1.0).sum() - gammaln(chunk + 1.0).sum()
        )
        if len(distinct) < num_components:
            rows = np.unique(chunk[nonempty], axis=0)
            distinct.update(row.tobytes() for row in rows[:num_components])
    return ChunkSummary(
        num_input_rows, num_rows, max_row_total, column_totals, log_coefficient,
        min(len(distinct), num_components),
    )


# ----------------------------------------------------------------------------
# Compiled pieces: per-chunk statistics, M-step and stopping bookkeeping
# ----------------------------------------------------------------------------


class Statistics(NamedTuple):
    """Sums over the rows read so far, one entry per restart."""

    counts_k: jax.Array  # (r, k) N_k
    totals: jax.Array  # (r, k, c) S_kc
    log_likelihood: jax.Array  # (r,) L, without the multinomial coefficient


@jax.jit
def accumulate(statistics: Statistics, params, chunk) -> Statistics:
    """Add one (padded) chunk's N, S and L for every restart.

    Row weights are 1 for a non-empty row and 0 for an empty or padding row, so
    empty rows are excluded exactly as the in-memory fit drops them.
    """
    row_weights = (chunk.sum(axis=1) > 0).astype(chunk.dtype)
    counts = DenseCounts(chunk)
    num_rows, num_categories = chunk.shape

    def one_restart(params):
        resp, log_norm = responsibilities(
            params, counts, None, num_rows, grouped=False
        )
        counts_k, totals = sufficient_statistics(
            counts, resp, row_weights, None, grouped=False, num_groups=1,
            num_categories=num_categories,
        )
        return Statistics(counts_k, totals, row_weights @ log_norm)

    chunk_statistics = jax.vmap(one_restart)(params)
    return jax.tree_util.tree_map(jnp.add, statistics, chunk_statistics)


@partial(jax.jit, static_argnames=("max_iters", "map_estimate"))
def advance(carry: EMCarry, statistics: Statistics, prior, tol, rtol,
            num_rows, mean_log_coefficient, *, max_iters, map_estimate):
    """One EM iteration from the summed statistics for every restart
    (``inference.em.driver.advance_restarts``): the new carry and, per restart,
    whether it goes on."""

    def one_restart(params, stats):
        value = objective(
            params, stats.log_likelihood, prior, num_rows, mean_log_coefficient,
            map_estimate,
        )
        return update(params, stats.counts_k, stats.totals, prior), value

    params, value = jax.vmap(one_restart)(carry.params, statistics)
    return advance_restarts(carry, params, value, tol, rtol, max_iters)


@partial(jax.jit, static_argnames="map_estimate")
def final_objective(params, statistics: Statistics, prior, num_rows,
                    mean_log_coefficient, *, map_estimate):
    """The objective at the returned parameters, per restart."""
    return jax.vmap(
        lambda params, total: objective(
            params, total, prior, num_rows, mean_log_coefficient, map_estimate
        )
    )(params, statistics.log_likelihood)


# ----------------------------------------------------------------------------
# Host helpers: one pass over the data, the first pass's value check
# ----------------------------------------------------------------------------


def _stream_statistics(source: ChunkedRows, params, dtype, devices) -> Statistics:
    """One pass: the sums N, S, L at ``params`` over every chunk of ``source``."""
    num_restarts, num_components, num_categories = params.probs.shape
    # One compiled program for every chunk: all are padded to the same rows.
    chunk_rows = padded_rows(source.chunk_rows, devices)
    statistics = Statistics(
        jnp.zeros((num_restarts, num_components), dtype),
        jnp.zeros((num_restarts, num_components, num_categories), dtype),
        jnp.zeros((num_restarts,), dtype),
    )
    if devices is not None:
        statistics = replicate(statistics, devices)
    for chunk in source:
        if chunk.shape[0] == chunk_rows:
            padded = chunk.astype(dtype, copy=False)
        else:
            padded = np.zeros((chunk_rows, num_categories), dtype)
            padded[: chunk.shape[0]] = chunk
        placed = jnp.asarray(padded) if devices is None else shard_rows(
            padded, devices
        )
        previous = statistics
        statistics = accumulate(statistics, params, placed)
        # Dispatch is asynchronous, so the host reads the next chunk while this
        # one is summed; waiting for the previous chunk's sums bounds the chunks
        # in flight to two, else a fast reader could queue the whole data set.
        jax.block_until_ready(previous)
    return statistics


def _check_count_chunk(chunk: np.ndarray, index: int, start: int,
                       source: ChunkedRows) -> None:
    """Non-negative whole numbers up to 2**53, else a ValueError naming the row."""
    problems = (
        (chunk < 0, "a negative count", "counts must be >= 0"),
        (chunk != np.floor(chunk), "a non-integer count",
         "counts must be whole numbers (round them with np.rint if they are "
         "integers stored with rounding noise)"),
        (chunk > MAX_EXACT_COUNT, "a count above 2**53",
         "such counts are not exact in float64"),
    )
    for bad, what, fix in problems:
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"chunk {index} of {source.description} (rows {start}..) holds "
                f"{what}, {float(chunk[row, column])!r}, at row {start + row}, column "
                f"{column}; {fix}"
            )
