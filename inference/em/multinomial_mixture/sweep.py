"""A whole K sweep of multinomial-mixture EM compiled as one program.

Every K of a sweep is padded to K_max components; the padded ("masked")
components have weight exactly 0 and a log joint of exactly -inf, so their
responsibilities are exactly 0 (exp(-inf) = 0; no 0 * -inf ever forms), they add
exactly nothing to N_k, S_kc or the objective, and the M-step leaves them
untouched (weight 0, probs as initialised), also under a Dirichlet prior, whose
terms are summed over the K real components only (``steps``, the
``component_mask`` arguments). All (K, restart) pairs run under one ``vmap``
(``run_sweep``), so the sweep is one compiled program, and each K's iterates are
those of its separate fit up to summation order.

Keys: the same as ``inference.selection.select_num_components_multinomial``:
rng_key is split into one key per K, and each K's random starts are those of
``restarts.random_starts`` for that key.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.chunks import ChunkedRows
from latentmix.data.validation import check_int
from latentmix.inference.em.driver import EMResult
from latentmix.inference.em.multinomial_mixture.checks import (
    check_distinct,
    check_layout,
    check_options,
    check_prior,
    resolve_dtype,
)
from latentmix.inference.em.multinomial_mixture.counts import (
    device_data,
    prepare_counts,
    resolve_layout,
    warn_unobserved,
)
from latentmix.inference.em.multinomial_mixture.restarts import (
    best_restart,
    random_starts,
    run_stage,
    warn_result,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.sharding import check_devices, replicate
from latentmix.models.multinomial_mixture import (
    MultinomialMixtureParams,
    MultinomialMixturePrior,
)

__all__ = ["fit_multinomial_mixture_sweep", "padded_starts", "run_sweep"]


@follows_input_precision
def fit_multinomial_mixture_sweep(
    counts,
    num_components_list,
    *,
    num_restarts: int = 1,
    max_iters: int = 1000,
    tol: float = 1e-6,
    rtol: float = 0.0,
    prior: MultinomialMixturePrior | None = None,
    rng_key,
    fold: bool = True,
    layout: str = "auto",
    dtype=None,
    devices=None,
) -> list[EMResult]:
    """Fit the global mixture for every K of a list in ONE compiled program.

    Components are padded to K_max = max(num_components_list) and masked (module
    docstring); every (K, restart) pair runs under one vmap of the EM while
    loop. The batched loop runs until the slowest pair stops, and a stopped pair
    is carried unchanged, so each K's result is its separate fit's, but the cost
    per iteration is that of len(list) x num_restarts fits with K_max
    components: one compilation instead of one per K, at the price of more
    arithmetic (cheap for folded data or on accelerators).

    Random starts: ``rng_key`` is split into one key per entry,
    ``keys = jax.random.split(rng_key, len(num_components_list))``, and entry i
    starts exactly where ``fit_multinomial_mixture(counts, K_i,
    num_restarts=num_restarts, rng_key=keys[i])`` would (the key derivation of
    ``inference.selection.select_num_components_multinomial``), so each result
    equals that separate fit up to floating-point summation order.

    Args:
      counts: (n, c) counts as in ``fit_multinomial_mixture`` (in memory).
      num_components_list: the K values, distinct integers >= 1, in any order.
      num_restarts: random restarts per K; the best finite one is kept.
      max_iters, tol, rtol, prior, fold, layout, dtype, devices: as in
        ``fit_multinomial_mixture``; the prior's concentrations must suit every
        K (scalars, or per-category probs concentrations).
      rng_key: JAX PRNG key (required), split as above.

    Returns:
      One EMResult per entry of ``num_components_list`` (same order), with the
      masked components trimmed: weights (K,), probs (K, c). A K whose restarts
      all failed (a non-finite objective) gives the EMResult of its first
      restart, with a non-finite ``log_likelihood``, and a ConvergenceWarning,
      instead of raising as ``fit_multinomial_mixture`` does (as the GMM sweep).
    """
    num_components_list = [
        check_int("num_components_list entries", k, minimum=1)
        for k in num_components_list
    ]
    if not num_components_list or len(set(num_components_list)) != len(
        num_components_list
    ):
        raise ValueError(
            f"num_components_list must hold distinct integers >= 1, got "
            f"{num_components_list}"
        )
    options = check_options(num_restarts, max_iters, tol, rtol)
    num_restarts, max_iters = options.num_restarts, options.max_iters
    check_layout(layout)
    devices = check_devices(devices)
    if isinstance(counts, ChunkedRows):
        raise ValueError(
            "the one-program sweep needs the counts in memory; fit chunked counts "
            "with fit_multinomial_mixture one K at a time"
        )
    if rng_key is None:
        raise ValueError("rng_key is required: the sweep starts from random inits")
    max_components = max(num_components_list)

    prepared = prepare_counts(counts, None, fold)
    num_categories = prepared.num_categories
    dtype = resolve_dtype(dtype, prepared.max_row_total)
    for num_components in num_components_list:
        # Each K must accept the prior as its separate fit would.
        check_prior(prior, num_components, num_categories, dtype)
    prior_arrays = check_prior(prior, max_components, num_categories, dtype)
    warn_unobserved(prepared.column_totals, prior_arrays)
    check_distinct(max_components, prepared.folded.num_distinct)
    layout = resolve_layout(layout, prepared.folded, devices, dtype)
    data = device_data(
        prepared.folded, layout, prepared.num_rows, prepared.mean_log_coefficient,
        dtype, devices,
    )

    keys = jax.random.split(rng_key, len(num_components_list))
    inits = [
        padded_starts(
            random_starts(key, num_restarts, k, num_categories, dtype), max_components
        )
        for key, k in zip(keys, num_components_list, strict=True)
    ]
    init_params = jax.tree_util.tree_map(
        lambda *leaves: jnp.concatenate(leaves), *inits
    )
    component_mask = jnp.asarray(
        np.repeat(
            np.arange(max_components)[None, :]
            < np.asarray(num_components_list)[:, None],
            num_restarts,
            axis=0,
        )
    )
    tol_array, rtol_array = jnp.asarray(tol, dtype), jnp.asarray(rtol, dtype)
    if devices is not None:
        init_params, component_mask, prior_arrays, tol_array, rtol_array = replicate(
            (init_params, component_mask, prior_arrays, tol_array, rtol_array),
            devices,
        )
    results = run_sweep(
        data, init_params, component_mask, prior_arrays, tol_array, rtol_array,
        max_iters=max_iters, map_estimate=prior is not None,
    )

    # (K, restart) pairs were flattened K-major: regroup them per K.
    results = jax.tree_util.tree_map(
        lambda leaf: leaf.reshape(len(num_components_list), num_restarts,
                                  *leaf.shape[1:]),
        results,
    )
    fits = []
    for index, num_components in enumerate(num_components_list):
        best = best_restart(
            jax.tree_util.tree_map(lambda leaf, i=index: leaf[i], results)
        )
        best = best._replace(
            params=MultinomialMixtureParams(
                best.params.weights[:num_components],
                best.params.probs[:num_components],
            )
        )
        warn_result(best, max_iters, tol, rtol, prefix=f"K={num_components}: ")
        fits.append(best)
    return fits


@partial(jax.jit, static_argnames=("max_iters", "map_estimate"))
def run_sweep(data, init_params, component_mask, prior, tol, rtol, *, max_iters,
              map_estimate) -> EMResult:
    """Every (K, restart) of a sweep under one vmap, components padded to K_max.

    init_params: weights (f, K_max), probs (f, K_max, c); component_mask
    (f, K_max) is True on the K real components of each of the f fits.
    """
    prior = MultinomialMixturePrior(
        prior.weight_concentration, prior.probs_concentration
    )

    def fit_one(init, mask):
        return run_stage(
            init, data, prior, tol, rtol, grouped=False, num_groups=1,
            map_estimate=map_estimate, max_iters=max_iters, component_mask=mask,
        )

    return jax.vmap(fit_one)(init_params, component_mask)


def padded_starts(init: MultinomialMixtureParams, max_components: int):
    """Restart-stacked params padded to K_max: weight 0, probs uniform (unused)."""
    num_restarts, num_components, num_categories = init.probs.shape
    extra = max_components - num_components
    dtype = init.probs.dtype
    weights = jnp.concatenate(
        [init.weights, jnp.zeros((num_restarts, extra), dtype)], axis=1
    )
    # Any simplex row would do: a masked component's probs never enter a result.
    uniform = jnp.full((num_restarts, extra, num_categories), 1.0 / num_categories,
                       dtype)
    return MultinomialMixtureParams(
        weights, jnp.concatenate([init.probs, uniform], axis=1)
    )
