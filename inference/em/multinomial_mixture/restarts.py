"""Restarts: random starts, the one compiled program over them, the best one.

Random starts (``random_starts``): uniform weights and p_k ~ Dirichlet(2C 1_C),
the tutorial's start, drawn by NumPy from the bits of ``rng_key``.

One program (``run_restarts``, the single ``jax.jit`` of an in-memory fit): the
restarts run under ``vmap``, each its own ``lax.while_loop``
(``inference.em.driver.run_em``) that stops on its own rule. A restart of the
grouped model has two stages (Cadez et al. 2001): EM of the global model, then
EM of the grouped model started from the global fit, every group at the global
weights; a start with per-group weights enters the grouped stage directly.
Each stage ends with sklearn's "final E-step": ``log_likelihood`` is the
objective recomputed at the returned parameters.

Screening (``screen_iters`` = s > 0, global model only): every restart runs s
iterations, then only the best of them continues for max_iters - s more
(``driver.continue_best``; "em-EM", Biernacki, Celeux & Govaert 2003): r
restarts cost about r s + max_iters iterations instead of r max_iters. The
grouped model is not screened: its restarts are refused with screen_iters > 0
(``fit``).

Failure: a restart fails when its final objective (or a parameter) is not
finite, i.e. a basket is impossible under every component (possible only from
an explicit start that gives probability 0 to a category the basket holds:
from a start where every basket is possible, the M-step keeps p_kc > 0 for
every category of every basket of component k). A failed restart is never
converged. ``best_fit`` returns the restart with the highest finite objective
and raises ``driver.AllRestartsFailedError`` when every restart failed;
``best_restart`` (the sweep's) returns the first restart then.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.validation import warn
from latentmix.inference.em.driver import (
    AllRestartsFailedError,
    ConvergenceWarning,
    EMRestarts,
    EMResult,
    best_result,
    collect_restarts,
    continue_best,
    over_restarts,
    run_em,
)
from latentmix.inference.em.multinomial_mixture.steps import e_step, m_step
from latentmix.models.multinomial_mixture import (
    MultinomialMixtureParams,
    MultinomialMixturePrior,
)

__all__ = [
    "best_fit",
    "best_restart",
    "random_starts",
    "restart_failed",
    "run_restarts",
    "run_stage",
    "warn_result",
]

# A component whose weight ends below this holds no basket's worth of mass
# (1e-8 of a data set of 1e8 baskets is one basket).
EMPTY_WEIGHT = 1e-8


def random_starts(rng_key, num_restarts, num_components, num_categories, dtype):
    """The tutorial's start for each restart: uniform weights, p_k ~ Dirichlet(2C 1_C).

    Drawn by NumPy from a seed made of the key's bits: reproducible from
    ``rng_key`` like any JAX draw, and without a JAX Gamma sampler to compile
    for every new K (about a second each, most of a model-selection sweep).
    """
    if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.key_data(rng_key)
    rng = np.random.default_rng(np.asarray(rng_key).ravel().tolist())
    concentration = np.full(num_categories, 2.0 * num_categories)
    probs = rng.dirichlet(concentration, size=(num_restarts, num_components))
    weights = np.full((num_restarts, num_components), 1.0 / num_components)
    return MultinomialMixtureParams(
        jnp.asarray(weights, dtype), jnp.asarray(probs, dtype)
    )


@partial(
    jax.jit,
    static_argnames=(
        "num_components", "num_groups", "max_iters", "map_estimate", "global_stage",
        "screen_iters", "sharded",
    ),
)
def run_restarts(data, init_params, prior, tol, rtol, *, num_components, num_groups,
                 max_iters, map_estimate, global_stage, screen_iters=0,
                 sharded=False):
    """All restarts of one fit (init_params has a leading restart axis).

    Returns ``(EMResult, num_reseeds, failed)`` with a leading restart axis
    (``driver.collect_restarts`` makes them an ``EMRestarts``); num_reseeds is
    0 (the multinomial mixture never reseeds). ``sharded``: the rows are split
    over several devices (``driver.over_restarts``).
    """
    if screen_iters and num_groups is not None:
        raise ValueError("screen_iters screens the global model only")
    prior = MultinomialMixturePrior(
        prior.weight_concentration, prior.probs_concentration
    )
    stage = partial(run_stage, data=data, tol=tol, rtol=rtol,
                    map_estimate=map_estimate)

    def fit_one(init, iters):
        if global_stage:
            result = stage(init, prior=prior, grouped=False, num_groups=1,
                           max_iters=iters)
            if num_groups is None:
                return _outcome(result)
            init = result.params
            init = init._replace(
                weights=jnp.broadcast_to(init.weights, (num_groups, num_components))
            )
        group_prior = prior._replace(
            weight_concentration=prior.weight_concentration[None, :]
        )
        return _outcome(stage(init, prior=group_prior, grouped=True,
                              num_groups=num_groups, max_iters=iters))

    if not screen_iters:
        return over_restarts(partial(fit_one, iters=max_iters), init_params,
                             sharded=sharded)
    screened = over_restarts(partial(fit_one, iters=screen_iters), init_params,
                             sharded=sharded)
    return continue_best(
        screened, partial(fit_one, iters=max_iters - screen_iters), max_iters
    )


def run_stage(init, data, prior, tol, rtol, *, grouped, num_groups, map_estimate,
              max_iters, component_mask=None) -> EMResult:
    """EM from ``init`` to the stopping rule: E-step, M-step, repeat (one restart).

    The objective of ``trace[t]`` is the E-step's at the params entering
    iteration t; ``log_likelihood`` the objective at the returned params.
    """
    def step_fn(params):
        resp, objective = e_step(
            params, data, prior, grouped, map_estimate, component_mask
        )
        new_params = m_step(
            params, resp, data, prior, grouped, num_groups, component_mask
        )
        return new_params, objective

    params, num_iters, converged, trace = run_em(
        step_fn, init, max_iters=max_iters, tol=tol, rtol=rtol
    )
    # sklearn's "final E-step": report the objective at the returned params.
    _, objective = e_step(params, data, prior, grouped, map_estimate, component_mask)
    return EMResult(params, objective, num_iters, converged, trace)


def best_fit(restarts: EMRestarts, max_iters: int, tol, rtol) -> EMResult:
    """The best restart's EMResult, checked (module docstring, "Failure").

    Raises:
      AllRestartsFailedError: every restart's objective is non-finite.

    Warns:
      ConvergenceWarning: the best restart stopped at max_iters (max_iters > 0).
    """
    try:
        result = best_result(restarts)
    except AllRestartsFailedError as error:
        raise AllRestartsFailedError(
            f"{error}: a basket has probability 0 under every component (its "
            f"start gives probability 0 to a category the basket holds). Check "
            f"init (every category of a basket needs a positive probability in "
            f"some component) or use a prior with pseudocounts, "
            f"prior=MultinomialMixturePrior(probs_concentration=1 + pseudocount)"
        ) from None
    warn_result(result, max_iters, tol, rtol)
    return result


def best_restart(results: EMResult, failed=None) -> EMResult:
    """The restart with the highest finite objective (the first one if none is).

    ``failed`` defaults to ``restart_failed(results)``; ties go to the first.
    """
    if failed is None:
        failed = restart_failed(results)
    failed = np.asarray(failed)
    restarts = collect_restarts(results, np.zeros(failed.shape, np.int32), failed)
    index = max(restarts.best_index, 0)
    return jax.tree_util.tree_map(lambda leaf: leaf[index], results)


def restart_failed(result: EMResult):
    """True where the objective or a parameter is not finite.

    One restart, or one entry per restart for results with a leading restart
    axis (the axes of ``log_likelihood``); inside or outside jit.
    """
    batch = jnp.ndim(result.log_likelihood)
    finite = jnp.isfinite(result.log_likelihood)
    for leaf in result.params:
        finite = finite & jnp.all(
            jnp.isfinite(leaf), axis=tuple(range(batch, jnp.ndim(leaf)))
        )
    return ~finite


def warn_result(result: EMResult, max_iters: int, tol, rtol,
                prefix: str = "") -> None:
    """ConvergenceWarning for a non-finite objective or a run cut at max_iters."""
    if not bool(jnp.isfinite(result.log_likelihood)):
        warn(
            f"{prefix}every restart ended with a non-finite objective (a basket "
            f"impossible under every component); check init or use a prior",
            ConvergenceWarning,
        )
    elif max_iters > 0 and not bool(result.converged):
        warn(
            f"{prefix}EM did not converge in {max_iters} iterations (tol={tol}, "
            f"rtol={rtol}); increase max_iters or tol",
            ConvergenceWarning,
        )
    weights = np.asarray(result.params.weights)
    if weights.ndim == 1 and max_iters > 0:  # global weights (groups: per group)
        empty = np.flatnonzero(weights < EMPTY_WEIGHT).tolist()
        if empty:
            warn(
                f"{prefix}component(s) {empty} ended empty (weight below "
                f"{EMPTY_WEIGHT:g}): the best start left them without baskets; "
                f"try more restarts (num_restarts), or fewer components if the "
                f"data support fewer",
                ConvergenceWarning,
            )


def _outcome(result: EMResult):
    """(result, num_reseeds = 0, failed) of one restart: ``driver.continue_best``'s
    triple; a failed restart is never converged."""
    failed = restart_failed(result)
    return (result._replace(converged=result.converged & ~failed),
            jnp.zeros((), jnp.int32), failed)
