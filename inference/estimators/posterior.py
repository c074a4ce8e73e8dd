"""The estimators' ``sample_posterior``: NUTS, VI or MAP as ArviZ InferenceData.

Each model's scale-free entry points (``inference.posterior``: data
standardised, prior mapped, started at the EM fit, results in the data's units)
make the draws; this module puts NUTS, VI and MAP results into the same
InferenceData layout:

  posterior            the model's sites, (chain, draw, ...); VI's independent
                       draws are laid out as num_chains x num_samples, MAP is
                       one chain of one draw;
  sample_stats         NUTS's (diverging, tree depth, lp); VI and MAP: "lp",
                       the log prior plus log-likelihood of the draw in the
                       coordinates the model samples (data's units);
  observed_data        the data ("x", "counts", "y");
  log_likelihood       log p(row i | draw s) for every draw and row
                       (``inference.posterior.pointwise``), so ``az.loo``,
                       ``az.waic`` and ``az.compare`` work;
  posterior_predictive on request: one replicated data set per draw.

Mixtures are relabelled to the fitted EM solution
(``inference.align.relabel_samples``); the log-likelihood and the replicated
data do not depend on the labels.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from latentmix.inference.align import relabel_samples
from latentmix.inference.crosscheck.multinomial_mixture import em_sites
from latentmix.inference.posterior import (
    gmm_map,
    gmm_nuts,
    gmm_vi,
    multinomial_map,
    multinomial_nuts,
    multinomial_vi,
    regression_map,
    regression_nuts,
    regression_vi,
)
from latentmix.inference.posterior.linear_regression import vi_moments
from latentmix.inference.posterior.multinomial_mixture import with_counts
from latentmix.inference.posterior.pointwise import (
    add_log_likelihood,
    gmm_log_likelihood,
    regression_log_likelihood,
)
from latentmix.models import gaussian_mixture as gm
from latentmix.models import multinomial_mixture as mm

__all__ = [
    "METHODS",
    "gmm_posterior",
    "multinomial_posterior",
    "regression_posterior",
]

METHODS = ("nuts", "vi", "map")


def gmm_posterior(x, params: gm.GMMParams, covariance_type: str, *, method: str,
                  prior, rng_key, num_chains: int, num_warmup: int,
                  num_samples: int, posterior_predictive: bool,
                  num_steps=None) -> az.InferenceData:
    """The Gaussian mixture's posterior on x, relabelled to ``params`` (EM)."""
    _check_method(method)
    num_components = params.weights.shape[0]
    prior = gm.default_prior(x, num_components) if prior is None else prior
    common = {"covariance_type": covariance_type, "prior": prior, "init": params,
              "rng_key": rng_key}
    steps = {} if num_steps is None else {"num_steps": num_steps}
    attrs = {"method": method}
    if method == "nuts":
        idata = gmm_nuts(x, num_components, num_chains=num_chains,
                         num_warmup=num_warmup, num_samples=num_samples, **common)
    else:
        if method == "vi":
            fit, draws = gmm_vi(x, num_components, num_draws=num_chains * num_samples,
                                **common, **steps)
            draws = _as_chains(draws, num_chains, num_samples)
        else:
            fit, sites = gmm_map(x, num_components, **common, **steps)
            draws = _as_chains(sites, 1, 1, single=True)
        attrs.update(_fit_attrs(fit))
        log_lik = gmm_log_likelihood(draws, x, covariance_type)
        log_prior = _over_draws_np(
            lambda sites: gm.log_prior(gm.from_sites(sites), prior, covariance_type),
            draws)
        idata = _inference_data(draws, {"lp": log_prior + log_lik.sum(-1)},
                                {"x": np.asarray(x)}, "x", log_lik)
    idata = relabel_samples(idata, gm.GMMParams(*map(jnp.asarray, params)))[0]
    if posterior_predictive:
        idata = _add_predictive(idata, "x", _gmm_replicates(idata, x.shape[0],
                                                             covariance_type,
                                                             rng_key))
    return _with_attrs(idata, attrs)


