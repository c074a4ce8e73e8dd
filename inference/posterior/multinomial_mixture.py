"""MAP, VI and NUTS for the multinomial mixture (counts have no units: no map).

The same entry points as the other models, so that callers treat every model
alike: each starts at the EM estimate's sites and densifies sparse counts (the
NumPyro model needs them dense).
"""

import jax
import numpy as np
import scipy.sparse

from latentmix.inference.mcmc import SamplingInterrupted, run_nuts
from latentmix.inference.posterior.pointwise import (
    add_log_likelihood,
    multinomial_log_likelihood,
)
from latentmix.inference.posterior.sizes import use_dense_mass
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.svi import fit_map, fit_vi
from latentmix.models import multinomial_mixture as mm

__all__ = ["multinomial_map", "multinomial_nuts", "multinomial_vi", "with_counts"]


@follows_input_precision
def multinomial_map(counts, num_components: int, *, init: dict, rng_key,
                    prior=None, groups=None, num_steps: int = 3000, callback=None):
    """AutoDelta MAP from the sites ``init``; returns the SVIResult."""
    return fit_map(mm.model, _dense(counts), num_components, rng_key=rng_key,
                   num_steps=num_steps, init_params=init, callback=callback,
                   **_options(prior, groups))


@follows_input_precision
def multinomial_vi(counts, num_components: int, *, init: dict, rng_key, prior=None,
                   groups=None, num_steps: int = 1500, num_draws: int = 4000,
                   callback=None):
    """Mean-field VI from ``init``; returns (SVIResult, draws site -> array)."""
    key_fit, key_draws = jax.random.split(rng_key)
    fit = fit_vi(mm.model, _dense(counts), num_components, rng_key=key_fit,
                 guide="normal", num_steps=num_steps, init_params=init,
                 callback=callback, **_options(prior, groups))
    draws = fit.guide.sample_posterior(key_draws, fit.guide_params,
                                       sample_shape=(num_draws,))
    return fit, {name: np.asarray(value) for name, value in draws.items()}


@follows_input_precision
def multinomial_nuts(counts, num_components: int, *, init, rng_key, prior=None,
                     groups=None, num_chains: int = 4, num_warmup: int = 500,
                     num_samples: int = 500, dense_mass="auto", callback=None):
    """NUTS from ``init`` (a site dict, or a list of them, one per chain).

    Returns InferenceData with the posterior, sample_stats, observed_data
    "counts" (dense; with ``groups`` also constant_data "groups", the codes)
    and log_likelihood "counts": log p(x_i | theta) per draw and row,
    coefficient included (``pointwise``, for ``az.loo``).
    """
    starts = init if isinstance(init, list | tuple) else [init] * num_chains
    if dense_mass == "auto":
        dense_mass = use_dense_mass(starts[0])
    dense = _dense(counts)
    try:
        idata = run_nuts(mm.model, dense, num_components, rng_key=rng_key,
                         num_chains=num_chains, num_warmup=num_warmup,
                         num_samples=num_samples,
                         init_params=list(starts) if num_chains > 1 else starts[0],
                         dense_mass=dense_mass, callback=callback,
                         **_options(prior, groups))
    except SamplingInterrupted as interrupt:
        interrupt.idata = with_counts(interrupt.idata, dense, groups)
        raise
    return with_counts(idata, dense, groups)


def with_counts(idata, counts, groups=None):
    """``idata`` with observed_data "counts" (and constant_data "groups") and
    the log_likelihood of every row under every draw (None stays None)."""
    if idata is None:
        return None
    import xarray as xr

    out = idata.copy()
    observed = xr.Dataset({"counts": xr.DataArray(
        np.asarray(counts), dims=("counts_dim_0", "counts_dim_1"))})
    if "observed_data" in out.groups():
        del out.observed_data
    groups_to_add = {"observed_data": observed}
    if groups is not None:
        groups_to_add["constant_data"] = xr.Dataset({"groups": xr.DataArray(
            np.asarray(groups), dims=("counts_dim_0",))})
        if "constant_data" in out.groups():
            del out.constant_data
    out.add_groups(groups_to_add)
    draws = {name: out.posterior[name].values for name in out.posterior}
    return add_log_likelihood(out, "counts",
                              multinomial_log_likelihood(draws, counts, groups))


def _dense(counts):
    dense = counts.toarray() if scipy.sparse.issparse(counts) else np.asarray(counts)
    return dense.astype(np.float64)


def _options(prior, groups) -> dict:
    options = {"prior": prior}
    if groups is not None:
        options["groups"] = groups
    return options
