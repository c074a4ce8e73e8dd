"""The latent class model fitted by EM, MAP and NUTS, and the table proving they agree.

Checks, each against an independent reference with a tolerance from its error
source:

* log-likelihood vs loops: the per-row log-likelihood of the first rows against
  p(x) = sum_l w_l prod_j p_lj[x_j] written with Python loops (float64
  rounding of a few products: 1e-10 relative);
* the joint sums to 1: sum of p(x) over every one of the V^m answer patterns
  (when V^m <= 10^5), rounding only;
* EM trace never decreases (EM theory; float64 rounding of a mean of n terms);
* EM vs AutoDelta MAP: with the default flat Dirichlet priors the posterior
  mode is the maximum-likelihood estimate, EM's fixed point; measured in
  posterior sds when NUTS ran, else absolute (the optimiser settles within
  ~1e-6 of the mode);
* NUTS (``mixtures.nuts_rows``): chains started in permuted labellings of the
  EM fit disagree until ``relabel_samples``; after it R-hat <= 1.01, the
  diagnostics gate, and the EM estimate inside every 94% HDI.

``crosscheck_latent_class`` returns ``CrossCheck(table, fits, idata)`` like the
other models' cross-checks.
"""

import itertools

import jax
import numpy as np

from latentmix.inference.crosscheck.mixtures import (
    nuts_rows,
    permuted_starts,
    relabelled_nuts,
)
from latentmix.inference.crosscheck.table import (
    CrossCheck,
    check_methods,
    check_row,
    make_table,
    timed_step,
)
from latentmix.inference.em.latent_class import fit_latent_class
from latentmix.inference.mcmc import run_nuts
from latentmix.inference.svi import fit_map
from latentmix.models import latent_class as lc

__all__ = ["crosscheck_latent_class"]

METHODS = ("map", "nuts")
LOOP_ROWS = 200
LOOP_RTOL = 1e-10
MAX_PATTERNS = 100_000
MONOTONE_ATOL = 1e-12  # nats per row: rounding of a mean of n log terms
MAP_TOL_SD = 1e-3  # optimiser precision, in posterior sds
MAP_TOL_ABS = 1e-4  # without draws: on probabilities, far above BFGS's 1e-6
DENSE_MAX_DIM = 400  # as inference.posterior: a dense mass matrix up to 400 values


def crosscheck_latent_class(answers, num_classes: int, *, rng_key,
                            num_values: int | None = None, methods=("map",),
                            num_restarts: int = 10, tol: float = 1e-12,
                            max_iters: int = 20_000, map_steps: int = 2000,
                            num_chains: int = 4, num_warmup: int = 500,
                            num_samples: int = 500, label_switching: bool = True,
                            progress_fn=None) -> CrossCheck:
    """EM, then the same model (flat Dirichlet priors) by MAP and NUTS.

    Returns ``CrossCheck(table, fits, idata)``: fits "em" (EMResult), "map"
    (SVIResult), "nuts" (raw InferenceData); idata the NUTS draws relabelled
    against the EM fit (None without NUTS).
    """
    check_methods(methods, METHODS, num_chains, num_samples)
    answers, num_values = lc.check_answers(answers, num_values)
    keys = dict(zip(("em", "map", "nuts"), jax.random.split(rng_key, 3),
                    strict=True))
    seconds: dict = {}
    fits = {"seconds": seconds}
    with timed_step("EM with restarts", progress_fn, seconds):
        em = fit_latent_class(answers, num_classes, num_values=num_values,
                              num_restarts=num_restarts, tol=tol,
                              max_iters=max_iters, rng_key=keys["em"])
    fits["em"] = em
    params = lc.LatentClassParams(np.asarray(em.params.weights),
                                  np.asarray(em.params.probs))
    sites = {"weights": params.weights, "probs": params.probs}
    rows = [_check_loops(params, answers), _check_trace(em)]
    if num_values ** answers.shape[1] <= MAX_PATTERNS:
        rows.append(_check_total(params, answers.shape[1], num_values))
    if "map" in methods:
        with timed_step("AutoDelta MAP", progress_fn, seconds):
            fits["map"] = fit_map(lc.model, answers, num_classes,
                                  rng_key=keys["map"], num_steps=map_steps,
                                  init_params=sites, num_values=num_values)
    idata = None
    if "nuts" in methods:
        with timed_step("NUTS", progress_fn, seconds):
            fits["nuts"] = run_nuts(
                lc.model, answers, num_classes, rng_key=keys["nuts"],
                num_chains=num_chains, num_warmup=num_warmup,
                num_samples=num_samples,
                init_params=permuted_starts(sites, num_chains, label_switching),
                # A dense mass matrix adapts to the correlation of the weights
                # with the answer probabilities (cheap: few parameters).
                dense_mass=lc.num_parameters(num_classes, answers.shape[1],
                                             num_values) <= DENSE_MAX_DIM,
                num_values=num_values)
        idata = relabelled_nuts(fits["nuts"], params)
    if "map" in methods:
        rows.append(_check_map(fits["map"], sites, idata))
    if idata is not None:
        rows += nuts_rows(sites, fits["nuts"], idata,
                          label_switching=label_switching)
    return CrossCheck(make_table(rows), fits, idata)


def _check_loops(params, answers) -> dict:
    weights, probs = params
    rows = answers[:LOOP_ROWS]
    expected = []
    for row in rows:
        total = 0.0
        for cls in range(len(weights)):
            term = float(weights[cls])
            for j, value in enumerate(row):
                if value != lc.MISSING:
                    term *= float(probs[cls, j, value])
            total += term
        expected.append(np.log(total))
    got = np.asarray(lc.log_likelihood(params, rows))
    error = float(np.max(np.abs(got - expected) / np.abs(expected)))
    return check_row("log-likelihood vs loops", "EM",
                     f"sum_l w_l prod_j p_lj[x_j] with loops ({len(rows)} rows)",
                     error, LOOP_RTOL, "max relative difference <= tol")


def _check_total(params, num_variables, num_values) -> dict:
    patterns = np.array(list(itertools.product(range(num_values),
                                               repeat=num_variables)))
    total = float(np.exp(np.asarray(lc.log_likelihood(params, patterns))).sum())
    return check_row("the joint sums to 1", "EM",
                     f"all {len(patterns)} answer patterns", abs(total - 1.0),
                     1e-10, "|sum - 1| <= tol")


def _check_trace(em) -> dict:
    trace = np.asarray(em.trace[: int(em.num_iters)])
    drop = float(max(0.0, -np.min(np.diff(trace)))) if trace.size > 1 else 0.0
    return check_row("EM trace never decreases", "EM", "EM ascent property", drop,
                     MONOTONE_ATOL, "largest drop (nats per row) <= tol")


def _check_map(fit, sites, idata) -> dict:
    if idata is not None:
        sd = {name: idata.posterior[name].std(("chain", "draw")).values
              for name in sites}
        unit, tolerance = "posterior sd", MAP_TOL_SD
    else:
        sd = {name: 1.0 for name in sites}
        unit, tolerance = "absolute", MAP_TOL_ABS
    diff = max(float(np.max(np.abs(np.asarray(fit.params[name]) - value)
                            / sd[name])) for name, value in sites.items())
    return check_row("EM vs AutoDelta MAP", "MAP",
                     "fit_map on models.latent_class.model, flat priors", diff,
                     tolerance, f"max |diff| ({unit}) <= tol")
