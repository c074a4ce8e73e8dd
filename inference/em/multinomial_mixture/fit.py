"""The public fits of the multinomial mixture: the best restart, or all of them.

``fit_multinomial_mixture`` checks the arguments, prepares the counts
(``counts``), runs every restart in one compiled program (``restarts``, whose
E- and M-steps are in ``steps``) and returns the best one (raising when every
restart failed). ``fit_multinomial_mixture_restarts`` returns every restart.
Counts given as a ``data.chunks.ChunkedRows`` go to the out-of-core fit
(``chunked``).
"""

import jax.numpy as jnp

from latentmix.data.chunks import ChunkedRows
from latentmix.data.validation import check_int
from latentmix.inference.em.driver import EMRestarts, EMResult, collect_restarts
from latentmix.inference.em.multinomial_mixture.checks import (
    Options,
    check_distinct,
    check_init,
    check_layout,
    check_options,
    check_prior,
    resolve_dtype,
)
from latentmix.inference.em.multinomial_mixture.chunked import (
    chunked_restarts,
    fit_multinomial_mixture_chunked,
)
from latentmix.inference.em.multinomial_mixture.counts import (
    device_data,
    prepare_counts,
    resolve_layout,
    warn_unobserved,
)
from latentmix.inference.em.multinomial_mixture.restarts import (
    best_fit,
    random_starts,
    run_restarts,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.sharding import check_devices, replicate, splits_rows
from latentmix.models.multinomial_mixture import MultinomialMixturePrior

__all__ = ["fit_multinomial_mixture", "fit_multinomial_mixture_restarts"]


@follows_input_precision
def fit_multinomial_mixture(
    counts,
    num_components: int,
    *,
    groups=None,
    init="random",
    num_restarts: int = 1,
    max_iters: int = 1000,
    tol: float = 1e-6,
    rtol: float = 0.0,
    prior: MultinomialMixturePrior | None = None,
    rng_key=None,
    devices=None,
    screen_iters: int = 0,
    fold: bool = True,
    layout: str = "auto",
    dtype=None,
) -> EMResult:
    """Fit a mixture of multinomials by (MAP-)EM (package docstring).

    One jit-compiled call runs every restart (vmap) and every iteration
    (lax.while_loop); a new call on data of the same size bucket and the same
    static options reuses the compiled code, whatever the values, tol, rtol or
    the key.

    Args:
      counts: (n, c) non-negative integer counts: NumPy/JAX dense, scipy.sparse,
        or ``jax.experimental.sparse.BCOO``. All-zero rows are excluded (with a
        DataWarning); ``models.multinomial_mixture.assignments`` labels them
        ``EMPTY_LABEL``. Or a ``data.chunks.ChunkedRows`` of dense count chunks
        for out-of-core EM (``fit_multinomial_mixture_chunked``: global model,
        rows not folded, layout dense, screen_iters 0).
      num_components: K.
      groups: optional (n,) group labels of any type (e.g. household ids). Fits
        the individualized model, with one weight vector per group; rows of the
        returned (g, K) weights follow ``encode_groups(groups)[1]``, i.e.
        ``np.unique(groups)``. Each restart first fits the global model, then
        starts the grouped EM from it (Cadez et al. 2001).
      init: "random" (uniform weights, probs_k ~ Dirichlet(2C 1_C), as the
        tutorial) or a MultinomialMixtureParams: one start (probs (K, C)),
        repeated for each of the num_restarts restarts, or r stacked starts
        (probs (r, K, C); num_restarts 1 or r). With groups, (K,) weights (or
        (r, K)) start the global stage and (g, K) weights (or (r, g, K)) start
        the grouped stage directly (``checks``: a (g, K) matrix is always one
        start's per-group weights).
      num_restarts: independent starts, run under vmap; the one with the
        highest finite final objective is returned.
      max_iters: bound on EM iterations per stage (sizes ``trace``). The
        defaults max_iters=1000, tol=1e-6, rtol=0 differ from the Gaussian
        mixture's scikit-learn defaults (100, 1e-3): see the package
        docstring, "Stopping rule".
      tol, rtol: stopping rule on the objective (nats per basket):
        |objective_t - objective_{t-1}| < tol + rtol |objective_t|.
      prior: MultinomialMixturePrior for MAP-EM (concentrations >= 1); None for
        maximum likelihood.
      rng_key: JAX PRNG key for the random initialisation (required with
        init="random").
      devices: None (default placement) or an int m (the first m of
        ``jax.devices()``) or a list of devices: data-parallel EM with the rows
        sharded over them and the parameters replicated (package docstring,
        "Devices"); dense layout only ("auto" picks it).
      screen_iters: 0 (default): every restart runs to its stopping rule and the
        best is returned. s > 0: every restart runs s iterations, then only the
        best of them continues (Biernacki, Celeux & Govaert 2003): r restarts
        cost about r s + max_iters iterations instead of r max_iters, at the
        risk of dropping a restart that starts slowly but would have ended
        higher. Must be below max_iters. Global model in memory only: refused
        (ValueError) with groups, whose restarts each run a global and a
        grouped stage (screen the global fit, then pass its params as init
        with groups), and with chunked counts.
      fold: fold identical rows into weighted rows (exact; disable to check it).
      layout: "auto" (``choose_layout``), "dense" or "sparse".
      dtype: float32 or float64; default float64 when JAX's x64 mode is on.

    Returns:
      EMResult: params (MultinomialMixtureParams), log_likelihood (mean
      per-basket log-likelihood with coefficient, plus log prior / N for MAP),
      num_iters, converged and trace of the best restart (grouped: of the grouped
      stage).

    Raises:
      AllRestartsFailedError (a FloatingPointError): every restart ended with a
        non-finite objective (a basket impossible under every component); its
        message says what to change (init, or a prior with pseudocounts).

    Warns:
      ConvergenceWarning: the best restart stopped at max_iters (max_iters > 0).
      DataWarning: empty rows, never-observed categories, baskets beyond
        float32's exact range.
    """
    num_components, options, devices = _check_arguments(
        counts, num_components, groups, num_restarts, max_iters, tol, rtol,
        screen_iters, layout, devices,
    )
    if isinstance(counts, ChunkedRows):
        return fit_multinomial_mixture_chunked(
            counts, num_components, init=init, num_restarts=options.num_restarts,
            max_iters=options.max_iters, tol=tol, rtol=rtol, prior=prior,
            rng_key=rng_key, devices=devices, dtype=dtype,
        )
    restarts = _in_memory_restarts(
        counts, num_components, options, groups=groups, init=init, tol=tol,
        rtol=rtol, prior=prior, rng_key=rng_key, devices=devices, fold=fold,
        layout=layout, dtype=dtype,
    )
    return best_fit(restarts, options.max_iters, tol, rtol)


@follows_input_precision
def fit_multinomial_mixture_restarts(
    counts,
    num_components: int,
    *,
    groups=None,
    init="random",
    num_restarts: int = 1,
    max_iters: int = 1000,
    tol: float = 1e-6,
    rtol: float = 0.0,
    prior: MultinomialMixturePrior | None = None,
    rng_key=None,
    devices=None,
    screen_iters: int = 0,
    fold: bool = True,
    layout: str = "auto",
    dtype=None,
) -> EMRestarts:
    """Run every restart of ``fit_multinomial_mixture`` and return them all.

    Same arguments as ``fit_multinomial_mixture``. Returns a ``driver.EMRestarts``:
    results (EMResult with a leading restart axis), num_reseeds (all 0: the
    multinomial mixture never reseeds), failed (non-finite objective) and
    best_index (-1 when every restart failed). Nothing is raised when restarts
    fail, and no ConvergenceWarning is emitted; data warnings are.
    """
    num_components, options, devices = _check_arguments(
        counts, num_components, groups, num_restarts, max_iters, tol, rtol,
        screen_iters, layout, devices,
    )
    if isinstance(counts, ChunkedRows):
        return chunked_restarts(
            counts, num_components, init=init, num_restarts=options.num_restarts,
            max_iters=options.max_iters, tol=tol, rtol=rtol, prior=prior,
            rng_key=rng_key, devices=devices, dtype=dtype,
        )
    return _in_memory_restarts(
        counts, num_components, options, groups=groups, init=init, tol=tol,
        rtol=rtol, prior=prior, rng_key=rng_key, devices=devices, fold=fold,
        layout=layout, dtype=dtype,
    )


def _check_arguments(counts, num_components, groups, num_restarts, max_iters, tol,
                     rtol, screen_iters, layout, devices):
    """(num_components, Options, devices), and what chunked counts refuse."""
    num_components = check_int("num_components", num_components, minimum=1)
    options = check_options(num_restarts, max_iters, tol, rtol, screen_iters)
    check_layout(layout)
    devices = check_devices(devices)
    if isinstance(counts, ChunkedRows):
        if groups is not None:
            raise ValueError(
                "groups are not supported with chunked counts (a ChunkedRows "
                "source); fit the global model out of core, or pass the counts "
                "in memory to fit the grouped model"
            )
        if layout == "sparse":
            raise ValueError(
                "chunked counts are fitted chunk by chunk in the dense layout; "
                "use layout='dense' or 'auto' with a ChunkedRows source"
            )
        if options.screen_iters:
            raise ValueError(
                "screen_iters is not offered for chunked counts; pass "
                "screen_iters=0 (the restarts then stream the data together, one "
                "pass per iteration, under vmap)"
            )
    elif options.screen_iters and groups is not None:
        raise ValueError(
            "screen_iters is not offered with groups: each restart runs a global "
            "and then a grouped stage. Screen the global model (fit without "
            "groups, with screen_iters), then start the grouped fit from its "
            "params (init=result.params, num_restarts=1)"
        )
    return num_components, options, devices


def _in_memory_restarts(counts, num_components, options: Options, *, groups, init,
                        tol, rtol, prior, rng_key, devices, fold, layout,
                        dtype) -> EMRestarts:
    """Prepare the counts and the starts, then run every restart in one program."""
    prepared = prepare_counts(counts, groups, fold)
    num_categories, num_groups = prepared.num_categories, prepared.num_groups
    dtype = resolve_dtype(dtype, prepared.max_row_total)
    prior_arrays = check_prior(prior, num_components, num_categories, dtype)
    map_estimate = prior is not None
    warn_unobserved(prepared.column_totals, prior_arrays)
    folded = prepared.folded
    check_distinct(num_components, folded.num_distinct)
    init_params = check_init(init, num_components, num_categories, num_groups,
                             options.num_restarts, dtype)
    if init_params is None and rng_key is None:
        raise ValueError("rng_key is required with init='random'")
    layout = resolve_layout(layout, folded, devices, dtype)

    data = device_data(
        folded, layout, prepared.num_rows, prepared.mean_log_coefficient, dtype,
        devices,
    )
    if init_params is None:
        init_params = random_starts(
            rng_key, options.num_restarts, num_components, num_categories, dtype
        )
    num_starts = init_params.probs.shape[0]
    tol_array, rtol_array = jnp.asarray(tol, dtype), jnp.asarray(rtol, dtype)
    if devices is not None:
        init_params, prior_arrays, tol_array, rtol_array = replicate(
            (init_params, prior_arrays, tol_array, rtol_array), devices
        )
    # Stage 1 (global EM) runs unless the starts already have per-group weights.
    global_stage = init_params.weights.ndim == 2
    results, num_reseeds, failed = run_restarts(
        data,
        init_params,
        prior_arrays,
        tol_array,
        rtol_array,
        num_components=num_components,
        num_groups=num_groups,
        max_iters=options.max_iters,
        map_estimate=map_estimate,
        global_stage=global_stage,
        # One restart has nothing to screen (the same iterates either way).
        screen_iters=options.screen_iters if num_starts > 1 else 0,
        sharded=splits_rows(devices),
    )
    return collect_restarts(results, num_reseeds, failed)