def multinomial_posterior(counts, params: mm.MultinomialMixtureParams, *,
                          codes, method: str, prior, rng_key, num_chains: int,
                          num_warmup: int, num_samples: int,
                          posterior_predictive: bool,
                          num_steps=None) -> az.InferenceData:
    """The multinomial mixture's posterior (hierarchical with group ``codes``),
    relabelled to the EM fit ``params``."""
    _check_method(method)
    if codes is not None and method == "map":
        raise ValueError(
            "the hierarchical (grouped) model has no MAP: its group weights' "
            "Dirichlet density is unbounded at the simplex boundary; use "
            "method='nuts' or 'vi'"
        )
    num_components = params.probs.shape[0]
    dense = np.asarray(counts.toarray() if hasattr(counts, "toarray") else counts,
                       dtype=np.float64)
    sites = em_sites(params, codes)
    reference = mm.MultinomialMixtureParams(sites["weights"], sites["probs"])
    common = {"prior": prior, "groups": codes, "rng_key": rng_key}
    steps = {} if num_steps is None else {"num_steps": num_steps}
    attrs = {"method": method}
    if method == "nuts":
        idata = multinomial_nuts(dense, num_components, init=sites,
                                 num_chains=num_chains, num_warmup=num_warmup,
                                 num_samples=num_samples, **common)
    else:
        if method == "vi":
            fit, draws = multinomial_vi(dense, num_components, init=sites,
                                        num_draws=num_chains * num_samples,
                                        **common, **steps)
            draws = _as_chains(draws, num_chains, num_samples)
        else:
            fit = multinomial_map(dense, num_components, init=sites, **common,
                                  **steps)
            draws = _as_chains(fit.params, 1, 1, single=True)
        attrs.update(_fit_attrs(fit))
        idata = with_counts(az.from_dict(posterior=draws), dense, codes)
        log_lik = idata.log_likelihood["counts"].values
        full_prior = mm.MultinomialMixturePrior() if prior is None else prior
        log_prior = _over_draws_np(lambda one: mm.log_prior(
            mm.MultinomialMixtureParams(one["weights"], one["probs"]), full_prior),
            {name: draws[name] for name in ("weights", "probs")})
        idata = _replace_sample_stats(idata, {"lp": log_prior + log_lik.sum(-1)})
    idata = relabel_samples(idata, reference)[0]
    if posterior_predictive:
        idata = _add_predictive(idata, "counts", _multinomial_replicates(
            idata, dense, codes, rng_key))
    return _with_attrs(idata, attrs)


