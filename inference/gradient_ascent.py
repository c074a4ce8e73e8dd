"""Why EM and not plain gradient ascent for a Gaussian mixture (article 2).

The mixture's parameters live on constrained sets: the weights on the simplex
(w_k >= 0, sum_k w_k = 1), every covariance in the cone of symmetric
positive-definite matrices. Three ways to climb the mean log-likelihood
f(theta) = (1/n) sum_i log sum_k w_k N(x_i | mu_k, Sigma_k) from one start:

* ``raw_gradient_ascent``: theta <- theta + eta grad f on the raw entries of
  w and Sigma. The formula of f is used as it stands, so nothing keeps the step
  on the constraint sets. With equal starting weights the first step moves the
  weight sum from 1 to exactly 1 + eta K (df/dw_k = (1/n) sum_i N_ik / p(x_i),
  and sum_k w_k N_ik / p(x_i) = 1), and a covariance step
  Sigma + eta/2 (Sigma^-1 S Sigma^-1 - Sigma^-1) (S the responsibility-weighted
  scatter) overshoots below 0 along a direction of small variance as soon as
  eta > 2 s^3 / (s - sigma^2) there: one step size cannot suit both a
  direction of variance 0.1 and one of variance 100.
* ``reparametrised_gradient_ascent``: the same plain ascent on unconstrained
  coordinates, w = softmax(logits) and Sigma = L L^T with L lower triangular
  with a positive (exponentiated) diagonal. Every iterate satisfies the
  constraints by construction.
* ``em_iterations``: EM's closed-form M-step (article 3) is a weighted mean and
  a weighted scatter: on the simplex and positive semi-definite with no
  projection and no step size.

Each returns a ``ConstraintPath`` of the iterates with what the figure of the
report shows: the weight sum, the smallest covariance eigenvalue and f (NaN
where the parameters are not a valid mixture). One ``jax.jit`` per entry point,
``lax.scan`` over the steps.
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from latentmix.inference.em.gaussian_mixture.steps import m_step
from latentmix.models.gaussian_mixture import GMMParams, responsibilities

__all__ = [
    "ConstraintPath",
    "em_iterations",
    "raw_gradient_ascent",
    "raw_mean_log_likelihood",
    "reparametrised_gradient_ascent",
]


class ConstraintPath(NamedTuple):
    """Iterates 0..T of one method (leading axis T + 1).

    params: GMMParams with weights (T+1, k), means (T+1, k, d), covariances
        (T+1, k, d, d) as iterated (raw: possibly off the constraint sets).
    weight_sum: (T+1,) sum_k w_k (1 on the simplex).
    min_weight: (T+1,) min_k w_k (>= 0 on the simplex).
    min_eigenvalue: (T+1,) smallest eigenvalue over every covariance (> 0 when
        all are positive definite).
    mean_log_likelihood: (T+1,) f at the iterate, NaN where the iterate is not
        a valid mixture (a weight off the simplex or a covariance not PD).
    """

    params: GMMParams
    weight_sum: jax.Array
    min_weight: jax.Array
    min_eigenvalue: jax.Array
    mean_log_likelihood: jax.Array


def raw_mean_log_likelihood(params: GMMParams, x) -> jax.Array:
    """(1/n) sum_i log sum_k w_k N(x_i | mu_k, Sigma_k) written from the formula.

    log N = -d/2 log 2 pi - 1/2 log|det Sigma| - 1/2 (x - mu)^T Sigma^-1 (x - mu)
    with |det| and a linear solve, so the expression (and its gradient) stays
    defined for any square Sigma and any weights; it is a log-density only on
    the constraint sets.
    """
    num_features = x.shape[1]
    _, log_abs_det = jnp.linalg.slogdet(params.covariances)
    diff = x[:, None, :] - params.means[None]  # (n, k, d)
    solved = jnp.linalg.solve(params.covariances[None],
                              diff[..., None])[..., 0]
    maha = jnp.sum(diff * solved, axis=-1)
    log_density = -0.5 * (num_features * math.log(2 * math.pi) + log_abs_det + maha)
    return jnp.mean(jnp.log(jnp.sum(params.weights * jnp.exp(log_density), axis=1)))


@partial(jax.jit, static_argnames="num_steps")
def raw_gradient_ascent(x, init: GMMParams, *, learning_rate,
                        num_steps: int) -> ConstraintPath:
    """theta_{t+1} = theta_t + eta grad f(theta_t) on the raw w, mu, Sigma."""
    grad_fn = jax.grad(raw_mean_log_likelihood)

    def step(params, _):
        grad = grad_fn(params, x)
        new = jax.tree_util.tree_map(lambda p, g: p + learning_rate * g, params,
                                     grad)
        return new, new

    return _path(x, init, jax.lax.scan(step, init, None, length=num_steps)[1])


@partial(jax.jit, static_argnames="num_steps")
def reparametrised_gradient_ascent(x, init: GMMParams, *, learning_rate,
                                   num_steps: int) -> ConstraintPath:
    """The same ascent on (logits, means, log-Cholesky factors); init must be valid.

    w = softmax(logits), Sigma = L L^T with diag(L) = exp(l_diag): every map
    lands on the constraint set, so every iterate is a valid mixture.
    """
    chol = jnp.linalg.cholesky(init.covariances)
    diagonal = jnp.diagonal(chol, axis1=-2, axis2=-1)
    theta = (jnp.log(init.weights), init.means,
             jnp.tril(chol, -1), jnp.log(diagonal))

    def to_params(theta):
        logits, means, lower, log_diag = theta
        factor = lower + jax.vmap(jnp.diag)(jnp.exp(log_diag))
        return GMMParams(jax.nn.softmax(logits), means,
                         factor @ jnp.swapaxes(factor, -1, -2))

    grad_fn = jax.grad(lambda theta: raw_mean_log_likelihood(to_params(theta), x))

    def step(theta, _):
        grad = grad_fn(theta)
        # Only the strictly lower triangle of ``lower`` is a free coordinate.
        grad = (grad[0], grad[1], jnp.tril(grad[2], -1), grad[3])
        new = jax.tree_util.tree_map(lambda p, g: p + learning_rate * g, theta,
                                     grad)
        return new, to_params(new)

    return _path(x, init, jax.lax.scan(step, theta, None, length=num_steps)[1])


@partial(jax.jit, static_argnames="num_steps")
def em_iterations(x, init: GMMParams, *, num_steps: int) -> ConstraintPath:
    """EM's iterates: responsibilities (Bayes' rule), then the closed-form M-step
    (weights N_k / n, weighted means, weighted scatters; no covariance floor)."""
    def step(params, _):
        new = m_step(x, responsibilities(params, x), "full")
        return new, new

    return _path(x, init, jax.lax.scan(step, init, None, length=num_steps)[1])


def _path(x, init: GMMParams, iterates: GMMParams) -> ConstraintPath:
    params = jax.tree_util.tree_map(
        lambda first, rest: jnp.concatenate([first[None], rest]), init, iterates)
    symmetric = 0.5 * (params.covariances
                       + jnp.swapaxes(params.covariances, -1, -2))
    eigenvalues = jnp.linalg.eigvalsh(symmetric)
    min_eigenvalue = jnp.min(eigenvalues, axis=(-2, -1))
    weight_sum = jnp.sum(params.weights, axis=-1)
    min_weight = jnp.min(params.weights, axis=-1)
    valid = ((min_eigenvalue > 0) & (min_weight >= 0)
             & (jnp.abs(weight_sum - 1.0) < 1e-9))
    value = jax.vmap(raw_mean_log_likelihood, in_axes=(0, None))(params, x)
    return ConstraintPath(params, weight_sum, min_weight, min_eigenvalue,
                          jnp.where(valid, value, jnp.nan))
