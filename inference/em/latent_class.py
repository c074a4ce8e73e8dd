"""EM for the latent class model (``models.latent_class``), with restarts.

Notation: row i answers x_ij (X_ijv = 1 where x_ij = v, all zeros where the
answer is missing), class weights w_l, answer probabilities p_ljv.

E-step (Bayes' rule, log space):

    log gamma_il = log w_l + sum_jv X_ijv log p_ljv - logsumexp_l' [same with l']

M-step (a Lagrange multiplier per simplex constraint, as for the Gaussian
mixture's weights in article 3; with Dirichlet(a) on w and Dirichlet(b) on each
p_lj this is the posterior mode, MAP-EM):

    w_l   = (N_l + a - 1) / (n + L (a - 1)),             N_l   = sum_i gamma_il
    p_ljv = (S_ljv + b - 1) / (O_lj + V (b - 1)),        S_ljv = sum_i gamma_il X_ijv

where O_lj = sum_v S_ljv counts the (responsibility-weighted) rows that answered
variable j: a missing answer adds to neither, so the update uses exactly the
observed answers. A (class, variable) pair with O_lj + V(b - 1) = 0 (a class of
weight 0) keeps its previous probabilities, which changes no likelihood.

Objective (``EMResult.trace`` and ``log_likelihood``): the mean per-row
log-likelihood (1/n) sum_i log p(x_i), plus log p(theta) / n for MAP-EM; EM never
decreases it (Dempster, Laird & Rubin 1977). Stopping rule: ``driver.run_em``.

Restarts: every restart runs under ``vmap`` in one jitted program
(``run_restarts``, the one ``jax.jit`` of a fit), each its own
``lax.while_loop``; the one with the highest finite final objective is returned,
and ``AllRestartsFailedError`` is raised when every restart's objective is
non-finite (a row impossible under every class: a start that gives probability 0
to an answer the row holds).

References:
  1. Goodman (1974), Exploratory latent structure analysis using both
     identifiable and unidentifiable models.
  2. Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via
     the EM algorithm.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.validation import check_int, check_nonnegative, warn
from latentmix.inference.em.driver import (
    AllRestartsFailedError,
    ConvergenceWarning,
    EMRestarts,
    EMResult,
    best_result,
    collect_restarts,
    run_em,
)
from latentmix.models.latent_class import (
    LatentClassParams,
    LatentClassPrior,
    check_answers,
    log_prior,
    one_hot,
)

__all__ = [
    "LOG_ZERO",
    "e_step",
    "fit_latent_class",
    "fit_latent_class_restarts",
    "m_step",
    "random_starts",
    "run_restarts",
]

LOG_ZERO = -1e30  # log 0 in the inner loop: 0 * LOG_ZERO = 0 where X_ijv = 0


def fit_latent_class(answers, num_classes: int, *, num_values: int | None = None,
                     init="random", num_restarts: int = 1, max_iters: int = 1000,
                     tol: float = 1e-8, rtol: float = 0.0,
                     prior: LatentClassPrior | None = None,
                     rng_key=None) -> EMResult:
    """Fit a latent class model by (MAP-)EM; the best of ``num_restarts``.

    Args:
      answers: (n, m) integer codes 0..V-1, ``MISSING`` (-1) for a missing answer.
      num_classes: L.
      num_values: V (default: the largest code + 1).
      init: "random" (uniform weights, every p_lj ~ Dirichlet(1_V), drawn from
        ``rng_key``) or a LatentClassParams: one start (probs (L, m, V)),
        repeated for every restart, or r stacked starts (probs (r, L, m, V)).
      num_restarts: independent starts, under ``vmap``.
      max_iters, tol, rtol: the stopping rule of ``driver.run_em`` on the mean
        per-row objective (nats per row): |f_t - f_{t-1}| < tol + rtol |f_t|.
      prior: LatentClassPrior (concentrations >= 1) for MAP-EM; None for
        maximum likelihood.
      rng_key: JAX PRNG key (required with init="random").

    Returns:
      EMResult of the best restart: params (LatentClassParams), log_likelihood
      (mean per-row objective at params), num_iters, converged, trace.

    Raises:
      AllRestartsFailedError: every restart ended with a non-finite objective.

    Warns:
      ConvergenceWarning: the best restart stopped at max_iters.
    """
    restarts = fit_latent_class_restarts(
        answers, num_classes, num_values=num_values, init=init,
        num_restarts=num_restarts, max_iters=max_iters, tol=tol, rtol=rtol,
        prior=prior, rng_key=rng_key)
    try:
        result = best_result(restarts)
    except AllRestartsFailedError as error:
        raise AllRestartsFailedError(
            f"{error}: a row is impossible under every class (its start gives "
            f"probability 0 to an answer it holds); use a start with positive "
            f"probabilities or a prior with pseudocounts"
        ) from None
    if max_iters > 0 and not bool(result.converged):
        warn(f"EM did not converge in {max_iters} iterations (tol={tol}, "
             f"rtol={rtol}); increase max_iters or tol", ConvergenceWarning)
    return result


def fit_latent_class_restarts(answers, num_classes: int, *,
                              num_values: int | None = None, init="random",
                              num_restarts: int = 1, max_iters: int = 1000,
                              tol: float = 1e-8, rtol: float = 0.0,
                              prior: LatentClassPrior | None = None,
                              rng_key=None) -> EMRestarts:
    """Every restart of ``fit_latent_class`` (same arguments), as EMRestarts.

    Nothing is raised when restarts fail (``failed``, ``best_index == -1``).
    """
    answers, num_values = check_answers(answers, num_values)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    num_restarts = check_int("num_restarts", num_restarts, minimum=1)
    max_iters = check_int("max_iters", max_iters, minimum=0)
    check_nonnegative("tol", tol)
    check_nonnegative("rtol", rtol)
    dtype = jnp.result_type(float)
    num_variables = answers.shape[1]
    prior_arrays = _check_prior(prior, dtype)
    starts = _check_init(init, num_classes, num_variables, num_values, num_restarts,
                         dtype)
    if starts is None:
        if rng_key is None:
            raise ValueError("rng_key is required with init='random'")
        starts = random_starts(rng_key, num_restarts, num_classes, num_variables,
                               num_values, dtype)
    results, failed = run_restarts(
        one_hot(answers, num_values), starts, prior_arrays,
        jnp.asarray(tol, dtype), jnp.asarray(rtol, dtype), max_iters=max_iters,
        map_estimate=prior is not None)
    return collect_restarts(results, np.zeros(np.shape(failed), np.int32), failed)


def random_starts(rng_key, num_restarts, num_classes, num_variables, num_values,
                  dtype) -> LatentClassParams:
    """Uniform weights and p_lj ~ Dirichlet(1_V) for each restart, class, variable.

    Drawn by NumPy from the key's bits (reproducible from ``rng_key``, and no
    JAX Gamma sampler to compile per shape).
    """
    if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.key_data(rng_key)
    rng = np.random.default_rng(np.asarray(rng_key).ravel().tolist())
    probs = rng.dirichlet(np.ones(num_values),
                          size=(num_restarts, num_classes, num_variables))
    weights = np.full((num_restarts, num_classes), 1.0 / num_classes)
    return LatentClassParams(jnp.asarray(weights, dtype), jnp.asarray(probs, dtype))


@partial(jax.jit, static_argnames=("max_iters", "map_estimate"))
def run_restarts(indicators, starts: LatentClassParams, prior: LatentClassPrior,
                 tol, rtol, *, max_iters: int, map_estimate: bool):
    """Every restart (leading axis of ``starts``) to its stopping rule.

    Returns ``(EMResult with a leading restart axis, failed (r,))``; a failed
    restart (non-finite objective or parameters) is never converged.
    """
    def one(start):
        def step_fn(params):
            resp, objective = e_step(params, indicators, prior, map_estimate)
            return m_step(params, resp, indicators, prior), objective

        params, num_iters, converged, trace = run_em(
            step_fn, start, max_iters=max_iters, tol=tol, rtol=rtol)
        # The final E-step: the objective at the returned parameters.
        _, objective = e_step(params, indicators, prior, map_estimate)
        failed = ~(jnp.isfinite(objective) & jnp.all(jnp.isfinite(params.weights))
                   & jnp.all(jnp.isfinite(params.probs)))
        return EMResult(params, objective, num_iters, converged & ~failed,
                        trace), failed

    return jax.vmap(one)(starts)


def e_step(params: LatentClassParams, indicators, prior: LatentClassPrior,
           map_estimate: bool):
    """Responsibilities gamma (n, L) and the mean per-row objective at ``params``.

    log gamma_il = log w_l + sum_jv X_ijv log p_ljv - log p(x_i); objective =
    (sum_i log p(x_i) [+ log p(theta)]) / n.
    """
    joint = _safe_log(params.weights) + jnp.einsum(
        "njv,ljv->nl", indicators, _safe_log(params.probs),
        precision=jax.lax.Precision.HIGHEST)
    log_norm = jax.nn.logsumexp(joint, axis=-1)
    # Every class impossible (below the LOG_ZERO stand-in): log p(x_i) = -inf.
    log_norm = jnp.where(log_norm < 0.5 * LOG_ZERO, -jnp.inf, log_norm)
    total = jnp.sum(log_norm)
    if map_estimate:
        total = total + log_prior(params, prior)
    return jnp.exp(joint - log_norm[:, None]), total / indicators.shape[0]


def m_step(params: LatentClassParams, resp, indicators,
           prior: LatentClassPrior) -> LatentClassParams:
    """The closed-form (MAP) update from responsibilities.

    w_l = (N_l + a - 1) / (n + L(a - 1)) and
    p_ljv = (S_ljv + b - 1) / (O_lj + V(b - 1)); a zero denominator keeps the
    previous value (module docstring).
    """
    counts = resp.sum(axis=0) + (prior.weight_concentration - 1.0)
    weights = counts / counts.sum()
    totals = jnp.einsum("nl,njv->ljv", resp, indicators,
                        precision=jax.lax.Precision.HIGHEST)
    totals = totals + (prior.probs_concentration - 1.0)
    norm = totals.sum(axis=-1, keepdims=True)
    probs = jnp.where(norm > 0, totals / jnp.where(norm > 0, norm, 1.0),
                      params.probs)
    return LatentClassParams(weights, probs)


def _safe_log(x):
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), LOG_ZERO)


def _check_prior(prior, dtype) -> LatentClassPrior:
    prior = LatentClassPrior() if prior is None else prior
    if not isinstance(prior, LatentClassPrior):
        raise TypeError(f"prior must be a LatentClassPrior or None, got {type(prior)}")
    for name in ("weight_concentration", "probs_concentration"):
        value = float(getattr(prior, name))
        if not np.isfinite(value) or value < 1.0:
            raise ValueError(
                f"prior.{name} must be >= 1 for MAP-EM, got {value!r}: below 1 the "
                f"Dirichlet density is unbounded at the simplex boundary and has no "
                f"mode. Use 1 for maximum likelihood, or 1 + pseudocount.")
    return LatentClassPrior(jnp.asarray(prior.weight_concentration, dtype),
                            jnp.asarray(prior.probs_concentration, dtype))


def _check_init(init, num_classes, num_variables, num_values, num_restarts, dtype):
    """None for "random", else the starts stacked on a leading restart axis."""
    if isinstance(init, str):
        if init != "random":
            raise ValueError(
                f"init must be 'random' or a LatentClassParams, got {init!r}")
        return None
    if not isinstance(init, LatentClassParams):
        raise TypeError(f"init must be 'random' or a LatentClassParams, got "
                        f"{type(init)}")
    weights = np.asarray(init.weights, np.float64)
    probs = np.asarray(init.probs, np.float64)
    shape = (num_classes, num_variables, num_values)
    stacked = probs.ndim == 4
    if probs.shape[stacked:] != shape or weights.shape[stacked:] != (num_classes,):
        raise ValueError(
            f"init must hold weights ({num_classes},) and probs {shape} (or stacked "
            f"with a leading restart axis), got {weights.shape} and {probs.shape}")
    if stacked and weights.shape[0] != probs.shape[0]:
        raise ValueError("stacked init: weights and probs need the same number of "
                         "starts")
    if stacked and num_restarts not in (1, probs.shape[0]):
        raise ValueError(f"init holds {probs.shape[0]} stacked starts but "
                         f"num_restarts={num_restarts}; make them agree")
    for name, value in (("weights", weights), ("probs", probs)):
        if np.any(value < 0) or not np.allclose(value.sum(-1), 1.0, atol=1e-6):
            raise ValueError(f"init.{name} rows must lie on the simplex")
    if not stacked:
        weights = np.broadcast_to(weights, (num_restarts,) + weights.shape)
        probs = np.broadcast_to(probs, (num_restarts,) + probs.shape)
    return LatentClassParams(jnp.asarray(weights, dtype), jnp.asarray(probs, dtype))