def regression_posterior(design, target, *, observed, prior_precision: float,
                         noise_precision: float, method: str, rng_key,
                         num_chains: int, num_warmup: int, num_samples: int,
                         posterior_predictive: bool, sample_precisions: bool,
                         derived, num_steps=None) -> az.InferenceData:
    """Bayesian linear regression's posterior of the weights.

    ``design`` (n, p) and ``target`` (n,) are what the model sees (the data
    centred, or with a bias column); ``observed`` is the user's y (target plus
    the centring), stored as observed_data and used for the replicates;
    ``derived(w) -> dict`` turns draws of w (..., p) into the sites shown
    (coef, intercept). Precisions fixed at the EM estimate, or sampled under
    their Gamma hyperprior (NUTS only) with ``sample_precisions``. The
    log-likelihood of the centred model equals the uncentred one's, the
    intercept being mean(y) - mean(X) w draw by draw.
    """
    _check_method(method)
    if sample_precisions and method != "nuts":
        raise ValueError("sample_precisions=True needs method='nuts' (MAP and VI "
                         "fix the precisions at the EM estimate)")
    design, y = np.asarray(design, np.float64), np.asarray(target, np.float64)
    observed = np.asarray(observed, np.float64)
    fixed = {"prior_precision": prior_precision, "noise_precision": noise_precision}
    steps = {} if num_steps is None else {"num_steps": num_steps}
    attrs = {"method": method, "precisions": "sampled" if sample_precisions
             else "fixed at the EM estimate"}
    if method == "nuts":
        precisions = ({"init_precisions": (prior_precision, noise_precision)}
                      if sample_precisions else fixed)
        idata = regression_nuts(design, y, rng_key=rng_key, num_chains=num_chains,
                                num_warmup=num_warmup, num_samples=num_samples,
                                **precisions)
        draws = {name: idata.posterior[name].values for name in idata.posterior}
        log_lik = idata.log_likelihood["y"].values
        stats = {name: idata.sample_stats[name].values
                 for name in idata.sample_stats}
    else:
        if method == "vi":
            fit, weights_map = regression_vi(design, y, rng_key=rng_key, **fixed,
                                             **steps)
            mean, cov = vi_moments(fit, weights_map)
            normal = np.random.default_rng(
                np.asarray(jax.random.key_data(rng_key)).ravel())
            w = normal.multivariate_normal(mean, cov, (num_chains, num_samples))
        else:
            fit, w = regression_map(design, y, rng_key=rng_key, **fixed, **steps)
            w = np.asarray(w)[None, None]
        attrs.update(_fit_attrs(fit))
        draws = {"w": w}
        log_lik = regression_log_likelihood(draws, design, y, noise_precision)
        log_prior = (0.5 * w.shape[-1] * np.log(prior_precision / (2 * np.pi))
                     - 0.5 * prior_precision * np.sum(w**2, axis=-1))
        stats = {"lp": log_prior + log_lik.sum(-1)}
    shown = derived(np.asarray(draws["w"]))
    shown.update({name: value for name, value in draws.items() if name != "w"})
    idata = _inference_data(shown, stats, {"y": observed}, "y", log_lik)
    if posterior_predictive:
        beta = draws.get("noise_precision", np.full(log_lik.shape[:2],
                                                    noise_precision))
        means = np.asarray(draws["w"]) @ design.T
        normal = np.random.default_rng(
            np.asarray(jax.random.key_data(jax.random.fold_in(rng_key, 7))).ravel())
        replicates = (means + (observed - y) + normal.standard_normal(means.shape)
                      / np.sqrt(np.asarray(beta))[..., None])
        idata = _add_predictive(idata, "y", replicates)
    return _with_attrs(idata, attrs)


# ------------------------------------------------------------------ helpers


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _fit_attrs(fit) -> dict:
    return {"converged": int(bool(fit.converged)), "criterion": float(fit.criterion),
            "criterion_note": fit.note, "final_loss": float(np.asarray(fit.losses)[-1])}


def _as_chains(draws: dict, num_chains: int, num_samples: int,
               single: bool = False) -> dict:
    """{site: (num_chains, num_samples, ...)} from (num_draws, ...) draws (or
    from one point estimate with ``single``)."""
    out = {}
    for name, value in draws.items():
        value = np.asarray(value)
        if single:
            out[name] = value[None, None]
        else:
            out[name] = value.reshape((num_chains, num_samples) + value.shape[1:])
    return out


def _over_draws_np(fn, draws: dict) -> np.ndarray:
    """fn(one draw's sites) -> scalar, for every (chain, draw), compiled once."""
    arrays = {name: jnp.asarray(value) for name, value in draws.items()}
    first = next(iter(arrays.values()))
    flat = {name: value.reshape((-1,) + value.shape[2:])
            for name, value in arrays.items()}
    values = jax.jit(jax.vmap(fn))(flat)
    return np.asarray(values).reshape(first.shape[:2])


