"""The log-likelihood of every row under every posterior draw, for ArviZ.

``az.loo``, ``az.waic`` and ``az.compare`` read an InferenceData group
``log_likelihood`` holding log p(y_i | theta_s) for every draw s and row i, with
dimensions (chain, draw, row). The functions here compute it from draws in the
data's units (so the values are densities of the user's data, whatever
coordinates the sampler ran in) and add it to an InferenceData:

  GMM          log p(x_i | theta) = logsumexp_k [log w_k + log N(x_i | mu_k, S_k)]
               (``models.gaussian_mixture.log_likelihood``);
  multinomial  log p(x_i | theta) = logsumexp_k [log w_{g_i k} + log Mult(x_i |
               n_i, p_k)], coefficient included (``models.multinomial_mixture
               .component_log_prob``), w_{g_i} the row's group weights in the
               hierarchical model;
  regression   log N(y_i | x_i^T w, 1 / beta).

Draws are evaluated in compiled batches (``lax.map`` over draws), so memory is
bounded by one batch of draws times the rows, plus the (chain, draw, n) result.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from latentmix.models import gaussian_mixture as gm
from latentmix.models import multinomial_mixture as mm

__all__ = [
    "LOG_LIKELIHOOD_BATCH",
    "add_log_likelihood",
    "gmm_log_likelihood",
    "multinomial_log_likelihood",
    "regression_log_likelihood",
]

# Draws evaluated together in one compiled batch (memory: batch x n x k values).
LOG_LIKELIHOOD_BATCH = 64


def gmm_log_likelihood(draws: dict, x, covariance_type: str) -> np.ndarray:
    """(chain, draw, n) log p(x_i | theta) for draws of ``gm.model``'s sites."""
    x = jnp.asarray(x)
    names = [name for name in ("weights", "means", "covariances", "covariance",
                               "variances") if name in draws]

    def one(sites):
        return gm.log_likelihood(gm.from_sites(sites), x, covariance_type)

    return _over_draws(one, {name: draws[name] for name in names})


def multinomial_log_likelihood(draws: dict, counts, groups=None) -> np.ndarray:
    """(chain, draw, n) log p(x_i | theta) for draws of ``mm.model``'s sites.

    ``groups``: integer codes of the rows (hierarchical model: the draws hold
    "group_weights" (g, k)); None for the global model ("weights").
    """
    counts = jnp.asarray(np.asarray(counts, dtype=np.float64))
    grouped = groups is not None
    codes = None if not grouped else jnp.asarray(np.asarray(groups), jnp.int32)
    name = "group_weights" if grouped else "weights"

    def one(sites):
        log_weights = jnp.log(sites[name])
        if grouped:
            log_weights = log_weights[codes]
        joint = log_weights + mm.component_log_prob(sites["probs"], counts)
        return jax.nn.logsumexp(joint, axis=-1)

    return _over_draws(one, {name: draws[name], "probs": draws["probs"]})


def regression_log_likelihood(draws: dict, X, y, noise_precision=None) -> np.ndarray:
    """(chain, draw, n) log N(y_i | x_i^T w, 1 / beta) for draws of "w".

    beta: the draws' "noise_precision" when sampled, else ``noise_precision``.
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    sites = {"w": draws["w"]}
    if "noise_precision" in draws:
        sites["noise_precision"] = draws["noise_precision"]
    elif noise_precision is None:
        raise ValueError("noise_precision is needed when the draws do not hold it")

    def one(sites):
        beta = sites.get("noise_precision", noise_precision)
        residual = y - X @ sites["w"]
        return 0.5 * (jnp.log(beta) - jnp.log(2.0 * jnp.pi)) - 0.5 * beta * residual**2

    return _over_draws(one, sites)


def add_log_likelihood(idata: az.InferenceData, name: str,
                       values: np.ndarray) -> az.InferenceData:
    """``idata`` with a ``log_likelihood`` group holding ``name`` (chain, draw, n).

    The row dimension is called ``{name}_dim_0``, as ArviZ names the first axis
    of the observed variable of the same name.
    """
    values = np.asarray(values)
    posterior = idata.posterior
    coords = {"chain": posterior["chain"].values, "draw": posterior["draw"].values}
    dataset = xr.Dataset(
        {name: xr.DataArray(values, dims=("chain", "draw", f"{name}_dim_0"),
                            coords=coords)})
    out = idata.copy()
    if "log_likelihood" in out.groups():
        del out.log_likelihood
    out.add_groups({"log_likelihood": dataset})
    return out


def _over_draws(fn, draws: dict) -> np.ndarray:
    """Apply ``fn(one draw's sites) -> (n,)`` to every (chain, draw); (c, s, n)."""
    arrays = {name: np.asarray(value) for name, value in draws.items()}
    first = next(iter(arrays.values()))
    num_chains, num_draws = first.shape[:2]
    total = num_chains * num_draws
    flat = {name: value.reshape((total,) + value.shape[2:])
            for name, value in arrays.items()}
    batch = min(LOG_LIKELIHOOD_BATCH, total)
    padding = -total % batch
    if padding:
        flat = {name: np.concatenate([value, np.repeat(value[-1:], padding, 0)])
                for name, value in flat.items()}
    batched = {name: value.reshape((-1, batch) + value.shape[1:])
               for name, value in flat.items()}
    values = _map_batches(fn, batched)
    values = np.asarray(values).reshape((total + padding, -1))[:total]
    return values.reshape(num_chains, num_draws, -1)


def _map_batches(fn, batched):
    """lax.map over batches of vmap over draws, compiled once per call."""
    return jax.jit(lambda tree: jax.lax.map(jax.vmap(fn), tree))(batched)
