"""MAP, VI and NUTS for the multinomial mixture (counts have no units: no map).

The same entry points as the other models, so that callers treat every model
alike: each starts at the EM estimate's sites and densifies sparse counts (the
NumPyro model needs them dense).
"""

import jax
import numpy as np
import scipy.sparse

from latentmix.inference.mcmc import run_nuts
from latentmix.inference.posterior.sizes import use_dense_mass
from latentmix.inference.precision import follows_input_precision
from latentmix.inference.svi import fit_map, fit_vi
from latentmix.models import multinomial_mixture as mm

__all__ = ["multinomial_map", "multinomial_nuts", "multinomial_vi"]


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
    """NUTS from ``init`` (a site dict, or a list of them, one per chain)."""
    starts = init if isinstance(init, list | tuple) else [init] * num_chains
    if dense_mass == "auto":
        dense_mass = use_dense_mass(starts[0])
    return run_nuts(mm.model, _dense(counts), num_components, rng_key=rng_key,
                    num_chains=num_chains, num_warmup=num_warmup,
                    num_samples=num_samples,
                    init_params=list(starts) if num_chains > 1 else starts[0],
                    dense_mass=dense_mass, callback=callback,
                    **_options(prior, groups))


def _dense(counts):
    dense = counts.toarray() if scipy.sparse.issparse(counts) else np.asarray(counts)
    return dense.astype(np.float64)


def _options(prior, groups) -> dict:
    options = {"prior": prior}
    if groups is not None:
        options["groups"] = groups
    return options
