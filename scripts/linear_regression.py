"""Bayesian linear regression checked four ways: closed form, EM, MAP/VI and NUTS.

    python scripts/linear_regression.py [--seed 0] [--out out] [--quiet] [--fast]
                                        [--device auto|cpu|gpu]

Model (``models/linear_regression.py``): w ~ N(0, alpha^-1 I) and
y | X, w ~ N(Xw, beta^-1 I), alpha the prior precision, beta the noise precision.
Two data sets:

* sinusoid: y = sin(2 pi x) + N(0, 0.3^2), 30 rows with x ~ U(0, 1), on a basis of
  9 Gaussian bumps plus a bias column (Bishop, PRML section 3.3);
* diabetes: 442 patients, 10 standardised features plus a bias column, target
  standardised (so every weight is O(1): Adam's step size and the VI guide's
  initial scale are not scale-invariant, the closed form is).

For each, EM fits alpha and beta by maximising the evidence (checked against
scikit-learn's BayesianRidge). With the precisions fixed at the EM values the
posterior of w is Gaussian and known exactly, and each method is checked against
it with a tolerance taken from its own error source: float rounding (closed form
vs an SVD ridge solve), the stopping rule (EM), the optimiser (MAP), the Monte
Carlo noise of the ELBO gradients (full-rank and mean-field VI) and the ESS-based
Monte Carlo standard error (NUTS). NUTS then runs on the hierarchical model, with
both precisions sampled under their Gamma hyperprior.

Writes into ``<out>/linear_regression/``: ``cross_check.csv``, ``coefficients.csv``,
``evidence_by_degree.csv``, ``diagnostics.csv``, ``params.json``, the hierarchical
posteriors as ArviZ netCDF, and PNG figures (predictive band, log evidence against
polynomial degree, coefficients by method, ArviZ trace and posterior plots).

--device auto (default) computes on a GPU when JAX finds one, else on the CPU;
--device gpu without a GPU exits with status 2. Always float64.

Exit status: 0 when every cross-check passes, 2 bad arguments (or no GPU for
--device gpu), 4 when one fails, 5 when the output folder cannot be written.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist
import pandas as pd
import scipy.linalg
from sklearn.linear_model import BayesianRidge

from latentmix.data.datasets import load_diabetes
from latentmix.data.validation import DataWarning
from latentmix.inference.em import ConvergenceWarning, fit_linear_regression
from latentmix.inference.mcmc import SamplerWarning, diagnostics, run_nuts
from latentmix.inference.svi import fit_map, fit_vi
from latentmix.models.linear_regression import (
    HYPERPRIOR_CONCENTRATION,
    HYPERPRIOR_RATE,
    gaussian_features,
    polynomial_features,
    posterior,
    posterior_and_log_evidence,
    predictive,
)
from latentmix.models.linear_regression import model as regression_model
from latentmix.scripts import device
from latentmix.scripts import runtime as rt

NOISE_SD = 0.3  # sinusoid noise; true noise precision 1 / 0.09 = 11.1
NUM_CENTERS = 9
BUMP_WIDTH = 0.1
EM_TOL = 1e-12  # nats; see the EM tolerance below
# Tolerances, each from the error source of its method (README, "Bayesian linear
# regression"). Differences of means are in units of the exact posterior sd.
CLOSED_FORM_TOL = 1e-8  # float rounding, kappa(A) * eps with kappa < 1e5 here
# EM stops when the evidence moves by < EM_TOL; the evidence is quadratic in the
# log-precisions near its peak (curvature ~ p/2, n/2), so the precisions are then
# within sqrt(2 EM_TOL / (p/2)) ~ 1e-6 relative of the stationary point, which is
# also scikit-learn's (MacKay's updates, hyperpriors switched off).
EM_RTOL = 1e-6
MAP_TOL = 1e-6  # deterministic strongly convex objective: optimiser precision
Z_LIMIT = 4.0  # |z| < 4 per score: family-wise false alarms ~ 1e-3 for ~20 scores


class Settings(NamedTuple):
    """Run sizes; --fast shrinks them (the tolerances follow automatically)."""

    num_rows: int
    num_chains: int
    num_warmup: int
    num_samples: int
    map_steps: int
    vi_steps: int
    vi_particles: int
    vi_final_lr_ratio: float
    max_degree: int
    methods: dict  # data set -> methods run beyond EM and the closed form


# Run time is dominated by compilation (one program per method and data shape),
# not by steps or draws, so --fast skips programs rather than shrinking them: the
# sinusoid gets MAP, full-rank VI and hierarchical NUTS, the diabetes data EM and
# the closed form only, and fewer polynomial degrees are compared.
# VI keeps its steps: with fewer it stops before converging, and its tolerance
# (vi_tolerance) describes Monte Carlo noise after convergence only.
METHODS = ("map", "vi", "vi_mean_field", "nuts", "nuts_hierarchical")
FULL = Settings(num_rows=30, num_chains=4, num_warmup=500, num_samples=1000,
                map_steps=3000, vi_steps=2000, vi_particles=32,
                vi_final_lr_ratio=1e-3, max_degree=9,
                methods={"sinusoid": METHODS, "diabetes": METHODS})
FAST = FULL._replace(num_warmup=200, num_samples=300, max_degree=3,
                     methods={"sinusoid": ("map", "vi", "nuts_hierarchical"),
                              "diabetes": ()})
# EM climbs to a local maximum of the evidence, and the evidence can have two (a
# large-alpha one where noise explains the data, a small-alpha one where the
# weights do: polynomial degrees 3 and 4 on the sinusoid). Restarting from these
# initial prior precisions costs no compilation (they are traced) and keeps the best.
EM_INITS = (1e-4, 1e-2, 1.0, 1e2)


def vi_tolerance(num_steps, num_particles, final_lr_ratio):
    """Error scale of SVI's last iterate, in posterior sds (and in log sd), times 6.

    The ELBO gradient is a Monte Carlo estimate from ``num_particles`` draws; the
    learning rate decays by e every tau = num_steps / ln(1 / final_lr_ratio) steps,
    so the last iterate averages about num_particles * tau gradient draws and errs
    by about 1 / (2 sqrt(num_particles * tau)) (measured 0.8-1.4 times this RMS in
    tests/test_svi_mcmc.py); 6 times that bounds the largest of ~20 coordinates.
    """
    tau = num_steps / np.log(1.0 / final_lr_ratio)
    return 6.0 / (2.0 * np.sqrt(num_particles * tau))


# --- data -------------------------------------------------------------------------


def sinusoid_data(seed: int, num_rows: int) -> dict:
    """y = sin(2 pi x) + noise on a Gaussian-bump basis (bias + NUM_CENTERS bumps)."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 1.0, num_rows))
    y = np.sin(2 * np.pi * x) + rng.normal(0.0, NOISE_SD, num_rows)
    centers = np.linspace(0.0, 1.0, NUM_CENTERS)
    X = np.asarray(gaussian_features(x, centers, BUMP_WIDTH))
    names = ["bias"] + [f"bump{j}" for j in range(NUM_CENTERS)]
    return {"X": X, "y": y, "x": x, "centers": centers, "names": names,
            "true_noise_precision": 1.0 / NOISE_SD**2}


