"""MAP, VI and NUTS for the Gaussian mixture, in standardised coordinates.

x_std = S^-1 (x - c) column by column (``models.gaussian_mixture
.standardising_map``); the conjugate prior maps to the prior of the
standardised parameters (``standardise_prior``), so running
``models.gaussian_mixture.model`` on (x_std, prior_std) and mapping every
estimate and draw back (mu = c + S mu_std, Sigma = S Sigma_std S) gives exactly
the posterior of the original model. The log joint in ``sample_stats.lp`` is the
standardised model's: it differs from the original one by a constant.
"""

import jax
import numpy as np

from latentmix.inference.mcmc import SamplingInterrupted, run_nuts
from latentmix.inference.posterior.pointwise import (
    add_log_likelihood,
    gmm_log_likelihood,
)
from latentmix.inference.posterior.sizes import use_dense_mass
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.svi import fit_map, fit_vi
from latentmix.models import gaussian_mixture as gm

__all__ = ["gmm_map", "gmm_nuts", "gmm_vi"]


@follows_input_precision
def gmm_map(x, num_components: int, *, covariance_type: str = "full", prior,
            init: gm.GMMParams, rng_key, num_steps: int = 2000,
            learning_rate: float = 1e-2, final_lr_ratio: float = 1e-3,
            callback=None):
    """AutoDelta MAP of the mixture from ``init``; returns (SVIResult, sites).

    ``sites``: the MAP estimate as the model's sites in the data's units (also
    the SVIResult's ``params``; its guide works in standardised coordinates).
    """
    amap, x_std, prior_std = _standardised(x, num_components, covariance_type, prior)
    start = gm.standardise_sites(_sites(init, covariance_type), amap)
    fit = fit_map(gm.model, x_std, num_components, rng_key=rng_key,
                  num_steps=num_steps, learning_rate=learning_rate,
                  final_lr_ratio=final_lr_ratio, init_params=start,
                  covariance_type=covariance_type, prior=prior_std,
                  callback=callback)
    sites = gm.unstandardise_sites(_numpy(fit.params), amap)
    return fit._replace(params=sites), sites


@follows_input_precision
def gmm_vi(x, num_components: int, *, covariance_type: str = "full", prior,
           init: gm.GMMParams, rng_key, num_steps: int = 1500,
           num_draws: int = 4000, num_particles: int = 1, callback=None):
    """Mean-field VI from ``init``; returns (SVIResult, draws in the data's units).

    ``draws``: site -> (num_draws, ...) draws of the variational posterior. The
    SVIResult's ``params`` (the variational medians) are in the data's units;
    its guide works in standardised coordinates.
    """
    amap, x_std, prior_std = _standardised(x, num_components, covariance_type, prior)
    key_fit, key_draws = jax.random.split(rng_key)
    start = gm.standardise_sites(_sites(init, covariance_type), amap)
    fit = fit_vi(gm.model, x_std, num_components, rng_key=key_fit, guide="normal",
                 num_steps=num_steps, num_particles=num_particles,
                 init_params=start, covariance_type=covariance_type,
                 prior=prior_std, callback=callback)
    draws = fit.guide.sample_posterior(key_draws, fit.guide_params,
                                       sample_shape=(num_draws,))
    medians = gm.unstandardise_sites(_numpy(fit.params), amap)
    return fit._replace(params=medians), gm.unstandardise_sites(_numpy(draws), amap)


@follows_input_precision
def gmm_nuts(x, num_components: int, *, covariance_type: str = "full", prior,
             init, rng_key, num_chains: int = 4, num_warmup: int = 500,
             num_samples: int = 500, dense_mass="auto", callback=None):
    """NUTS started at ``init`` (GMMParams for every chain, or a list of site
    dicts, one per chain, in the data's units); draws in the data's units.

    Returns InferenceData whose posterior holds the model's sites in the
    data's units, whose observed_data is x itself and whose log_likelihood
    holds log p(x_i | theta) per draw and row (``pointwise``, for ``az.loo``).
    ``SamplingInterrupted``
    from the callback carries the draws so far, also in the data's units.
    """
    amap, x_std, prior_std = _standardised(x, num_components, covariance_type, prior)
    if isinstance(init, gm.GMMParams):
        init = [_sites(init, covariance_type)] * num_chains
    starts = [gm.standardise_sites(start, amap) for start in init]
    if dense_mass == "auto":
        dense_mass = use_dense_mass(starts[0])
    try:
        idata = run_nuts(gm.model, x_std, num_components, rng_key=rng_key,
                         num_chains=num_chains, num_warmup=num_warmup,
                         num_samples=num_samples,
                         init_params=starts if num_chains > 1 else starts[0],
                         dense_mass=dense_mass, callback=callback,
                         laplace_mass=True, covariance_type=covariance_type,
                         prior=prior_std)
    except SamplingInterrupted as interrupt:
        interrupt.idata = _to_data_units(interrupt.idata, amap, x, covariance_type)
        raise
    return _to_data_units(idata, amap, x, covariance_type)


def _standardised(x, num_components, covariance_type, prior):
    """(map, x_std, prior_std); prior None means ``default_prior(x, K)``."""
    x = np.asarray(x, dtype=np.float64)
    amap = gm.standardising_map(x, covariance_type)
    x_std = (x - amap.centre) / amap.scale
    prior = gm.default_prior(x, num_components) if prior is None else prior
    return amap, x_std, gm.standardise_prior(prior, amap)


def _sites(params: gm.GMMParams, covariance_type: str) -> dict:
    return _numpy(gm.to_sites(params, covariance_type))


def _numpy(sites: dict) -> dict:
    return {name: np.asarray(value) for name, value in sites.items()}


def _to_data_units(idata, amap, x, covariance_type):
    """The posterior group and observed "x" of ``idata`` in the data's units,
    and the log-likelihood of every row under every draw."""
    if idata is None:
        return None
    import xarray as xr

    draws = {name: idata.posterior[name].values for name in idata.posterior}
    mapped = gm.unstandardise_sites(draws, amap)
    posterior = idata.posterior.copy()
    for name, value in mapped.items():
        posterior[name] = xr.DataArray(value, dims=idata.posterior[name].dims,
                                       coords=idata.posterior[name].coords)
    out = idata.copy()
    out.posterior = posterior
    if "observed_data" in out.groups() and "x" in out.observed_data:
        observed = out.observed_data.copy()
        observed["x"] = xr.DataArray(x, dims=out.observed_data["x"].dims)
        out.observed_data = observed
    draws = {name: out.posterior[name].values for name in out.posterior}
    return add_log_likelihood(out, "x", gmm_log_likelihood(draws, x,
                                                           covariance_type))
