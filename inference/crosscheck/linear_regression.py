"""Bayesian linear regression fitted by every method and checked against theory.

Model (``models.linear_regression``): w ~ N(0, alpha^-1 I), y | X, w ~
N(Xw, beta^-1 I). EM fits alpha and beta by maximising the evidence; with the
precisions fixed at the EM values the posterior of w is Gaussian and known
exactly (the closed form), so every other method is checked against it with a
tolerance taken from its own error source:

  closed form  vs an SVD ridge solve and a NumPy inverse: float rounding;
  EM           vs scikit-learn's BayesianRidge (MacKay's updates, hyperpriors
               off, same start): the stopping rule;
  MAP          (AutoDelta) vs the posterior mean: optimiser precision;
  VI           full-rank (AutoMultivariateNormal) vs N(m, S) and mean-field
               (AutoNormal) vs its known optimum (exact means, sds
               1/sqrt((S^-1)_jj)): Monte Carlo noise of the ELBO gradients;
  NUTS         z-scores of means (ESS-based MCSE) and sds; the hierarchical
               model (precisions sampled) against grid quadrature of the exact
               marginal posterior of (log alpha, log beta).

MAP, VI and NUTS run in standardised coordinates (``inference.posterior``), so
none of them depends on the units of the columns; VI is compared in the
coordinates it ran in, where its Monte Carlo error bound holds.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd
import scipy.linalg
from sklearn.linear_model import BayesianRidge

from latentmix.inference.crosscheck.table import (
    CrossCheck,
    check_methods,
    check_row,
    diagnostics_row,
    make_table,
    timed_step,
)
from latentmix.inference.em.linear_regression import fit_linear_regression
from latentmix.inference.mcmc import diagnostics
from latentmix.inference.posterior.linear_regression import (
    regression_map,
    regression_nuts,
    regression_vi,
    vi_moments,
)
from latentmix.inference.precision import follows_input_precision
from latentmix.models.linear_regression import (
    HYPERPRIOR_CONCENTRATION,
    HYPERPRIOR_RATE,
    check_regression_data,
    log_evidence,
    posterior,
    posterior_and_log_evidence,
)

__all__ = [
    "EM_INITS",
    "METHODS",
    "coefficient_table",
    "crosscheck_linear_regression",
    "fit_em_with_restarts",
    "hierarchical_reference",
    "ridge_solution",
    "vi_tolerance",
]

METHODS = ("map", "vi", "vi_mean_field", "nuts", "nuts_hierarchical")
DEFAULT_METHODS = ("map", "vi", "nuts")

# EM climbs to a local maximum of the evidence, and the evidence can have two (a
# large-alpha one where noise explains the data, a small-alpha one where the
# weights do: polynomial degrees 3 and 4 on the sinusoid). Restarting from these
# initial prior precisions costs no compilation (they are traced) and keeps the
# best.
EM_INITS = (1e-4, 1e-2, 1.0, 1e2)
EM_TOL = 1e-12  # nats of log evidence: the stopping rule of the EM below
# Tolerances, each from the error source of its method. Differences of means are
# in units of the exact posterior sd.
CLOSED_FORM_TOL = 1e-8  # float rounding, kappa(A) * eps with kappa < 1e5 here
# EM promises the highest evidence: scikit-learn's BayesianRidge (MacKay's
# updates, hyperpriors off) must not find a higher one. Both stop near the peak,
# where the evidence is flat in the precisions (a relative change r of a
# precision moves it by ~ kappa r^2 / 2, kappa ~ p/2 or less); its float64
# value, O(n) terms of size |ev|/n, is exact to ~1e-13 |ev|: 1e-10 |ev| leaves
# room for both stopping rules.
EM_EVIDENCE_RTOL = 1e-10
MAP_TOL = 1e-6  # deterministic strongly convex objective: optimiser precision
Z_LIMIT = 4.0  # |z| < 4 per score: family-wise false alarms ~ 1e-3 for ~20 scores


@follows_input_precision
def crosscheck_linear_regression(
    X,
    y,
    *,
    rng_key,
    methods=DEFAULT_METHODS,
    feature_names=None,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    map_steps: int = 3000,
    vi_steps: int = 2000,
    vi_particles: int = 32,
    vi_final_lr_ratio: float = 1e-3,
    true_noise_precision: float | None = None,
    progress_fn=None,
    callback=None,
    em_fn=None,
) -> CrossCheck:
    """Fit y ~ X by EM and the closed form, then by ``methods``, and compare.

    Args:
      X: (n, p) design matrix (add a column of ones for an intercept).
      y: (n,) targets.
      rng_key: JAX PRNG key, split per method.
      methods: any of ``METHODS``: "map", "vi" (full-rank), "vi_mean_field",
        "nuts" (precisions fixed at EM), "nuts_hierarchical" (precisions
        sampled under their Gamma hyperprior). EM and the closed form always run.
      feature_names: names of the columns of X (for ``coefficient_table``).
      num_chains, num_warmup, num_samples: NUTS sizes.
      map_steps, vi_steps, vi_particles, vi_final_lr_ratio: SVI sizes (the VI
        tolerance follows from them, ``vi_tolerance``).
      true_noise_precision: for simulated data, adds a check of the EM noise
        precision against the truth.
      progress_fn: optional callable receiving one line per step.
      callback: passed to the chunked samplers and optimisers (progress within
        a step, interrupts; ``inference.mcmc.run_nuts``).
      em_fn: optional callable receiving the EM result as soon as it exists
        (e.g. to write it before the slower methods run).

    Returns:
      ``CrossCheck``: ``fits`` holds "em" (EMResult), "closed_form"
      (GaussianPosterior), "sklearn" (the fitted BayesianRidge reference),
      "map", "vi", "vi_mean_field" (SVIResult), "nuts", "nuts_hierarchical"
      (InferenceData) as run, "hierarchical_precisions" (posterior summaries
      of the sampled precisions), "em_init" and "em_log_evidences" (the
      winning start and every start's log evidence), "feature_names" and
      "seconds" (per step); ``idata`` the hierarchical NUTS draws when run,
      else the fixed-precision ones, else None.
    """
    check_methods(methods, METHODS, num_chains, num_samples)
    X, y = check_regression_data(X, y)
    X, y = np.asarray(X), np.asarray(y)
    names = list(feature_names) if feature_names is not None else [
        f"w{j}" for j in range(X.shape[1])]
    keys = dict(zip(METHODS, jax.random.split(rng_key, len(METHODS)), strict=True))
    seconds: dict = {}
    with timed_step("EM for the precisions", progress_fn, seconds):
        em, em_init, log_evidences = fit_em_with_restarts(X, y)
    if em_fn is not None:
        em_fn(em)
    fixed = {"prior_precision": float(em.params.prior_precision),
             "noise_precision": float(em.params.noise_precision)}
    with timed_step("closed form", progress_fn, seconds):
        exact = posterior(X, y, **fixed)
    mean, cov = np.asarray(exact.mean), np.asarray(exact.cov)
    sd = np.sqrt(np.diag(cov))
    problem = _Problem(X, y, fixed, mean, cov, sd, callback)
    rows = [_check_closed_form(problem)]
    em_rows, sklearn = _check_em(problem, em, em_init, true_noise_precision)
    rows += em_rows
    fits = {"em": em, "closed_form": exact, "sklearn": sklearn, "em_init": em_init,
            "em_log_evidences": log_evidences, "feature_names": names,
            "seconds": seconds}
    sizes = {"num_chains": num_chains, "num_warmup": num_warmup,
             "num_samples": num_samples}
    vi_sizes = {"num_steps": vi_steps, "num_particles": vi_particles,
                "final_lr_ratio": vi_final_lr_ratio}
    idata = None
    for method in (m for m in METHODS if m in methods):
        label = _LABELS[method]
        with timed_step(label, progress_fn, seconds):
            if method == "map":
                row, fits["map"] = _check_map(problem, keys[method], map_steps)
            elif method in ("vi", "vi_mean_field"):
                # The map of the coordinates VI ran in (the whitening map of
                # the posterior precision, the same for both guides):
                # coefficient_table maps the variational moments back with it.
                row, fits[method], fits["weights_map"] = _check_vi(
                    problem, keys[method], method, vi_sizes)
            elif method == "nuts":
                row, fits["nuts"] = _check_nuts(problem, keys[method], sizes)
                idata = idata or fits["nuts"]
            else:
                row, fits[method], fits["hierarchical_precisions"] = (
                    _check_nuts_hierarchical(problem, keys[method], sizes))
                idata = fits[method]
        rows.append(row)
        if method.startswith("nuts"):
            rows.append(diagnostics_row(fits[method], list(fits[method].posterior),
                                        method=_METHOD_NAMES[method]))
    return CrossCheck(make_table(rows), fits, idata)


_METHOD_NAMES = {"nuts": "NUTS", "nuts_hierarchical": "NUTS (hierarchical)"}
_LABELS = {"map": "MAP (AutoDelta)", "vi": "VI, full-rank Gaussian",
           "vi_mean_field": "VI, mean-field Gaussian",
           "nuts": "NUTS, precisions fixed",
           "nuts_hierarchical": "NUTS, hierarchical (precisions sampled)"}


def coefficient_table(check: CrossCheck) -> pd.DataFrame:
    """Posterior mean and sd of every weight by method, indexed (method, coefficient).

    MAP has no sd (NaN); NUTS rows are the sample mean and sd of the draws.
    """
    fits, names = check.fits, check.fits["feature_names"]
    exact = fits["closed_form"]
    rows = {"closed form": (np.asarray(exact.mean),
                            np.sqrt(np.diag(np.asarray(exact.cov))))}
    if "map" in fits:
        w_map = np.asarray(fits["map"].params["w"])
        rows["MAP"] = (w_map, np.full_like(w_map, np.nan))
    for method, label in (("vi", "VI (full-rank)"),
                          ("vi_mean_field", "VI (mean-field)")):
        if method in fits:
            mean, cov = vi_moments(fits[method], fits["weights_map"])
            rows[label] = (mean, np.sqrt(np.diag(cov)))
    for method, label in (("nuts", "NUTS"), ("nuts_hierarchical",
                                             "NUTS (hierarchical)")):
        if method in fits:
            w = fits[method].posterior["w"].values
            rows[label] = (w.mean(axis=(0, 1)), w.std(axis=(0, 1)))
    return pd.concat(
        {label: pd.DataFrame({"mean": m, "sd": s}, index=names)
         for label, (m, s) in rows.items()},
        names=["method", "coefficient"],
    )


def ridge_solution(X, y, penalty):
    """argmin ||y - Xw||^2 + penalty ||w||^2 by SVD least squares on [X; sqrt(l) I]."""
    num_predictors = X.shape[1]
    design = np.vstack([X, np.sqrt(penalty) * np.eye(num_predictors)])
    return scipy.linalg.lstsq(design, np.concatenate([y, np.zeros(num_predictors)]))[0]


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


def fit_em_with_restarts(X, y, inits=EM_INITS):
    """EM from each initial prior precision in ``inits``; the highest evidence wins.

    Returns (best EMResult, its initial prior precision, all final log evidences).
    """
    fits = [fit_linear_regression(X, y, tol=EM_TOL, init_prior_precision=init)
            for init in inits]
    log_evidences = [float(fit.log_likelihood) for fit in fits]
    best = int(np.argmax(log_evidences))
    return fits[best], inits[best], log_evidences


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


# ------------------------------------------------------------------ the checks


class _Problem:
    """Data with the EM precisions and the exact posterior at them."""

    def __init__(self, X, y, fixed, mean, cov, sd, callback=None):
        self.X, self.y, self.fixed = X, y, fixed
        self.mean, self.cov, self.sd = mean, cov, sd
        self.callback = callback  # of the chunked samplers and optimisers


def _row(check, method, reference, mean_diff, sd_diff, statistic, tolerance,
         rule, passed=None, note=""):
    return check_row(check, method, reference, statistic, tolerance, rule,
                     passed=passed, note=note,
                     max_abs_diff_mean_sd_units=float(mean_diff),
                     max_abs_diff_sd_relative=float(sd_diff))


def _check_closed_form(problem):
    """Closed form vs an independent SVD ridge solve and a NumPy inverse."""
    alpha, beta = problem.fixed["prior_precision"], problem.fixed["noise_precision"]
    X = problem.X
    ridge = ridge_solution(X, problem.y, alpha / beta)
    inverse = np.linalg.inv(alpha * np.eye(X.shape[1]) + beta * X.T @ X)
    mean_diff = np.max(np.abs(problem.mean - ridge) / problem.sd)
    sd_diff = np.max(np.abs(problem.sd / np.sqrt(np.diag(inverse)) - 1))
    statistic = max(mean_diff, sd_diff)
    return _row("closed-form posterior", "closed form",
                "ridge (SVD lstsq), numpy inverse", mean_diff, sd_diff, statistic,
                CLOSED_FORM_TOL, "max(mean diff in sd, relative sd diff) <= tol")


def _check_em(problem, em, em_init, true_noise_precision=None):
    """EM precisions vs scikit-learn (and vs the truth for simulated data)."""
    alpha, beta = problem.fixed["prior_precision"], problem.fixed["noise_precision"]
    # MacKay's updates with the hyperpriors switched off, from the same start (both
    # default the noise precision to 1 / var(y)). scikit-learn stops on the change
    # of the coefficients (tol 1e-14 in y's units), which raw targets of large
    # scale never meet: it is given y / s, for which both precisions scale by
    # s^2, the coefficients by 1 / s, and its criterion is in O(1) units.
    scale = float(np.std(problem.y)) or 1.0
    reference = BayesianRidge(fit_intercept=False, alpha_1=0.0, alpha_2=0.0,
                              lambda_1=0.0, lambda_2=0.0, tol=1e-14,
                              max_iter=100_000, lambda_init=em_init * scale**2
                              ).fit(problem.X, problem.y / scale)
    reference.lambda_ /= scale**2
    reference.alpha_ /= scale**2
    reference.coef_ = reference.coef_ * scale
    reference.sigma_ = reference.sigma_ * scale**2
    precision_diff = max(abs(alpha / reference.lambda_ - 1),
                         abs(beta / reference.alpha_ - 1))
    ours = float(em.log_likelihood)
    theirs = float(log_evidence(problem.X, problem.y, reference.lambda_,
                                reference.alpha_))
    gap = (theirs - ours) / max(abs(ours), 1.0)
    num_iters = int(em.num_iters)
    trace = np.asarray(em.trace[:num_iters])
    monotone = bool(np.all(np.diff(trace) >= -64 * np.finfo(float).eps
                           * np.abs(trace).max()))
    reference_sd = np.sqrt(np.diag(reference.sigma_))
    rows = [_row("evidence maximisation", "EM-evidence",
                 "sklearn BayesianRidge (alpha_, lambda_)",
                 np.max(np.abs(problem.mean - reference.coef_) / problem.sd),
                 np.max(np.abs(problem.sd / reference_sd - 1)), gap,
                 EM_EVIDENCE_RTOL,
                 "(sklearn's log evidence - ours) / |ours| <= tol, converged, "
                 "monotone",
                 passed=gap <= EM_EVIDENCE_RTOL and bool(em.converged) and monotone,
                 note=f"precisions within {precision_diff:.1e} relative of "
                      f"sklearn's; {num_iters} iterations, converged="
                      f"{bool(em.converged)}, monotone={monotone}, best of "
                      f"{len(EM_INITS)} starts")]
    if true_noise_precision is not None:
        # gamma = p - alpha tr(S) well-determined weights (PRML eq. 3.91); the
        # estimate beta = (n - gamma) / RSS has a sampling sd of about
        # beta sqrt(2 / (n - gamma)).
        effective = problem.X.shape[1] - alpha * np.trace(problem.cov)
        z = (beta - true_noise_precision) / (
            true_noise_precision * np.sqrt(2.0 / (problem.X.shape[0] - effective)))
        rows.append(_row("noise precision recovered", "EM-evidence",
                         f"true noise precision {true_noise_precision:.4g}", np.nan,
                         np.nan, abs(z), Z_LIMIT, "|z| <= tol",
                         note=f"|z| of beta = {beta:.4g}; gamma = {effective:.2f}"))
    return rows, reference


def _check_map(problem, rng_key, num_steps):
    fit, w_map = regression_map(problem.X, problem.y, rng_key=rng_key,
                                num_steps=num_steps, callback=problem.callback,
                                **problem.fixed)
    mean_diff = np.max(np.abs(w_map - problem.mean) / problem.sd)
    return _row("posterior mode", "MAP", "closed-form mean", mean_diff, np.nan,
                mean_diff, MAP_TOL, "max |diff| / posterior sd <= tol",
                note=f"{fit.note} {fit.criterion:.2g}"), fit


def _check_vi(problem, rng_key, method, sizes):
    """Full-rank VI must recover N(m, S); mean-field VI its known optimum: exact
    means and sds 1 / sqrt((S^-1)_jj). Both in the standardised coordinates
    w_std = A w + c the optimiser ran in: there N(A m + c, A S A^T)."""
    guide = "mvn" if method == "vi" else "normal"
    fit, weights_map = regression_vi(problem.X, problem.y, rng_key=rng_key,
                                     guide=guide, callback=problem.callback,
                                     **sizes, **problem.fixed)
    matrix = np.asarray(weights_map.matrix)
    exact_mean = matrix @ problem.mean + np.asarray(weights_map.offset)
    exact_cov = matrix @ problem.cov @ matrix.T
    exact_sd = np.sqrt(np.diag(exact_cov))
    mean, cov = vi_moments(fit, weights_map, standardised=True)
    sd = np.sqrt(np.diag(cov))
    if method == "vi":
        target_sd, label = exact_sd, "VI (full-rank)"
        reference, note = "closed form", "sd difference as |log ratio|"
    else:
        target_sd = 1.0 / np.sqrt(np.diag(np.linalg.inv(exact_cov)))
        label, reference = "VI (mean-field)", "closed-form mean, sd 1/sqrt(S^-1_jj)"
        note = (f"mean-field sd / exact sd: {np.min(target_sd / exact_sd):.2f} to "
                f"{np.max(target_sd / exact_sd):.2f}")
    tolerance = vi_tolerance(sizes["num_steps"], sizes["num_particles"],
                             sizes["final_lr_ratio"])
    mean_diff = np.max(np.abs(mean - exact_mean) / exact_sd)
    sd_diff = np.max(np.abs(np.log(sd / target_sd)))
    statistic = max(mean_diff, sd_diff)
    return _row("variational posterior", label, reference, mean_diff, sd_diff,
                statistic, tolerance,
                "max(mean diff in sd, |log sd ratio|) <= tol (standardised "
                "coordinates)", note=note), fit, weights_map


def _diagnostics_note(table):
    return (f"max R-hat {table['r_hat'].max():.3f}, min bulk ESS "
            f"{table['ess_bulk'].min():.0f}, divergences "
            f"{int(table['divergences'].iloc[0])}")


def _nuts_scores(w, mean, sd):
    """z-scores of NUTS means (MCSE) and sds (sd / sqrt(2 ESS)) against the truth."""
    mcse = np.array([az.mcse(w[..., j], method="mean") for j in range(w.shape[-1])])
    z_mean = (w.mean(axis=(0, 1)) - mean) / mcse
    # ESS of the squared deviations: the quantity the sample sd is made of.
    ess = np.array([az.ess((w[..., j] - mean[j]) ** 2, method="mean")
                    for j in range(w.shape[-1])])
    z_sd = (w.std(axis=(0, 1)) - sd) / (sd / np.sqrt(2 * ess))
    return z_mean, z_sd


def _check_nuts(problem, rng_key, sizes):
    """NUTS with the precisions fixed: z-scores of means and sds, and the
    diagnostics gate (``crosscheck.table.diagnostics_row``)."""
    idata = regression_nuts(problem.X, problem.y, rng_key=rng_key, **sizes,
                            callback=problem.callback, **problem.fixed)
    w = idata.posterior["w"].values
    z_mean, z_sd = _nuts_scores(w, problem.mean, problem.sd)
    statistic = max(np.max(np.abs(z_mean)), np.max(np.abs(z_sd)))
    table = diagnostics(idata)
    mean, sd = w.mean(axis=(0, 1)), w.std(axis=(0, 1))
    return _row("posterior draws", "NUTS", "closed form (z-scores, ESS-based MCSE)",
                np.max(np.abs(mean - problem.mean) / problem.sd),
                np.max(np.abs(sd / problem.sd - 1)), statistic, Z_LIMIT,
                "max |z| <= tol", note=_diagnostics_note(table)), idata


def _check_nuts_hierarchical(problem, rng_key, sizes):
    """NUTS with both precisions sampled vs 2-D quadrature of the exact marginal."""
    idata = regression_nuts(problem.X, problem.y, rng_key=rng_key, **sizes,
                            init_precisions=tuple(problem.fixed.values()),
                            callback=problem.callback)
    table = diagnostics(idata)
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
    mean = w.mean(axis=(0, 1))
    row = _row("hierarchical posterior", "NUTS (hierarchical)",
               "grid quadrature of p(log alpha, log beta | y) (z-scores)",
               np.max(np.abs(mean - exact["E w"]) / problem.sd), np.nan, statistic,
               Z_LIMIT, "max |z| <= tol and grid border mass < 1e-6",
               passed=statistic < Z_LIMIT and exact["border_mass"] < 1e-6,
               note=f"E log-precisions and E w; {_diagnostics_note(table)}; grid "
                    f"border mass {exact['border_mass']:.1e}")
    return row, idata, precisions