def diabetes_data() -> dict:
    """Diabetes with unit-variance features (bias kept) and a standardised target."""
    X, y, names = load_diabetes(add_bias=True)
    X = X.copy()
    X[:, 1:] = X[:, 1:] / X[:, 1:].std(axis=0)
    return {"X": X, "y": (y - y.mean()) / y.std(), "names": names,
            "y_mean": float(y.mean()), "y_sd": float(y.std())}


# --- the cross-check --------------------------------------------------------------


def ridge_solution(X, y, penalty):
    """argmin ||y - Xw||^2 + penalty ||w||^2 by SVD least squares on [X; sqrt(l) I]."""
    num_predictors = X.shape[1]
    design = np.vstack([X, np.sqrt(penalty) * np.eye(num_predictors)])
    return scipy.linalg.lstsq(design, np.concatenate([y, np.zeros(num_predictors)]))[0]


def nuts_scores(w, mean, sd):
    """z-scores of NUTS means (MCSE) and sds (sd / sqrt(2 ESS)) against the truth."""
    mcse = np.array([az.mcse(w[..., j], method="mean") for j in range(w.shape[-1])])
    z_mean = (w.mean(axis=(0, 1)) - mean) / mcse
    # ESS of the squared deviations: the quantity the sample sd is made of.
    ess = np.array([az.ess((w[..., j] - mean[j]) ** 2, method="mean")
                    for j in range(w.shape[-1])])
    z_sd = (w.std(axis=(0, 1)) - sd) / (sd / np.sqrt(2 * ess))
    return z_mean, z_sd


def row(dataset, method, reference, mean_diff, sd_diff, statistic, tolerance,
        passed, note=""):
    return {"dataset": dataset, "method": method, "reference": reference,
            "max_abs_diff_mean_sd_units": float(mean_diff),
            "max_abs_diff_sd_relative": float(sd_diff),
            "statistic": float(statistic), "tolerance": float(tolerance),
            "pass": bool(passed), "note": note}


def fit_em_with_restarts(X, y):
    """EM from each initial prior precision in EM_INITS; the highest evidence wins.

    Returns (best EMResult, its initial prior precision, all final log evidences).
    """
    fits = [fit_linear_regression(X, y, tol=EM_TOL, init_prior_precision=init)
            for init in EM_INITS]
    log_evidences = [float(fit.log_likelihood) for fit in fits]
    best = int(np.argmax(log_evidences))
    return fits[best], EM_INITS[best], log_evidences


