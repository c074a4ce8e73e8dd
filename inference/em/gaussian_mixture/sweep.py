"""A whole K sweep of Gaussian-mixture EM compiled as one program.

Fitting K = 1..20 with ``fit_gaussian_mixture`` compiles 20 programs (every K is
a new shape), which on small and medium data costs more than the fits. Here
every fit has K_max = max(K) components, of which the last K_max - K are
*padding*: weight exactly 0, so log weight -inf, responsibility exactly 0, and
no contribution to any statistic, objective, reseeding or start (``steps`` and
``starts`` carry the ``active`` mask). A fit with padding is therefore the
K-component fit, summed in another order: the same starts (k-means++ draws
centre j from ``fold_in(key, j)`` and the Gumbel top-k draw of
"random_from_data" does not depend on how many rows it draws), the same
iterations, the same result up to rounding.

``lax.map`` runs the K values one after the other inside the program
(``run_sweep``; memory holds one K's restarts, n x K_max responsibilities each);
restarts run under ``vmap`` as usual (``restarts.run_restart``). The price is
the padding's arithmetic: a K fit costs what a K_max fit costs, about twice the
work of separate fits over K = 1..K_max, paid back by compiling once
(``scripts/benchmark.py scale`` measures both).

Keys: the same as ``inference.selection.select_num_components``: rng_key is split
into one key per K, and that key into one per restart.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from latentmix.data.validation import check_int
from latentmix.inference.compiler import em_jit
from latentmix.inference.em.driver import EMResult, collect_restarts
from latentmix.inference.em.gaussian_mixture.checks import (
    check_data,
    check_init,
    check_options,
)
from latentmix.inference.em.gaussian_mixture.restarts import (
    run_restart,
    shared_problem,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.sharding import check_devices, place_rows
from latentmix.inference.threads import blas_on_one_thread

__all__ = ["fit_gaussian_mixture_sweep", "run_sweep"]


@follows_input_precision
@blas_on_one_thread()
def fit_gaussian_mixture_sweep(
    x,
    num_components_list,
    *,
    covariance_type: str = "full",
    init: str = "kmeans++",
    num_restarts: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    rtol: float = 0.0,
    reg_covar: float = 1e-6,
    rng_key,
    devices=None,
) -> list[EMResult]:
    """Maximum-likelihood EM for every K of ``num_components_list``, one program.

    Equivalent to ``[fit_gaussian_mixture(x, k, rng_key=key_k, ...) for k, key_k
    in zip(num_components_list, jax.random.split(rng_key, len(...)))]`` (same
    starts, same stopping rule, results equal up to rounding), compiled once.
    Arguments as ``fit_gaussian_mixture``; ``init`` is "kmeans++" or
    "random_from_data" (explicit starts have a fixed K: fit them one by one).
    MAP-EM (a prior) is not offered here: the prior's normalising constants
    depend on K, so padding would change the objective.

    Returns:
      One EMResult per K, in the order given: the best finite restart, with
      (K,) / (K, d) / (K, d, d) parameters. A K whose restarts all failed gives
      an EMResult with a non-finite ``log_likelihood``.
    """
    num_components_list = [
        check_int("num_components_list entries", k, minimum=1)
        for k in num_components_list
    ]
    if not num_components_list:
        raise ValueError("num_components_list is empty; give at least one K")
    max_components = max(num_components_list)
    options = check_options(max_components, covariance_type, num_restarts,
                            max_iters, tol, reg_covar, rtol)
    if not isinstance(init, str):
        raise ValueError(
            f"init must be 'kmeans++' or 'random_from_data' in a sweep, got "
            f"{type(init).__name__}; fit explicit starts with fit_gaussian_mixture"
        )
    x, _ = check_data(x, max_components, covariance_type, reg_covar, None)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    if rng_key is None:
        raise ValueError("rng_key is required; pass e.g. rng_key=jax.random.key(0)")
    per_k_keys = jax.random.split(rng_key, len(num_components_list))
    starts = [
        check_init(init, key, x.shape[1], covariance_type, options.num_restarts,
                   dtype)
        for key in per_k_keys
    ]
    init_method = starts[0][0]
    keys = jnp.stack([keys for _, _, keys in starts])
    ks = jnp.asarray(num_components_list, jnp.int32)
    x, row_weights, (keys, ks) = place_rows(x, check_devices(devices), (keys, ks))
    results, num_reseeds, failed = run_sweep(
        x, row_weights, keys, ks, jnp.asarray(tol, dtype), jnp.asarray(rtol, dtype),
        jnp.asarray(reg_covar, dtype), max_components=max_components,
        covariance_type=covariance_type, init_method=init_method,
        max_iters=options.max_iters,
    )
    fits = []
    for index, k in enumerate(num_components_list):
        restarts = collect_restarts(
            jax.tree_util.tree_map(lambda a, i=index: a[i], results),
            np.asarray(num_reseeds)[index],
            np.asarray(failed)[index],
        )
        best = max(restarts.best_index, 0)
        result = jax.tree_util.tree_map(lambda a, b=best: a[b], restarts.results)
        fits.append(result._replace(params=_trim(result.params, k)))
    return fits


@partial(
    em_jit,
    static_argnames=("max_components", "covariance_type", "init_method", "max_iters"),
)
def run_sweep(x, row_weights, keys, num_components, tol, rtol, reg_covar, *,
              max_components, covariance_type, init_method, max_iters):
    """keys (J, R), num_components (J,): every restart of every K, padded.

    Returns (EMResult, num_reseeds, failed) with leading (J, R) axes.
    """
    problem = shared_problem(x, row_weights, reg_covar, None, covariance_type,
                             max_components)

    def one_k(args):
        restart_keys, k = args
        active = jnp.arange(max_components) < k

        def one_restart(key):
            return run_restart(
                problem, key, None, active, tol, rtol, reg_covar,
                num_components=max_components, covariance_type=covariance_type,
                init_method=init_method, max_iters=max_iters,
            )

        return jax.vmap(one_restart)(restart_keys)

    return jax.lax.map(one_k, (keys, num_components))


def _trim(params, num_components: int):
    """Drop the padding components (the last ones) of one fit."""
    return params._replace(
        weights=params.weights[:num_components],
        means=params.means[:num_components],
        covariances=params.covariances[:num_components],
    )
