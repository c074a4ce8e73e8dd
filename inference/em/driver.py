"""The generic EM driver shared by every model: one ``lax.while_loop``.

A model supplies ``step_fn(params) -> (new_params, objective)``: one E-step at
``params`` (which also yields the objective at ``params``) followed by one M-step.
EM theory (Dempster, Laird & Rubin 1977; article 2, "Convergence") guarantees the
objective never decreases from one call to the next.

Stopping rule, evaluated after every iteration t >= 2:

    converged  <=>  objective_t, objective_{t-1} finite  and
                    |objective_t - objective_{t-1}| < tol + rtol * |objective_t|

The loop also stops, *not* converged, when the objective turns non-finite or after
``max_iters`` iterations. ``converged`` is this rule itself, never inferred from
``num_iters < max_iters`` (a NaN objective would otherwise read as converged).

The driver is not jitted: each model's public ``fit_*`` is the single jit boundary.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["EMResult", "run_em", "ConvergenceWarning", "stopping_rule_met"]


class ConvergenceWarning(UserWarning):
    """EM stopped at max_iters before meeting its stopping rule."""


class EMResult(NamedTuple):
    """Output of an EM fit. Every field is an array, so results vmap over restarts.

    params: the model's parameter NamedTuple after the last M-step.
    log_likelihood: the objective recomputed at ``params`` (for mixtures the mean
        per-row log-likelihood, for MAP-EM the mean per-row log posterior; for
        linear regression the log evidence).
    num_iters: number of EM iterations (M-steps) performed.
    converged: True only when the stopping rule above fired on finite values.
    trace: (max_iters,) objective at the start of each iteration, NaN after the stop.
    """

    params: Any
    log_likelihood: jax.Array
    num_iters: jax.Array
    converged: jax.Array
    trace: jax.Array


class _Carry(NamedTuple):
    params: Any
    objective: jax.Array
    delta: jax.Array
    num_iters: jax.Array
    trace: jax.Array


def stopping_rule_met(objective, delta, tol, rtol):
    """The convergence test above, for loops that iterate outside ``run_em``.

    ``delta`` = |objective_t - objective_{t-1}|; it is inf after the first
    iteration (the previous objective is -inf) and NaN once the objective is
    non-finite, so the rule needs two finite objectives. Works on arrays (one
    entry per restart) and inside or outside jit.
    """
    return (
        jnp.isfinite(objective)
        & jnp.isfinite(delta)
        & (delta < tol + rtol * jnp.abs(objective))
    )


def run_em(step_fn, init_params, *, max_iters: int, tol, rtol=0.0, dtype=None):
    """Iterate ``params, objective = step_fn(params)`` under the stopping rule.

    Args:
      step_fn: one EM iteration; returns the new params and the objective at the
        params it was given.
      init_params: starting parameters (a pytree).
      max_iters: static bound on iterations; sizes ``trace``.
      tol, rtol: absolute and relative tolerances of the stopping rule (traced).
      dtype: float dtype of objective and trace (default: that of the params).

    Returns:
      ``(params, num_iters, converged, trace)``. The caller recomputes the
      objective at ``params`` for ``EMResult.log_likelihood``.
    """
    if dtype is None:
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(init_params))
    tol = jnp.asarray(tol, dtype)
    rtol = jnp.asarray(rtol, dtype)

    def keep_going(carry):
        finite = jnp.isfinite(carry.objective) | (carry.num_iters == 0)
        small = carry.delta < tol + rtol * jnp.abs(carry.objective)
        return (carry.num_iters < max_iters) & finite & ~small

    def iterate(carry):
        params, objective = step_fn(carry.params)
        objective = objective.astype(dtype)
        return _Carry(
            params=params,
            objective=objective,
            delta=jnp.abs(objective - carry.objective),
            num_iters=carry.num_iters + 1,
            trace=carry.trace.at[carry.num_iters].set(objective),
        )

    start = _Carry(
        params=init_params,
        objective=jnp.asarray(-jnp.inf, dtype),
        delta=jnp.asarray(jnp.inf, dtype),
        num_iters=jnp.asarray(0, jnp.int32),
        trace=jnp.full((max_iters,), jnp.nan, dtype),
    )
    if max_iters == 0:
        # Nothing to iterate, and the body cannot even be traced: JAX refuses to
        # index the empty trace. max_iters is static, so this branch is free.
        return init_params, start.num_iters, jnp.asarray(False), start.trace
    final = jax.lax.while_loop(keep_going, iterate, start)
    converged = stopping_rule_met(final.objective, final.delta, tol, rtol)
    return final.params, final.num_iters, converged, final.trace