class Problem(NamedTuple):
    """One data set with the EM precisions and the exact posterior at them."""

    name: str
    X: np.ndarray
    y: np.ndarray
    fixed: dict  # {"prior_precision": alpha, "noise_precision": beta}
    mean: np.ndarray  # closed-form posterior mean of w
    cov: np.ndarray
    sd: np.ndarray
    settings: Settings


def check_closed_form(problem):
    """Closed form vs an independent SVD ridge solve and a NumPy inverse."""
    alpha, beta = problem.fixed["prior_precision"], problem.fixed["noise_precision"]
    X = problem.X
    ridge = ridge_solution(X, problem.y, alpha / beta)
    inverse = np.linalg.inv(alpha * np.eye(X.shape[1]) + beta * X.T @ X)
    mean_diff = np.max(np.abs(problem.mean - ridge) / problem.sd)
    sd_diff = np.max(np.abs(problem.sd / np.sqrt(np.diag(inverse)) - 1))
    statistic = max(mean_diff, sd_diff)
    return row(problem.name, "closed form", "ridge (SVD lstsq), numpy inverse",
               mean_diff, sd_diff, statistic, CLOSED_FORM_TOL,
               statistic < CLOSED_FORM_TOL)


def check_em(problem, em, em_init, true_noise_precision=None):
    """EM precisions vs scikit-learn (and vs the truth for simulated data)."""
    alpha, beta = problem.fixed["prior_precision"], problem.fixed["noise_precision"]
    # MacKay's updates with the hyperpriors switched off, from the same start (both
    # default the noise precision to 1 / var(y)).
    reference = BayesianRidge(fit_intercept=False, alpha_1=0.0, alpha_2=0.0,
                              lambda_1=0.0, lambda_2=0.0, tol=1e-14,
                              max_iter=100_000, lambda_init=em_init
                              ).fit(problem.X, problem.y)
    precision_diff = max(abs(alpha / reference.lambda_ - 1),
                         abs(beta / reference.alpha_ - 1))
    num_iters = int(em.num_iters)
    trace = np.asarray(em.trace[:num_iters])
    monotone = bool(np.all(np.diff(trace) >= -64 * np.finfo(float).eps
                           * np.abs(trace).max()))
    reference_sd = np.sqrt(np.diag(reference.sigma_))
    rows = [row(problem.name, "EM-evidence", "sklearn BayesianRidge (alpha_, lambda_)",
                np.max(np.abs(problem.mean - reference.coef_) / problem.sd),
                np.max(np.abs(problem.sd / reference_sd - 1)), precision_diff, EM_RTOL,
                precision_diff < EM_RTOL and bool(em.converged) and monotone,
                f"{num_iters} iterations, converged={bool(em.converged)}, "
                f"monotone={monotone}, best of {len(EM_INITS)} starts")]
    # gamma = p - alpha tr(S) well-determined weights (PRML eq. 3.91); the estimate
    # beta = (n - gamma) / RSS then has a sampling sd of about beta sqrt(2/(n - gamma)).
    effective = problem.X.shape[1] - alpha * np.trace(problem.cov)
    if true_noise_precision is not None:
        z = (beta - true_noise_precision) / (
            true_noise_precision * np.sqrt(2.0 / (problem.X.shape[0] - effective)))
        rows.append(row(problem.name, "EM-evidence",
                        f"true noise precision {true_noise_precision:.4g}", np.nan,
                        np.nan, abs(z), Z_LIMIT, abs(z) < Z_LIMIT,
                        f"|z| of beta = {beta:.4g}; gamma = {effective:.2f}"))
    summary = {"prior_precision": alpha, "noise_precision": beta,
               "log_evidence": float(em.log_likelihood), "num_iters": num_iters,
               "converged": bool(em.converged), "init_prior_precision": em_init,
               "effective_num_parameters": float(effective),
               "sklearn_lambda_": float(reference.lambda_),
               "sklearn_alpha_": float(reference.alpha_), "trace": trace.tolist()}
    return rows, summary


def check_map(problem, rng_key):
    fit = fit_map(regression_model, problem.X, problem.y, rng_key=rng_key,
                  num_steps=problem.settings.map_steps, learning_rate=0.05,
                  final_lr_ratio=1e-2, init_params=_prior_mean(problem),
                  **problem.fixed)
    w_map = np.asarray(fit.params["w"])
    mean_diff = np.max(np.abs(w_map - problem.mean) / problem.sd)
    return (row(problem.name, "MAP", "closed-form mean", mean_diff, np.nan, mean_diff,
                MAP_TOL, mean_diff < MAP_TOL),
            (w_map, np.full_like(w_map, np.nan)))


def _prior_mean(problem):
    return {"w": np.zeros(problem.X.shape[1])}


def _run_vi(problem, rng_key, guide):
    settings = problem.settings
    return fit_vi(regression_model, problem.X, problem.y, rng_key=rng_key,
                  guide=guide, num_steps=settings.vi_steps, learning_rate=0.05,
                  final_lr_ratio=settings.vi_final_lr_ratio,
                  num_particles=settings.vi_particles,
                  init_params=_prior_mean(problem), **problem.fixed)


