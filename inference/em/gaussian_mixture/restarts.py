"""The restart machinery: every restart of one fit in one jitted program.

Reading order:

  ``run_restarts``    the jitted core of ``fit_gaussian_mixture``: the shared
                      problem, then every restart under one ``vmap``, each one
                      ``lax.while_loop``; with ``screen_iters`` > 0 only the best
                      screened restart continues (``driver.continue_best``);
  ``shared_problem``  what every restart of a fit shares (``Problem``);
  ``run_restart``     one restart: its start (``starts.initial_params``, or the
                      one given), ``driver.run_em`` over ``steps.em_step``, and
                      the objective recomputed at the final parameters;
  ``finished_result`` the EMResult in the data's units, and whether it failed.

The data are centred inside the jitted core (the log-likelihood is translation
invariant, so nothing else changes), which keeps float32 accurate on data far
from the origin; the means are moved back at the end. Nothing leaves the device
inside the loop. The per-row products the statistics are linear in
(``steps.row_products``) are computed once per fit, when they fit in memory
(``PRODUCTS_MAX_ELEMENTS``). Rows carry weights (0 for padding), so the same
core runs with the rows sharded over several devices (``inference.sharding``);
``sweep`` reuses ``shared_problem`` and ``run_restart`` with padding components.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from latentmix.inference.compiler import em_jit
from latentmix.inference.em.driver import (
    EMResult,
    continue_best,
    over_restarts,
    run_em,
)
from latentmix.inference.em.gaussian_mixture.blocked import (
    BlockedRows,
    lay_out_blocks,
)
from latentmix.inference.em.gaussian_mixture.starts import initial_params
from latentmix.inference.em.gaussian_mixture.steps import (
    LoopState,
    em_step,
    mean_log_likelihood,
    reseed_covariance_from,
    row_products,
    second_moment,
)
from latentmix.models.gaussian_mixture import GMMPrior, log_prior

__all__ = [
    "PRODUCTS_MAX_ELEMENTS",
    "Problem",
    "finished_result",
    "run_restart",
    "run_restarts",
    "shared_problem",
]

# Precomputed per-row products (``steps.row_products``) are kept below this many
# elements (512 MiB in float64); beyond, the statistics are computed from x in
# every iteration (slower, the same result up to rounding).
PRODUCTS_MAX_ELEMENTS = 1 << 26

_HIGHEST = jax.lax.Precision.HIGHEST


@partial(
    em_jit,
    static_argnames=("num_components", "covariance_type", "init_method", "max_iters",
                     "screen_iters", "sharded"),
)
def run_restarts(x, row_weights, init_params, keys, tol, rtol, reg_covar, prior, *,
                 num_components, covariance_type, init_method, max_iters,
                 screen_iters=0, sharded=False):
    """All restarts of EM (vmap over ``keys``), each one lax.while_loop.

    ``init_params``: batched GMMParams in the data's units (then
    ``init_method`` is "params"), or None to draw the starts from ``keys``.
    Returns (EMResult, num_reseeds, failed), each with a leading restart axis.
    With ``screen_iters`` > 0, every restart runs that many iterations and only
    the best one continues (``driver.continue_best``). ``sharded``: the rows
    are split over several devices (``driver.over_restarts``).
    """
    problem = shared_problem(x, row_weights, reg_covar, prior, covariance_type,
                             num_components)
    active = jnp.ones((num_components,), bool)
    restart = partial(
        run_restart, problem, active=active, tol=tol, rtol=rtol,
        reg_covar=reg_covar, num_components=num_components,
        covariance_type=covariance_type, init_method=init_method,
    )
    first_iters = screen_iters or max_iters
    results = over_restarts(partial(restart, max_iters=first_iters), keys,
                            init_params, sharded=sharded)
    if not screen_iters:
        return results
    return continue_best(results, partial(restart, None, max_iters=max_iters
                                          - screen_iters), max_iters)


class Problem(NamedTuple):
    """What every restart of one fit shares (inside the jitted core)."""

    centred: jax.Array  # x minus the weighted data centre
    row_weights: jax.Array  # (n,) 1 for a row, 0 for padding
    num_rows: jax.Array  # sum of the row weights
    centre: jax.Array
    prior: GMMPrior | None  # with mean_prior centred
    reseed_covariance: jax.Array
    # row_products(centred) when they fit; for "tied" the (d, d) second moment;
    # for "full" when they do not fit, blocked.lay_out_blocks(centred, ...).
    products: jax.Array | BlockedRows | None


def shared_problem(x, row_weights, reg_covar, prior, covariance_type,
                   num_components) -> Problem:
    """Centre the data (and the prior's mean), precompute the per-row products
    (or, for full covariances too wide to keep them, the row blocks for
    ``num_components``) and the covariance a reseeded component gets (the data
    covariance)."""
    centre = _weighted_centre(x, row_weights)
    centred = x - centre
    if prior is not None:
        prior = prior._replace(mean_prior=prior.mean_prior - centre)
    num_rows, num_features = x.shape
    total = jnp.sum(row_weights)
    # The data are centred, so second moment / total is the data covariance.
    if covariance_type in ("diag", "spherical"):
        # Only its diagonal is read (``reseed_covariance_from``): n d flops, not
        # the n d^2 of a (d, n) x (n, d) product (3.1 -> 1 ms at n = 1e5, d = 16).
        moment = jnp.diag(jnp.matmul(row_weights, centred * centred,
                                     precision=_HIGHEST))
    else:
        moment = second_moment(centred, row_weights)
    products = None
    # Columns of row_products ("tied" has none: its products are the moment).
    width = {"full": num_features * (num_features + 1) // 2,
             "diag": 2 * num_features, "spherical": num_features + 1}.get(
        covariance_type, 0)
    if covariance_type == "tied":
        products = moment
    elif 0 < num_rows * width <= PRODUCTS_MAX_ELEMENTS:
        products = row_products(centred, covariance_type)
    elif covariance_type == "full":
        # Row blocks (``blocked``), laid out here, outside the EM loop.
        products = lay_out_blocks(centred, row_weights, num_components)
    reseed_covariance = reseed_covariance_from(moment / total, covariance_type,
                                               reg_covar)
    return Problem(centred, row_weights, total, centre, prior, reseed_covariance,
                   products)


def run_restart(problem: Problem, key, start, active, tol, rtol, reg_covar, *,
                num_components, covariance_type, init_method, max_iters):
    """One restart: initialise (unless ``start`` is given), run EM, check it.

    ``start``: GMMParams in the data's units, or None to draw it from ``key``.
    ``active`` (k,): False for the padding components of a sweep.
    Returns (EMResult in the data's units, number of reseeds, failed).
    """
    if start is None:
        start = initial_params(
            key, problem.centred, problem.row_weights, active, num_components,
            covariance_type, init_method, reg_covar, problem.prior,
        )
    else:
        start = start._replace(means=start.means - problem.centre)
    step_fn = partial(
        em_step,
        x=problem.centred,
        row_weights=problem.row_weights,
        num_rows=problem.num_rows,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        prior=problem.prior,
        reseed_covariance=problem.reseed_covariance,
        active=active,
        products=problem.products,
    )
    state, num_iters, converged, trace = run_em(
        step_fn,
        LoopState(start, jnp.zeros((), jnp.int32)),
        max_iters=max_iters,
        tol=tol,
        rtol=rtol,
        dtype=problem.centred.dtype,
    )
    return _finish(problem, state.params, state.num_reseeds, num_iters, converged,
                   trace, covariance_type)


def finished_result(params, value, num_iters, converged, trace, centre):
    """(EMResult in the data's units, failed) of one restart.

    The restart failed when its final objective or a parameter is not finite;
    a failed restart is never converged.
    """
    finite_params = jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in params])
    )
    failed = ~(jnp.isfinite(value) & finite_params)
    params = params._replace(means=params.means + centre)
    return EMResult(params, value, num_iters, converged & ~failed, trace), failed


def _weighted_centre(x, row_weights):
    """Weighted column means, corrected by the mean residual (float32 safe)."""
    total = jnp.sum(row_weights)
    centre = jnp.matmul(row_weights, x, precision=_HIGHEST) / total
    return centre + jnp.matmul(row_weights, x - centre, precision=_HIGHEST) / total


def _finish(problem: Problem, params, num_reseeds, num_iters, converged, trace,
            covariance_type):
    """Recompute the objective at the final params and mark non-finite fits."""
    # "full" goes through the row blocks of ``blocked`` here (the log-likelihood
    # alone): measured faster than the kept pairs product for this one E-step.
    products = problem.products
    if covariance_type == "full" and not isinstance(products, BlockedRows):
        products = None
    value = mean_log_likelihood(params, problem.centred, problem.row_weights,
                                problem.num_rows, covariance_type, products)
    if problem.prior is not None:
        value = value + log_prior(params, problem.prior, covariance_type) / (
            problem.num_rows
        )
    result, failed = finished_result(params, value, num_iters, converged, trace,
                                     problem.centre)
    return result, num_reseeds, failed
