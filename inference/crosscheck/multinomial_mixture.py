"""The multinomial mixture fitted by EM, MAP, VI and NUTS, and checked.

  EM    its per-row log-likelihood against scipy's multinomial logpmf (the
        independent reference of the density, coefficient included), and its
        trace (never decreases);
  MAP   NumPyro's AutoDelta on ``models.multinomial_mixture.model`` against
        MAP-EM with the same Dirichlet prior (with the default flat prior both
        are the maximum-likelihood estimate), in posterior sds;
  NUTS  relabelled against the EM fit: R-hat, ESS, divergences, the EM
        estimate inside every 94% HDI (``crosscheck.mixtures``);
  VI    mean-field means vs the NUTS means.

With ``groups`` the Bayesian methods sample the hierarchical model (group
weights ~ Dirichlet(concentration x weights)) while EM fits free per-group
weights (no pooling): the component profiles ``probs`` are shared by both and
are what the HDI check compares; the hierarchical model has no MAP (its group
weights' density is unbounded at the simplex boundary), so "map" is refused.
"""

import jax
import numpy as np
import scipy.sparse
from scipy.special import logsumexp
from scipy.stats import multinomial

from latentmix.inference.crosscheck.mixtures import (
    nuts_rows,
    permuted_starts,
    relabelled_nuts,
    vi_rows,
)
from latentmix.inference.crosscheck.table import (
    CrossCheck,
    check_methods,
    check_row,
    make_table,
    timed_step,
)
from latentmix.inference.em import fit_multinomial_mixture
from latentmix.inference.posterior.multinomial_mixture import (
    multinomial_map,
    multinomial_nuts,
    multinomial_vi,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.models import multinomial_mixture as mm

__all__ = [
    "METHODS",
    "check_against_scipy",
    "check_monotone",
    "crosscheck_multinomial_mixture",
    "em_sites",
]

METHODS = ("map", "vi", "nuts")
# Two float64 evaluations of the same log-density (ours by logsumexp of a matrix
# product, scipy's by gammaln per component): a few ulp of ~100 nats.
SCIPY_ATOL = 1e-9
SCIPY_ROWS = 500
# EM never decreases its objective; float64 rounding of one evaluation is
# ~1e-13 nats per basket, a real decrease is far larger.
MONOTONE_ATOL = 1e-10
MAP_TOL_SD = 1e-3  # optimiser precision, in posterior sds (gaussian_mixture)


@follows_input_precision
def crosscheck_multinomial_mixture(
    counts,
    num_components: int,
    *,
    groups=None,
    rng_key,
    methods=METHODS,
    num_restarts: int = 10,
    max_iters: int = 20_000,
    tol: float = 1e-12,
    prior=None,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    map_steps: int = 3000,
    vi_steps: int = 1500,
    vi_draws: int = 4000,
    label_switching: bool = False,
    progress_fn=None,
    callback=None,
    em_fn=None,
) -> CrossCheck:
    """Fit a mixture of multinomials by EM, then by ``methods``, and compare.

    Args:
      counts: (n, c) counts (dense or scipy.sparse); the Bayesian methods use
        them dense.
      num_components: K.
      groups: optional (n,) group labels (households): EM fits per-group
        weights, NUTS and VI the hierarchical model.
      rng_key: JAX PRNG key, split into em, map, vi, nuts.
      methods: any of "map", "vi", "nuts" ("map" not with groups).
      num_restarts, max_iters, tol: EM settings (tight by default: the EM
        estimate is the reference of the Bayesian methods).
      prior: MultinomialMixturePrior of MAP-EM and of the NumPyro model; None
        for flat Dirichlets (then MAP = maximum likelihood).
      num_chains, num_warmup, num_samples, map_steps, vi_steps, vi_draws: sizes.
      label_switching: start NUTS chains in rolled labellings of the EM fit (and
        check that the raw draws switch).
      progress_fn: optional callable receiving one line per step.
      em_fn: optional callable receiving the EM result as soon as it exists
        (e.g. to write it before the slower methods run).
      callback: passed to the chunked samplers and optimisers (progress within
        a step, interrupts; ``inference.mcmc.run_nuts``).

    Returns:
      ``CrossCheck``; ``fits`` holds "em", "map", "vi", "vi_draws", "nuts" (raw
      draws) as run, and "seconds"; ``idata`` the relabelled NUTS draws.
    """
    check_methods(methods, METHODS, num_chains, num_samples)
    if groups is not None and "map" in methods:
        raise ValueError(
            "the hierarchical (grouped) model has no MAP: its group weights' "
            "Dirichlet density is unbounded at the simplex boundary; use "
            "methods=('vi', 'nuts') with groups"
        )
    keys = dict(zip(("em", "map", "vi", "nuts"), jax.random.split(rng_key, 4),
                    strict=True))
    seconds: dict = {}
    fits = {"seconds": seconds}
    codes = None if groups is None else mm.encode_groups(groups)[0]
    with timed_step("EM with restarts", progress_fn, seconds):
        em = fit_multinomial_mixture(counts, num_components, groups=groups,
                                     num_restarts=num_restarts, tol=tol,
                                     max_iters=max_iters, prior=prior,
                                     rng_key=keys["em"])
    fits["em"] = em
    if em_fn is not None:
        em_fn(em)
    rows = [check_against_scipy(em.params, counts, codes), check_monotone(em)]
    sites = em_sites(em.params, codes)
    reference = mm.MultinomialMixtureParams(sites["weights"], sites["probs"])
    common = {"prior": prior, "groups": codes, "callback": callback}
    if "map" in methods:
        with timed_step("AutoDelta MAP", progress_fn, seconds):
            fits["map"] = multinomial_map(counts, num_components, init=sites,
                                          rng_key=keys["map"], num_steps=map_steps,
                                          **common)
    idata = None
    if "nuts" in methods:
        with timed_step("NUTS", progress_fn, seconds):
            fits["nuts"] = multinomial_nuts(
                counts, num_components,
                init=permuted_starts(sites, num_chains, label_switching),
                rng_key=keys["nuts"], num_chains=num_chains, num_warmup=num_warmup,
                num_samples=num_samples, **common)
            idata = relabelled_nuts(fits["nuts"], reference)
    if "vi" in methods:
        with timed_step("VI (mean-field)", progress_fn, seconds):
            fits["vi"], fits["vi_draws"] = multinomial_vi(
                counts, num_components, init=sites, rng_key=keys["vi"],
                num_steps=vi_steps, num_draws=vi_draws, **common)
    if "map" in methods:
        rows.append(_check_map(fits, idata, sites))
    # Grouped: EM's free group weights (no pooling) are not the hierarchical
    # model's, so only the shared profiles are held against the HDIs.
    compared = ("probs",) if codes is not None else ("weights", "probs")
    sampled = {name: value for name, value in sites.items()
               if name != "concentration"}
    if idata is not None:
        rows += nuts_rows(sampled, fits["nuts"], idata,
                          label_switching=label_switching, hdi_sites=compared)
        if "vi_draws" in fits:
            rows += vi_rows(fits["vi_draws"], idata, list(compared))
    return CrossCheck(make_table(rows), fits, idata)


def em_sites(params, codes) -> dict:
    """The EM estimate as the NumPyro model's sites (``codes``: the group code
    of every row, None for the global model).

    Grouped: the population weights are the mean of the group weights, and the
    concentration s of group_weights ~ Dirichlet(s w) is the moment estimate
    Var(g_k) = w_k (1 - w_k) / (s + 1), averaged over k and kept in [1, 1000]
    (EM's free group weights are over-dispersed, so it errs low: a start only).
    """
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    if codes is None:
        return {"weights": weights, "probs": probs}
    population = weights.mean(axis=0)
    spread = np.maximum(weights.var(axis=0), 1e-12)
    concentration = np.mean(population * (1.0 - population) / spread) - 1.0
    return {"weights": population, "probs": probs, "group_weights": weights,
            "concentration": np.asarray(np.clip(concentration, 1.0, 1000.0))}


def check_against_scipy(params, dense, codes=None, *,
                        check: str = "log-likelihood vs scipy") -> dict:
    """Per-row log-likelihood of the mixture against scipy's multinomial (the
    first ``SCIPY_ROWS`` rows of ``dense``; ``codes`` the group codes)."""
    dense = dense.toarray() if scipy.sparse.issparse(dense) else np.asarray(dense)
    rows = dense[:SCIPY_ROWS].astype(np.float64)
    rows_codes = None if codes is None else codes[:SCIPY_ROWS]
    ours = np.asarray(mm.log_likelihood(params, rows, rows_codes))
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    totals = rows.sum(axis=1)
    per_component = np.column_stack([
        multinomial(totals, probs[k]).logpmf(rows) for k in range(probs.shape[0])])
    row_weights = weights if codes is None else weights[rows_codes]
    nonempty = totals > 0  # empty rows carry no likelihood (excluded from the fit)
    with np.errstate(divide="ignore"):
        theirs = logsumexp(per_component + np.log(row_weights), axis=1)
    error = float(np.max(np.abs(ours - theirs)[nonempty], initial=0.0))
    return check_row(check, "EM",
                     f"scipy.stats.multinomial.logpmf mixture ({int(nonempty.sum())}"
                     f" rows)", error, SCIPY_ATOL, "max |diff| (nats) <= tol")


def check_monotone(result, label: str = "") -> dict:
    """The largest decrease of an EM trace (``label`` names the fit)."""
    trace = np.asarray(result.trace)
    trace = trace[np.isfinite(trace)]
    drop = float(np.max(-np.diff(trace), initial=0.0))
    name = "EM trace never decreases" + (f" ({label})" if label else "")
    return check_row(name, "EM", "EM ascent property", drop,
                     MONOTONE_ATOL, "largest drop (nats per basket) <= tol",
                     note=f"{trace.size} iterations")


def _check_map(fits, idata, sites) -> dict:
    """|AutoDelta - EM| in posterior sds (NUTS, else VI draws), else relative."""
    fit = fits["map"]
    if idata is not None:
        sd = {name: idata.posterior[name].std(("chain", "draw")).values
              for name in ("weights", "probs")}
        unit = "posterior sd"
    elif "vi_draws" in fits:
        sd = {name: fits["vi_draws"][name].std(axis=0) for name in ("weights",
                                                                     "probs")}
        unit = "VI posterior sd"
    else:
        sd = {name: 1.0 for name in ("weights", "probs")}
        unit = "absolute (no draws to measure the posterior sd)"
    diff = max(float(np.max(np.abs(np.asarray(fit.params[name]) - sites[name])
                            / sd[name])) for name in ("weights", "probs"))
    # Without draws the difference is absolute on probabilities; the optimiser
    # settles within ~1e-6 of the mode there too.
    return check_row("EM vs AutoDelta MAP", "MAP",
                     "fit_map on models.multinomial_mixture.model, same prior",
                     diff, MAP_TOL_SD, f"max |diff| ({unit}) <= tol")