def _vi_row(problem, method, reference, mean, sd, target_sd, note):
    settings = problem.settings
    tolerance = vi_tolerance(settings.vi_steps, settings.vi_particles,
                             settings.vi_final_lr_ratio)
    mean_diff = np.max(np.abs(mean - problem.mean) / problem.sd)
    sd_diff = np.max(np.abs(np.log(sd / target_sd)))
    statistic = max(mean_diff, sd_diff)
    return row(problem.name, method, reference, mean_diff, sd_diff, statistic,
               tolerance, statistic < tolerance, note)


def check_vi(problem, rng_key):
    """Full-rank Gaussian VI must recover N(m, S) itself."""
    fit = _run_vi(problem, rng_key, "mvn")
    q = fit.guide.get_posterior(fit.guide_params)  # w space = unconstrained space
    mean = np.asarray(q.loc)
    sd = np.sqrt(np.diag(np.asarray(q.covariance_matrix)))
    return (_vi_row(problem, "VI (full-rank)", "closed form", mean, sd, problem.sd,
                    "sd difference as |log ratio|"), (mean, sd))


def check_vi_mean_field(problem, rng_key):
    """Mean-field VI on a Gaussian target: exact means, sds 1 / sqrt((S^-1)_jj)."""
    fit = _run_vi(problem, rng_key, "normal")
    mean = np.asarray(fit.guide_params["w_auto_loc"])
    sd = np.asarray(fit.guide_params["w_auto_scale"])
    target_sd = 1.0 / np.sqrt(np.diag(np.linalg.inv(problem.cov)))
    note = (f"mean-field sd / exact sd: {np.min(target_sd / problem.sd):.2f} to "
            f"{np.max(target_sd / problem.sd):.2f}")
    return (_vi_row(problem, "VI (mean-field)", "closed-form mean, sd 1/sqrt(S^-1_jj)",
                    mean, sd, target_sd, note), (mean, sd))


def _nuts(problem, rng_key, **fixed):
    settings = problem.settings
    return run_nuts(regression_model, problem.X, problem.y, rng_key=rng_key,
                    num_chains=settings.num_chains, num_warmup=settings.num_warmup,
                    num_samples=settings.num_samples, dense_mass=True, **fixed)


def _diagnostics_note(table):
    return (f"max R-hat {table['r_hat'].max():.3f}, min bulk ESS "
            f"{table['ess_bulk'].min():.0f}, divergences "
            f"{int(table['divergences'].iloc[0])}")


def check_nuts(problem, rng_key):
    """NUTS with the precisions fixed: z-scores of means and sds."""
    idata = _nuts(problem, rng_key, **problem.fixed)
    w = idata.posterior["w"].values
    z_mean, z_sd = nuts_scores(w, problem.mean, problem.sd)
    statistic = max(np.max(np.abs(z_mean)), np.max(np.abs(z_sd)))
    table = diagnostics(idata)
    mean, sd = w.mean(axis=(0, 1)), w.std(axis=(0, 1))
    return (row(problem.name, "NUTS", "closed form (z-scores, ESS-based MCSE)",
                np.max(np.abs(mean - problem.mean) / problem.sd),
                np.max(np.abs(sd / problem.sd - 1)), statistic, Z_LIMIT,
                statistic < Z_LIMIT, _diagnostics_note(table)),
            (mean, sd), table)


def check_nuts_hierarchical(problem, rng_key, progress, timings):
    """NUTS with both precisions sampled vs 2-D quadrature of the exact marginal."""
    idata = _nuts(problem, rng_key)
    table = diagnostics(idata)
    label = f"{problem.name}: quadrature of the hierarchical posterior"
    with rt.StepTimer(timings, label, progress):
        exact = hierarchical_reference(problem.X, problem.y,
                                       tuple(problem.fixed.values()))
    w = idata.posterior["w"].values
    log_draws = {site: np.log(idata.posterior[site].values) for site in problem.fixed}
    z = [(log_draws[site].mean() - exact[f"E log {site}"])
         / az.mcse(log_draws[site], method="mean") for site in log_draws]
    z += [(w[..., j].mean() - exact["E w"][j]) / az.mcse(w[..., j], method="mean")
          for j in range(w.shape[-1])]
    statistic = float(np.max(np.abs(z)))
    precisions = {site: {"posterior_median": float(np.exp(np.median(log_draws[site]))),
                         "posterior_mean_log": float(log_draws[site].mean()),
                         "exact_mean_log": exact[f"E log {site}"],
                         "em": problem.fixed[site]}
                  for site in log_draws}
    mean, sd = w.mean(axis=(0, 1)), w.std(axis=(0, 1))
    return (row(problem.name, "NUTS (hierarchical)",
                "grid quadrature of p(log alpha, log beta | y) (z-scores)",
                np.max(np.abs(mean - exact["E w"]) / problem.sd), np.nan, statistic,
                Z_LIMIT, statistic < Z_LIMIT and exact["border_mass"] < 1e-6,
                f"E log-precisions and E w; {_diagnostics_note(table)}; grid border "
                f"mass {exact['border_mass']:.1e}"),
            (mean, sd), table, idata, precisions)


