"""Starting parameters of an EM restart: centres, then one M-step.

"kmeans++": k-means++ seeding (Arthur & Vassilvitskii 2007) refined by
``_LLOYD_STEPS`` Lloyd iterations; "random_from_data": k distinct real rows drawn
uniformly. Either way the start is the M-step (``steps.m_step``) from the hard
assignments of the rows to the nearest centre, so it honours ``reg_covar`` and
the prior like every later iteration. Everything runs in JAX, inside the jitted
cores (under ``vmap`` over restarts).

Padding (``steps`` module docstring): padding rows (weight 0) are never drawn,
and the draws of a one-program K sweep do not depend on how many padding
components follow: k-means++ draws centre j from ``fold_in(key, j)``, and the
Gumbel top-k draw of "random_from_data" gives the same first K rows however
many it draws.
"""

import jax
import jax.numpy as jnp

from latentmix.inference.em.gaussian_mixture.steps import m_step

__all__ = ["INIT_METHODS", "initial_params"]

INIT_METHODS = ("kmeans++", "random_from_data")

# Lloyd iterations after k-means++ seeding: enough to move seeds to cluster
# centres, a small cost next to EM.
_LLOYD_STEPS = 10

_HIGHEST = jax.lax.Precision.HIGHEST


def initial_params(rng_key, x, row_weights, active, num_components,
                   covariance_type, init_method, reg_covar, prior):
    """Initial GMMParams: centres, then one M-step from hard assignments to them.

    ``init_method``: one of ``INIT_METHODS``; ``active`` (k,) marks the
    components that are not padding.
    """
    num_active = jnp.sum(active)
    if init_method == "kmeans++":
        centres = _kmeans_plus_plus(rng_key, x, row_weights, num_components,
                                    num_active)
        centres = _lloyd(x, row_weights, centres, active, _LLOYD_STEPS)
    else:
        # Uniform over real rows; the first K of the draws do not depend on how
        # many are drawn (Gumbel top-k), as the sweep's padding needs.
        drawable = (row_weights > 0).astype(x.dtype)
        rows = jax.random.choice(
            rng_key, x.shape[0], (num_components,), replace=False,
            p=drawable / jnp.sum(drawable),
        )
        centres = x[rows]
    resp = jax.nn.one_hot(_nearest(x, centres, active), num_components,
                          dtype=x.dtype)
    return m_step(x, resp, covariance_type, reg_covar=reg_covar, prior=prior,
                  row_weights=row_weights, active=active)


def _kmeans_plus_plus(rng_key, x, row_weights, num_components: int, num_active):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): D^2-weighted draws.

    Row i is drawn with probability proportional to min_j ||x_i - c_j||^2 over
    the centres drawn so far. Padding rows (weight 0, stored after the real
    rows) are never drawn. Only the first ``num_active`` centres are drawn (the
    rest stay 0, for the padding components of a one-program sweep); centre j
    uses the key ``fold_in(key, j)``, so the first K centres do not depend on
    how many padding components follow.
    """
    num_real = jnp.sum(row_weights > 0)
    key_first, key_rest = jax.random.split(rng_key)
    first = x[jax.random.randint(key_first, (), 0, num_real)]
    centres = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(first)
    min_sq = jnp.sum((x - first) ** 2, axis=1)
    drawable = row_weights > 0

    def add_centre(j, carry):
        centres, min_sq = carry
        logits = jnp.where(
            drawable & (min_sq > 0), jnp.log(jnp.maximum(min_sq, 1e-300)), -jnp.inf
        )
        index = jax.random.categorical(jax.random.fold_in(key_rest, j), logits)
        centre = x[index]
        drawn = j < num_active
        min_sq = jnp.where(
            drawn, jnp.minimum(min_sq, jnp.sum((x - centre) ** 2, axis=1)), min_sq
        )
        return centres.at[j].set(jnp.where(drawn, centre, 0.0)), min_sq

    centres, _ = jax.lax.fori_loop(1, num_components, add_centre, (centres, min_sq))
    return centres


def _lloyd(x, row_weights, centres, active, num_steps: int):
    """Lloyd's k-means iterations; a centre that loses all its rows stays put.

    c_j <- sum_i v_i [nearest(x_i) = j] x_i / sum_i v_i [nearest(x_i) = j].
    """
    num_components = centres.shape[0]

    def step(_, centres):
        onehot = jax.nn.one_hot(_nearest(x, centres, active), num_components,
                                dtype=x.dtype)
        onehot = onehot * row_weights[:, None]
        counts = jnp.sum(onehot, axis=0)
        sums = jnp.matmul(onehot.T, x, precision=_HIGHEST)
        return jnp.where(
            counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres
        )

    return jax.lax.fori_loop(0, num_steps, step, centres)


def _nearest(x, centres, active):
    """Index of the nearest active centre for every row."""
    distances = _squared_distances(x, centres)
    return jnp.argmin(jnp.where(active, distances, jnp.inf), axis=1)


def _squared_distances(x, centres):
    """||x_i - c_j||^2 (n, k) by expansion; only used to rank centres (argmin)."""
    cross = jnp.matmul(x, centres.T, precision=_HIGHEST)
    return (
        jnp.sum(x * x, axis=1)[:, None] - 2.0 * cross + jnp.sum(centres**2, axis=1)
    )