def _inference_data(posterior: dict, sample_stats: dict, observed: dict,
                    name: str, log_lik) -> az.InferenceData:
    idata = az.from_dict(posterior={k: np.asarray(v) for k, v in posterior.items()},
                         sample_stats={k: np.asarray(v)
                                       for k, v in sample_stats.items()},
                         observed_data={k: np.asarray(v) for k, v in observed.items()})
    return add_log_likelihood(idata, name, log_lik)


def _replace_sample_stats(idata, stats: dict) -> az.InferenceData:
    out = idata.copy()
    coords = {"chain": idata.posterior["chain"].values,
              "draw": idata.posterior["draw"].values}
    dataset = xr.Dataset({name: xr.DataArray(np.asarray(value),
                                             dims=("chain", "draw"), coords=coords)
                          for name, value in stats.items()})
    if "sample_stats" in out.groups():
        del out.sample_stats
    out.add_groups({"sample_stats": dataset})
    return out


def _add_predictive(idata, name: str, values) -> az.InferenceData:
    values = np.asarray(values)
    coords = {"chain": idata.posterior["chain"].values,
              "draw": idata.posterior["draw"].values}
    dims = ("chain", "draw") + tuple(f"{name}_dim_{i}"
                                     for i in range(values.ndim - 2))
    out = idata.copy()
    if "posterior_predictive" in out.groups():
        del out.posterior_predictive
    out.add_groups({"posterior_predictive": xr.Dataset(
        {name: xr.DataArray(values, dims=dims, coords=coords)})})
    return out


def _with_attrs(idata, attrs: dict) -> az.InferenceData:
    idata.posterior.attrs.update(attrs)
    return idata


def _gmm_replicates(idata, num_rows: int, covariance_type: str, rng_key):
    """One data set of num_rows rows per draw: z ~ Cat(w), x ~ N(mu_z, S_z)."""
    sites = {name: idata.posterior[name].values for name in idata.posterior
             if name in ("weights", "means", "covariances", "covariance",
                         "variances")}
    params = gm.from_sites(sites)
    shape = params.weights.shape[:2]
    flat = gm.GMMParams(*(leaf.reshape((-1,) + leaf.shape[2:]) for leaf in params))
    keys = jax.random.split(jax.random.fold_in(rng_key, 7), shape[0] * shape[1])

    def one(key, weights, means, covariances):
        key_z, key_x = jax.random.split(key)
        labels = jax.random.categorical(key_z, jnp.log(weights), shape=(num_rows,))
        chol = jnp.linalg.cholesky(covariances)[labels]
        noise = jax.random.normal(key_x, (num_rows, means.shape[-1]),
                                  dtype=means.dtype)
        return means[labels] + jnp.einsum("nij,nj->ni", chol, noise)

    values = jax.jit(jax.vmap(one))(keys, *flat)
    return np.asarray(values).reshape(shape + (num_rows, -1))


def _multinomial_replicates(idata, counts, codes, rng_key):
    """One basket table per draw, with the observed row totals."""
    import numpyro.distributions as dist

    grouped = codes is not None
    name = "group_weights" if grouped else "weights"
    weights = idata.posterior[name].values
    probs = idata.posterior["probs"].values
    shape = probs.shape[:2]
    weights = weights.reshape((-1,) + weights.shape[2:])
    probs = probs.reshape((-1,) + probs.shape[2:])
    totals = jnp.asarray(counts.sum(axis=1))
    rows = None if not grouped else jnp.asarray(codes)
    keys = jax.random.split(jax.random.fold_in(rng_key, 7), weights.shape[0])

    def one(key, weights, probs):
        key_z, key_x = jax.random.split(key)
        row_weights = weights if rows is None else weights[rows]
        labels = jax.random.categorical(key_z, jnp.log(row_weights),
                                        shape=(counts.shape[0],))
        return dist.Multinomial(total_count=totals, probs=probs[labels]).sample(key_x)

    values = jax.jit(jax.vmap(one))(keys, jnp.asarray(weights), jnp.asarray(probs))
    return np.asarray(values).reshape(shape + counts.shape)