def cross_check(name, data, settings, methods, rng_key, progress, timings):
    """Fit one data set by EM and the closed form, then by each of ``methods``.

    Returns (table rows, coefficients DataFrame, extras dict).
    """
    X, y = data["X"], data["y"]
    keys = dict(zip(METHODS, jax.random.split(rng_key, len(METHODS)), strict=True))

    def timed(label):
        return rt.StepTimer(timings, f"{name}: {label}", progress)

    with timed("EM for the precisions"):
        em, em_init, restart_log_evidences = fit_em_with_restarts(X, y)
    fixed = {"prior_precision": float(em.params.prior_precision),
             "noise_precision": float(em.params.noise_precision)}
    with timed("closed form"):
        post = posterior(X, y, **fixed)
    mean, cov = np.asarray(post.mean), np.asarray(post.cov)
    problem = Problem(name, X, y, fixed, mean, cov, np.sqrt(np.diag(cov)), settings)
    rows = [check_closed_form(problem)]
    em_rows, em_summary = check_em(problem, em, em_init,
                                   data.get("true_noise_precision"))
    rows += em_rows
    em_summary["restart_log_evidences"] = restart_log_evidences
    coefficients = {"closed form": (mean, problem.sd)}
    extras = {"em": em_summary, "posterior": post, "diagnostics": {}}
    steps = {"map": ("MAP", "MAP (AutoDelta)", check_map),
             "vi": ("VI (full-rank)", "VI, full-rank Gaussian", check_vi),
             "vi_mean_field": ("VI (mean-field)", "VI, mean-field Gaussian",
                               check_vi_mean_field),
             "nuts": ("NUTS", "NUTS, precisions fixed", check_nuts)}
    for method in methods:
        if method == "nuts_hierarchical":
            with timed("NUTS, hierarchical (precisions sampled)"):
                new_row, coefficients["NUTS (hierarchical)"], table, idata, \
                    precisions = check_nuts_hierarchical(problem, keys[method],
                                                         progress, timings)
            extras.update(idata=idata, hierarchical_precisions=precisions)
            extras["diagnostics"]["NUTS (hierarchical)"] = table
        else:
            label, step_name, check = steps[method]
            with timed(step_name):
                new_row, coefficients[label], *table = check(problem, keys[method])
            if table:
                extras["diagnostics"][label] = table[0]
        rows.append(new_row)
    return rows, coefficient_frame(coefficients, data["names"]), extras


