"""Starting parameters of an EM restart: centres, then one M-step.

"kmeans": scikit-learn's default start, k-means run to convergence: greedy
k-means++ seeding (2 + ln k candidate rows per centre, the one that lowers the
k-means potential most kept, as scikit-learn's ``KMeans``) and Lloyd's
iterations until no row changes cluster, the centres move by less than
``LLOYD_TOL`` times the mean feature variance (squared shift, summed), or
``LLOYD_MAX_ITERS``; "kmeans++": plain k-means++ seeding (Arthur &
Vassilvitskii 2007) refined by ``_LLOYD_STEPS`` Lloyd iterations;
"random_from_data": k distinct real rows drawn uniformly. Either way the start
is the M-step (``steps.m_step``) from the hard assignments of the rows to the
nearest centre, so it honours ``reg_covar`` and the prior like every later
iteration. Everything runs in JAX, inside the jitted
cores (under ``vmap`` over restarts).

Padding (``steps`` module docstring): padding rows (weight 0) are never drawn,
and the draws of a one-program K sweep do not depend on how many padding
components follow: k-means++ draws centre j from ``fold_in(key, j)``, and the
Gumbel top-k draw of "random_from_data" gives the same first K rows however
many it draws.
"""

import math

import jax
import jax.numpy as jnp

from latentmix.inference.em.gaussian_mixture.steps import m_step

__all__ = ["INIT_METHODS", "initial_params"]

INIT_METHODS = ("kmeans", "kmeans++", "random_from_data")

# Lloyd iterations after plain k-means++ seeding ("kmeans++"): enough to move
# seeds to cluster centres, a small cost next to EM.
_LLOYD_STEPS = 10

# "kmeans": scikit-learn's KMeans defaults (tol, max_iter).
LLOYD_TOL = 1e-4
LLOYD_MAX_ITERS = 300

_HIGHEST = jax.lax.Precision.HIGHEST


def initial_params(rng_key, x, row_weights, active, num_components,
                   covariance_type, init_method, reg_covar, prior):
    """Initial GMMParams: centres, then one M-step from hard assignments to them.

    ``init_method``: one of ``INIT_METHODS``; ``active`` (k,) marks the
    components that are not padding.
    """
    num_active = jnp.sum(active)
    if init_method == "kmeans":
        centres = _kmeans_plus_plus(rng_key, x, row_weights, num_components,
                                    num_active, greedy=True)
        centres = _lloyd_to_convergence(x, row_weights, centres, active)
    elif init_method == "kmeans++":
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


def _kmeans_plus_plus(rng_key, x, row_weights, num_components: int, num_active,
                      greedy: bool = False):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): D^2-weighted draws.

    Row i is drawn with probability proportional to min_j ||x_i - c_j||^2 over
    the centres drawn so far. ``greedy``: 2 + floor(ln k) candidate rows are
    drawn per centre and the one that leaves the smallest potential
    sum_i v_i min_j ||x_i - c_j||^2 is kept (scikit-learn's ``KMeans``).
    Padding rows (weight 0, stored after the real rows) are never drawn. Only
    the first ``num_active`` centres are drawn (the rest stay 0, for the
    padding components of a one-program sweep); centre j uses the key
    ``fold_in(key, j)``, so the first K centres do not depend on how many
    padding components follow.
    """
    num_real = jnp.sum(row_weights > 0)
    key_first, key_rest = jax.random.split(rng_key)
    first = x[jax.random.randint(key_first, (), 0, num_real)]
    centres = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(first)
    min_sq = jnp.sum((x - first) ** 2, axis=1)
    drawable = row_weights > 0

    trials = 2 + int(math.log(num_components))

    def add_centre(j, carry):
        centres, min_sq = carry
        logits = jnp.where(
            drawable & (min_sq > 0), jnp.log(jnp.maximum(min_sq, 1e-300)), -jnp.inf
        )
        key = jax.random.fold_in(key_rest, j)
        if greedy:
            indices = jax.random.categorical(key, logits, shape=(trials,))
            # (trials, n): the squared distances each candidate would leave.
            candidate_sq = jnp.minimum(min_sq, jnp.stack(
                [jnp.sum((x - x[indices[t]]) ** 2, axis=1) for t in range(trials)]))
            best = jnp.argmin(jnp.sum(candidate_sq * row_weights, axis=1))
            centre, nearest_sq = x[indices[best]], candidate_sq[best]
        else:
            centre = x[jax.random.categorical(key, logits)]
            nearest_sq = jnp.minimum(min_sq, jnp.sum((x - centre) ** 2, axis=1))
        drawn = j < num_active
        min_sq = jnp.where(drawn, nearest_sq, min_sq)
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


def _lloyd_to_convergence(x, row_weights, centres, active):
    """Lloyd's iterations until k-means converges (scikit-learn's criteria).

    Stops when no row changes its nearest centre, when sum_j ||c_j' - c_j||^2 <=
    ``LLOYD_TOL`` x the mean per-feature variance of the rows, or after
    ``LLOYD_MAX_ITERS`` iterations (a lax.while_loop: under vmap over restarts
    it runs until the last restart stops; a stopped restart stays put).
    """
    num_components = centres.shape[0]
    total = jnp.sum(row_weights)
    mean = jnp.matmul(row_weights, x, precision=_HIGHEST) / total
    variance = jnp.matmul(row_weights, (x - mean) ** 2, precision=_HIGHEST) / total
    tolerance = LLOYD_TOL * jnp.mean(variance)

    def update(centres):
        labels = _nearest(x, centres, active).astype(jnp.int32)
        onehot = jax.nn.one_hot(labels, num_components, dtype=x.dtype)
        onehot = onehot * row_weights[:, None]
        counts = jnp.sum(onehot, axis=0)
        sums = jnp.matmul(onehot.T, x, precision=_HIGHEST)
        moved = jnp.where(counts[:, None] > 0,
                          sums / jnp.maximum(counts, 1.0)[:, None], centres)
        return moved, labels

    def going(carry):
        _, _, iteration, done = carry
        return (iteration < LLOYD_MAX_ITERS) & ~done

    def step(carry):
        centres, labels, iteration, _ = carry
        moved, new_labels = update(centres)
        shift = jnp.sum((moved - centres) ** 2)
        done = jnp.all(new_labels == labels) | (shift <= tolerance)
        return moved, new_labels, iteration + 1, done

    labels = jnp.full((x.shape[0],), -1, jnp.int32)
    carry = (centres, labels, jnp.zeros((), jnp.int32), jnp.asarray(False))
    return jax.lax.while_loop(going, step, carry)[0]


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