def hierarchical_reference(X, y, em_precisions, num_points=(160, 120)):
    """Exact posterior moments of the hierarchical model by 2-D grid quadrature.

    With both precisions sampled, p(log a, log b | y) is proportional to
    p(y | a, b) Gamma(a) a Gamma(b) b: the closed-form evidence, the Gamma
    hyperprior of ``model`` and the Jacobian of the log. Given (a, b), w has the
    conjugate posterior, so E[w | y] = E[m(a, b) | y]. The grid is centred on the
    EM estimate (the hyperprior is almost flat in log-precision, so that is the
    mode), spans 10 Laplace sds each way, and further down in log a, whose lower
    tail decays only like a^(p/2).

    Returns E log prior_precision, E log noise_precision, E w and the posterior
    mass on the grid's border (which must be negligible).
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    hyperprior = dist.Gamma(HYPERPRIOR_CONCENTRATION, HYPERPRIOR_RATE)

    def log_density_and_mean(log_precisions):
        precisions = jnp.exp(log_precisions)
        post, log_ev = posterior_and_log_evidence(X, y, *precisions)
        log_prior = jnp.sum(hyperprior.log_prob(precisions) + log_precisions)
        return log_ev + log_prior, post.mean

    center = jnp.log(jnp.asarray(em_precisions))
    hessian = jax.jit(jax.hessian(lambda v: log_density_and_mean(v)[0]))(center)
    laplace_sd = np.sqrt(np.diag(np.linalg.inv(-np.asarray(hessian))))
    below = [50.0 / X.shape[1] + 5 * laplace_sd[0], 10 * laplace_sd[1]]
    axes = [np.linspace(c - low, c + 10 * s, n) for c, low, s, n
            in zip(np.asarray(center), below, laplace_sd, num_points, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    log_post, means = jax.jit(jax.vmap(log_density_and_mean))(jnp.asarray(grid))
    weights = np.exp(np.asarray(log_post) - np.max(np.asarray(log_post)))
    weights /= weights.sum()
    square = weights.reshape(num_points)
    border = square[0].sum() + square[-1].sum() + square[1:-1, 0].sum() \
        + square[1:-1, -1].sum()
    return {"E log prior_precision": float(weights @ grid[:, 0]),
            "E log noise_precision": float(weights @ grid[:, 1]),
            "E w": weights @ np.asarray(means), "border_mass": float(border)}


def coefficient_frame(coefficients, names):
    """{method: (means, sds)} -> long DataFrame indexed by (method, coefficient)."""
    return pd.concat(
        {method: pd.DataFrame({"mean": m, "sd": s}, index=names)
         for method, (m, s) in coefficients.items()},
        names=["method", "coefficient"],
    )


def evidence_by_degree(x, y, max_degree):
    """Log evidence of polynomial bases of degree 0..max_degree, EM precisions each.

    Also records the evidence EM reaches from the default start alone (alpha = 1),
    which for some degrees is a worse local maximum.
    """
    records = []
    for degree in range(max_degree + 1):
        fit, init, log_evidences = fit_em_with_restarts(
            polynomial_features(x, degree), y)
        records.append({"degree": degree,
                        "log_evidence": float(fit.log_likelihood),
                        "prior_precision": float(fit.params.prior_precision),
                        "noise_precision": float(fit.params.noise_precision),
                        "converged": bool(fit.converged),
                        "init_prior_precision": init,
                        "log_evidence_default_start": log_evidences[
                            EM_INITS.index(1.0)]})
    return pd.DataFrame.from_records(records)


# --- figures ----------------------------------------------------------------------


def plot_predictive(data, extras, seed):
    """Data, true curve, predictive band (closed form) and posterior function draws.

    The draws are hierarchical NUTS draws when that ran, closed-form draws otherwise.
    """
    grid = np.linspace(0.0, 1.0, 200)
    basis = np.asarray(gaussian_features(grid, data["centers"], BUMP_WIDTH))
    beta = extras["em"]["noise_precision"]
    post = extras["posterior"]
    mean, variance = (np.asarray(v) for v in predictive(post, basis, beta))
    function_sd = np.sqrt(np.maximum(variance - 1.0 / beta, 0.0))
    rng = np.random.default_rng(seed)
    if "idata" in extras:
        draws = extras["idata"].posterior["w"].values.reshape(-1, basis.shape[1])
        draws, source = draws[rng.choice(len(draws), 20, replace=False)], \
            "hierarchical NUTS draws"
    else:
        draws = rng.multivariate_normal(np.asarray(post.mean), np.asarray(post.cov),
                                        size=20)
        source = "posterior draws"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.fill_between(grid, mean - 2 * np.sqrt(variance), mean + 2 * np.sqrt(variance),
                    color="tab:blue", alpha=0.15, label="predictive ±2 sd")
    ax.fill_between(grid, mean - 2 * function_sd, mean + 2 * function_sd,
                    color="tab:blue", alpha=0.3, label="mean function ±2 sd")
    ax.plot(grid, basis @ draws.T, color="tab:orange", lw=0.6, alpha=0.6)
    ax.plot([], [], color="tab:orange", lw=0.6, label=source)
    ax.plot(grid, mean, color="tab:blue", label="posterior mean")
    ax.plot(grid, np.sin(2 * np.pi * grid), "k--", lw=1, label="sin(2πx)")
    ax.scatter(data["x"], data["y"], color="k", s=14, zorder=3, label="data")
    alpha = extras["em"]["prior_precision"]
    ax.set(xlabel="x", ylabel="y",
           title=f"Gaussian-bump basis, EM precisions α={alpha:.3g}, β={beta:.3g}")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_evidence(frame):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(frame["degree"], frame["log_evidence"], "o-",
            label="EM, best of the starts")
    ax.plot(frame["degree"], frame["log_evidence_default_start"], "x",
            color="gray", label="EM from alpha = 1 only")
    best = frame.loc[frame["log_evidence"].idxmax()]
    ax.plot(best["degree"], best["log_evidence"], "r*", ms=14,
            label=f"best: degree {int(best['degree'])}")
    ax.set(xlabel="polynomial degree", ylabel="log evidence ln p(y | α̂, β̂)",
           title="Model complexity (sinusoid data, EM precisions per degree)")
    ax.legend()
    return fig


def plot_coefficients(frame, dataset):
    order = ["closed form", "VI (full-rank)", "VI (mean-field)", "NUTS",
             "NUTS (hierarchical)", "MAP"]
    present = set(frame.index.get_level_values("method"))
    methods = [method for method in order if method in present]
    names = frame.loc["closed form"].index
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names)), 4))
    offsets = np.linspace(-0.3, 0.3, len(methods)) if len(methods) > 1 else [0.0]
    for offset, method in zip(offsets, methods, strict=True):
        part = frame.loc[method]
        errors = 2 * part["sd"].fillna(0.0)
        ax.errorbar(np.arange(len(names)) + offset, part["mean"], yerr=errors,
                    fmt="o", ms=3, lw=1, label=method)
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel="weight (mean ± 2 sd)", title=f"{dataset}: posterior of w by method")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_nuts(idata, extras, dataset):
    """ArviZ trace plot and posterior plot of the hierarchical model."""
    axes = az.plot_trace(idata, var_names=["prior_precision", "noise_precision", "w"],
                         compact=True, figsize=(11, 7), show=False)
    trace_fig = np.ravel(axes)[0].figure
    trace_fig.suptitle(f"{dataset}: hierarchical NUTS trace")
    trace_fig.tight_layout()
    ref_val = {site: [{"ref_val": extras["em"][site]}]
               for site in ("prior_precision", "noise_precision")}
    axes = az.plot_posterior(idata, var_names=["prior_precision", "noise_precision"],
                             ref_val=ref_val, show=False)
    posterior_fig = np.ravel(axes)[0].figure
    posterior_fig.suptitle(f"{dataset}: precisions (reference line: EM estimate)")
    return trace_fig, posterior_fig


# --- main -------------------------------------------------------------------------

OUR_WARNINGS = (DataWarning, ConvergenceWarning, SamplerWarning, RuntimeWarning)


def run_all(datasets, settings, progress, timings, messages):
    """Every cross-check and the degree sweep, collecting our warnings as text."""
    rows, frames, extras = [], {}, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OUR_WARNINGS)
        for name, (data, key) in datasets.items():
            new_rows, frames[name], extras[name] = cross_check(
                name, data, settings, settings.methods[name], key, progress, timings)
            rows.extend(new_rows)
        with rt.StepTimer(
            timings, "sinusoid: log evidence by polynomial degree", progress
        ):
            sinusoid = datasets["sinusoid"][0]
            evidence = evidence_by_degree(sinusoid["x"], sinusoid["y"],
                                          settings.max_degree)
    for item in caught:
        if issubclass(item.category, OUR_WARNINGS):
            text = f"{item.category.__name__}: {item.message}"
            if text not in messages:
                messages.append(text)
        else:  # not ours to judge: pass it on unchanged
            warnings.warn_explicit(item.message, item.category, item.filename,
                                   item.lineno)
    return rows, frames, extras, evidence


def write_figures(out, datasets, extras, coefficients, evidence, seed, messages):
    """Save every figure; return [(path, caption)] of those written."""
    figures = []

    def save(fig, filename, caption):
        path = rt.save_figure(fig, out / filename, messages)
        if path is not None:
            figures.append((str(path), caption))

    save(plot_predictive(datasets["sinusoid"][0], extras["sinusoid"], seed),
         "predictive_band.png", "Sinusoid: predictive band (closed form at the EM "
         "precisions), data and hierarchical NUTS draws")
    save(plot_evidence(evidence), "evidence_by_degree.png",
         "Log evidence against polynomial degree (EM-fitted precisions per degree)")
    for name in datasets:
        save(plot_coefficients(coefficients.loc[name], name),
             f"coefficients_{name}.png", f"{name}: posterior of the weights by method")
        if "idata" not in extras[name]:
            continue
        trace_fig, posterior_fig = plot_nuts(extras[name]["idata"], extras[name], name)
        save(trace_fig, f"nuts_trace_{name}.png",
             f"{name}: hierarchical NUTS trace (ArviZ)")
        save(posterior_fig, f"nuts_posterior_{name}.png",
             f"{name}: posterior of the precisions (ArviZ), EM estimate as reference")
    return figures


def summarise(cross, params, evidence):
    failed = cross.loc[~cross["pass"], ["dataset", "method"]]
    verdict = "" if failed.empty else ": FAILED " + "; ".join(
        f"{dataset}/{method}" for dataset, method in failed.itertuples(index=False))
    sinusoid, diabetes = params["sinusoid"]["em"], params["diabetes"]["em"]
    best = int(evidence.loc[evidence["log_evidence"].idxmax(), "degree"])
    return (
        f"{int(cross['pass'].sum())} of {len(cross)} cross-checks passed{verdict}. "
        f"EM precisions: sinusoid alpha={sinusoid['prior_precision']:.4g}, "
        f"beta={sinusoid['noise_precision']:.4g} (true beta "
        f"{1.0 / NOISE_SD**2:.4g}); diabetes alpha={diabetes['prior_precision']:.4g},"
        f" beta={diabetes['noise_precision']:.4g} (standardised units). Best "
        f"polynomial degree by evidence: {best}."
    )


def print_tables(coefficients, table_view, summary):
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.float_format", "{:.4g}".format):
        for name in coefficients.index.get_level_values("dataset").unique():
            print(f"\n== {name}: posterior mean and sd of w by method ==")
            wide = coefficients.loc[name].unstack("method")
            wide.columns = [f"{method} {stat}" for stat, method in wide.columns]
            print(wide.T.to_string())
        print("\n== cross-check (mean differences in units of the posterior sd) ==")
        print(table_view.to_string(index=False))
        print("\n" + summary)


def run(args) -> dict:
    """Run both cross-checks, write tables and figures, return everything as a dict.

    Keys: ``summary``, ``warnings``, ``tables`` [(caption, DataFrame)],
    ``figures`` [(path, caption)], ``timings`` {step: seconds}, ``rows`` (the
    cross-check table as records), ``diagnostics`` {run: records}, ``params``,
    ``evidence_by_degree``, ``seeds``, ``files``, ``all_passed``.
    """
    started = time.perf_counter()
    settings = FAST if args.fast else FULL
    out = rt.prepare_output_dir(Path(args.out) / "linear_regression", overwrite=True)
    progress = rt.Progress(quiet=args.quiet)
    timings, messages = {}, []
    key_sinusoid, key_diabetes = jax.random.split(jax.random.key(args.seed))
    datasets = {"sinusoid": (sinusoid_data(args.seed, settings.num_rows), key_sinusoid),
                "diabetes": (diabetes_data(), key_diabetes)}
    rows, frames, extras, evidence = run_all(datasets, settings, progress, timings,
                                             messages)
    cross = pd.DataFrame.from_records(rows)
    coefficients = pd.concat(frames, names=["dataset"])
    diag_frames = {f"{name}: {run}": table for name in extras
                   for run, table in extras[name]["diagnostics"].items()}
    diag = (pd.concat(diag_frames, names=["run", "parameter"]) if diag_frames
            else pd.DataFrame())
    with rt.StepTimer(timings, "figures", progress):
        figures = write_figures(out, datasets, extras, coefficients, evidence,
                                args.seed, messages)

    files = {}
    for label, frame, index in [("cross_check", cross, False),
                                ("coefficients", coefficients, True),
                                ("evidence_by_degree", evidence, False),
                                ("diagnostics", diag, True)]:
        files[label] = str(rt.atomic_write_text(out / f"{label}.csv",
                                                frame.to_csv(index=index)))
    for name in datasets:
        if "idata" not in extras[name]:
            continue
        path = out / f"nuts_hierarchical_{name}.nc"
        try:
            extras[name]["idata"].to_netcdf(str(path))
            files[f"nuts_hierarchical_{name}"] = str(path)
        except Exception as error:  # optional output; the CSVs hold the numbers
            messages.append(f"could not write {path}: {error}")

    params = {name: {key: value for key, value in extras[name].items()
                     if key in ("em", "hierarchical_precisions")}
              for name in datasets}
    params["diabetes"]["target_mean"] = datasets["diabetes"][0]["y_mean"]
    params["diabetes"]["target_sd"] = datasets["diabetes"][0]["y_sd"]
    params["sinusoid"]["true_noise_precision"] = 1.0 / NOISE_SD**2
    seeds = {"seed": args.seed, "data": f"numpy default_rng({args.seed})",
             "rng_key": f"jax.random.key({args.seed}), split per data set and method"}
    diagnostics_records = {run: table.reset_index(names="parameter")
                           .to_dict(orient="records")
                           for run, table in diag_frames.items()}
    all_passed = bool(cross["pass"].all())
    summary = summarise(cross, params, evidence)
    timings["total"] = time.perf_counter() - started
    files["params"] = str(rt.write_json(out / "params.json", {
        "summary": summary, "all_passed": all_passed, "fast": bool(args.fast),
        "settings": settings._asdict(), "seeds": seeds, "cross_check": rows,
        "params": params, "evidence_by_degree": evidence.to_dict(orient="records"),
        "diagnostics": diagnostics_records, "timings": timings,
        "figures": [path for path, _ in figures], "warnings": messages,
    }))

    table_view = cross.drop(columns=["note"])
    tables = [("Cross-check (differences of means in units of the posterior sd)",
               table_view)]
    tables += [(f"{name}: posterior mean and sd of w by method",
                coefficients.loc[name].unstack("method")) for name in datasets]
    tables += [("Log evidence by polynomial degree (sinusoid)", evidence),
               ("NUTS diagnostics", diag)]
    if not args.quiet:
        print_tables(coefficients, table_view, summary)
    return {"summary": summary, "warnings": messages, "tables": tables,
            "figures": figures, "timings": timings, "rows": rows,
            "diagnostics": diagnostics_records, "params": params,
            "evidence_by_degree": evidence.to_dict(orient="records"),
            "seeds": seeds, "files": files, "all_passed": all_passed}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="data and sampler seed")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress messages or tables")
    parser.add_argument("--fast", action="store_true",
                        help="reduced sizes (seconds, for tests)")
    # The stories' cross-check tolerances are set for float64, on any device.
    device.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Command-line entry point: parse, configure JAX, run, exit status."""
    arguments = parse_args(argv)
    rt.use_agg_backend()
    device.configure_or_exit(arguments.device, dtype="float64",
                             host_devices=4)
    try:
        result = run(arguments)
    except rt.OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return rt.EXIT_OUTPUT
    return rt.EXIT_OK if result["all_passed"] else rt.EXIT_NUMERIC


if __name__ == "__main__":
    sys.exit(main())
