"""The tutorial's checklist items that need no real data, shown and checked.

    python scripts/tutorial.py [--seed 0] [--out out] [--quiet] [--fast]
                               [--device auto|cpu|gpu]

Articles 1-4 of the tutorial (docs/ and ../shared/design/ARTICLES.md, section 6),
each item on simulated data with the check that verifies it:

1. Maximum likelihood (OLS) through QR recovers the true weights within their
   standard errors, and the posterior mean tends to it as the prior precision
   vanishes (``models.linear_regression.least_squares``, ``posterior``).
4. The latent class model of the hiring example: 5 answers of 3 levels
   explained by a latent "ability" of 3 classes, fitted by EM
   (``inference.em.fit_latent_class``) with 15% of the answers missing; the
   full joint table needs V^m - 1 = 242 numbers, the latent class model
   (L - 1) + m L (V - 1) = 32.
9. EM recovers a Gaussian mixture's parameters up to a permutation, and random
   restarts reach different local optima (the best is kept).
10. Gradient ascent on the raw weights and covariances leaves the simplex and
    the positive-definite cone; EM and ascent on unconstrained coordinates do
    not (``inference.gradient_ascent``).
12. The multinomial mixture's lower bound (``lower_bound``) is below the
    log-likelihood, touches it after each E-step, and both climb with EM.

Writes into ``<out>/tutorial/``: ``summary.json`` (every check) and PNG figures.
"""

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse
from scipy.stats import chi2

from latentmix.data.datasets import load_old_faithful
from latentmix.inference.align import align_components
from latentmix.inference.crosscheck import crosscheck_latent_class
from latentmix.inference.em import (
    ConvergenceWarning,
    fit_gaussian_mixture,
    fit_gaussian_mixture_restarts,
    fit_latent_class,
    fit_multinomial_mixture,
)
from latentmix.inference.gradient_ascent import (
    em_iterations,
    raw_gradient_ascent,
    reparametrised_gradient_ascent,
)
from latentmix.models import latent_class as lc
from latentmix.models import multinomial_mixture as mm
from latentmix.models.gaussian_mixture import GMMParams
from latentmix.models.linear_regression import least_squares, posterior
from latentmix.scripts import device
from latentmix.scripts import runtime as rt

HIRING_VARIABLES = ("high-school grades", "university GPA", "IQ test",
                    "phone screen", "on-site interview")
HIRING_LEVELS = ("low", "medium", "high")
ABILITY = ("lower", "middle", "upper")


def check(item: int, step: str, verified_by: str, value, tolerance, rule: str,
          passed: bool, test: str = "") -> dict:
    """One derivation step next to the check that verifies it.

    ``step`` and ``verified_by`` are plain text with ``_{...}`` and ``^{...}``
    marking subscripts and superscripts (``scripts.report.maths_html``).
    """
    return {"item": item, "step": step, "check": verified_by, "value": float(value),
            "tolerance": float(tolerance), "rule": rule, "passed": bool(passed),
            "test": test}


# --- item 1 ---------------------------------------------------------------------------


def ols_item(seed: int):
    rng = np.random.default_rng(seed)
    true_w = np.array([1.0, -2.0, 0.5, 3.0])
    X = np.column_stack([np.ones(100), rng.normal(size=(100, 3))])
    y = X @ true_w + rng.normal(0.0, 0.8, 100)
    fit = least_squares(X, y)
    z = (np.asarray(fit.weights) - true_w) / np.asarray(fit.standard_errors)
    alphas = np.logspace(-6, 1, 15)
    w_ols = np.asarray(fit.weights)
    gaps = np.array([np.linalg.norm(np.asarray(posterior(X, y, a, 1.0).mean) - w_ols)
                     for a in alphas])
    first_order = alphas * np.linalg.norm(np.linalg.solve(X.T @ X, w_ols))
    ratio = gaps[0] / first_order[0]
    checks = [
        check(1, "ŵ = argmax_{w} ∏_{i} N(y_{i} | "
                 "x_{i}^{T}w, σ²) = (X^{T}X)^{−1}"
                 "X^{T}y, solved as Rŵ = Q^{T}y (X = QR)",
              "max |ŵ_{j} − w_{j}| / se_{j} on simulated data "
              "(true w known)", np.max(np.abs(z)), 4.0, "value < tolerance (t, 96 df)",
              np.max(np.abs(z)) < 4.0,
              "test_least_squares_equals_an_svd_solve_and_recovers_the_true_weights"),
        check(1, "μ_{N} = (X^{T}X + (α/β) I)^{−1}X^{T}y "
                 "→ ŵ as α → 0",
              "‖μ_{N} − ŵ‖ over its first-order value "
              "(α/β)‖(X^{T}X)^{−1}ŵ‖ at α = 10^{−6}",
              abs(ratio - 1), 1e-3, "|ratio − 1| < tolerance", abs(ratio - 1) < 1e-3,
              "test_posterior_mean_tends_to_least_squares_as_the_prior_vanishes"),
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.3))
    positions = np.arange(4)
    left.errorbar(positions, w_ols, yerr=2 * np.asarray(fit.standard_errors),
                  fmt="o", label="OLS ŵ ± 2 se")
    left.plot(positions, true_w, "kx", ms=9, label="true w")
    left.set(xticks=positions, xticklabels=["bias", "x₁", "x₂", "x₃"],
             ylabel="weight", title="Maximum likelihood on 100 simulated rows")
    left.legend(fontsize=8)
    right.loglog(alphas, gaps, "o-", label="‖posterior mean − ŵ‖")
    right.loglog(alphas, first_order, "k--", lw=0.8,
                 label="first order (α/β)‖(XᵀX)⁻¹ŵ‖")
    right.set(xlabel="prior precision α (β = 1)", ylabel="distance",
              title="The posterior mean tends to OLS")
    right.legend(fontsize=8)
    fig.tight_layout()
    return checks, fig


# --- item 4 ---------------------------------------------------------------------------


def hiring_truth():
    """Three ability classes; higher ability shifts every answer upwards."""
    shift = {0: [0.6, 0.3, 0.1], 1: [0.2, 0.6, 0.2], 2: [0.05, 0.25, 0.7]}
    probs = np.array([[shift[c]] * len(HIRING_VARIABLES) for c in range(3)])
    # The phone screen is a noisier signal than the rest.
    probs[:, 3] = 0.5 * probs[:, 3] + 0.5 / 3
    return lc.LatentClassParams(np.array([0.3, 0.45, 0.25]), probs)


def latent_class_item(seed: int, num_restarts: int):
    truth = hiring_truth()
    answers, _ = lc.sample(truth, 2000, rng_key=jax.random.key(seed),
                           missing_rate=0.15)
    fit = fit_latent_class(answers, 3, num_values=3, num_restarts=num_restarts,
                           rng_key=jax.random.key(seed + 1))
    # The same model by AutoDelta MAP (flat priors: the mode is EM's optimum).
    cross = crosscheck_latent_class(answers, 3, num_values=3,
                                    rng_key=jax.random.key(seed + 2),
                                    num_restarts=num_restarts, methods=("map",))
    map_row = cross.table.set_index("check").loc["EM vs AutoDelta MAP"]
    aligned, _ = align_components(fit.params, truth)
    trace = np.asarray(fit.trace[: int(fit.num_iters)])
    num_variables, num_values, num_classes = len(HIRING_VARIABLES), 3, 3
    cells = np.array(list(itertools.product(range(num_values),
                                            repeat=num_variables)))
    total = float(np.exp(np.asarray(lc.log_likelihood(fit.params, cells))).sum())
    full = lc.full_table_num_parameters(num_variables, num_values)
    latent = lc.num_parameters(num_classes, num_variables, num_values)
    max_error = float(np.max(np.abs(np.asarray(aligned.probs) - truth.probs)))
    checks = [
        check(4, "p(x) = Σ_{l} w_{l} ∏_{j} "
                 "p_{lj}[x_{j}]: a distribution over all "
                 "V^{m} = 243 answer patterns",
              "|Σ over the 243 enumerated patterns − 1|", abs(total - 1), 1e-12,
              "value < tolerance", abs(total - 1) < 1e-12,
              "test_the_joint_table_sums_to_one_over_all_v_to_the_m_cells"),
        check(4, "parameters: full table V^{m} − 1 = "
                 f"{full}; latent class (L − 1) + mL(V − 1) = {latent}",
              "the unconstrained dimension NumPyro gives the model",
              latent, 32, "value = tolerance", latent == 32 and full == 242,
              "test_parameter_counts_against_numpyro_and_the_hiring_example"),
        check(4, "EM: γ_{il} ∝ w_{l} ∏_{j} "
                 "p_{lj}[x_{ij}]; w_{l} = mean γ_{il}; "
                 "p_{ljv} = Σ γ_{il}[x_{ij} = v] / "
                 "Σ γ_{il}[x_{ij} observed]",
              "largest decrease of the EM log-likelihood trace",
              max(0.0, -float(np.min(np.diff(trace)))) if len(trace) > 1 else 0.0,
              1e-12, "value ≤ tolerance",
              len(trace) < 2 or float(np.min(np.diff(trace))) >= -1e-12,
              "test_trace_never_decreases_and_reports_the_model_log_likelihood"),
        check(4, "MAP of the NumPyro model (flat Dirichlet priors) = EM's "
                 "maximum-likelihood estimate",
              "max |AutoDelta − EM| over weights and probabilities",
              map_row["statistic"], map_row["tolerance"], map_row["rule"],
              bool(map_row["passed"]), "test_crosscheck_em_map_and_nuts_agree"),
        check(4, "the fit recovers the simulated classes (2,000 candidates, 15% of "
                 "answers missing)",
              "max |p̂_{ljv} − p_{ljv}| after aligning classes",
              max_error, 0.08, "value < tolerance (≈ 4 binomial se)",
              max_error < 0.08,
              "test_em_recovers_simulated_classes_up_to_a_permutation"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 3.4),
                             gridspec_kw={"wspace": 0.55})
    for ax, params, title in ((axes[0], truth, "simulated truth"),
                              (axes[1], aligned, "EM fit")):
        # P(answer "high") per class and variable.
        image = ax.imshow(np.asarray(params.probs)[:, :, 2], vmin=0, vmax=1,
                          cmap="viridis", aspect="auto")
        ax.set_xticks(range(num_variables), HIRING_VARIABLES, rotation=25,
                      ha="right", fontsize=8)
        weights = np.asarray(params.weights)
        ax.set_yticks(range(3), [f"{name} ({w:.2f})" for name, w in
                                 zip(ABILITY, weights, strict=True)])
        ax.set_title(f"{title}: P(answer = high)")
        for (row, col), value in np.ndenumerate(np.asarray(params.probs)[:, :, 2]):
            ax.annotate(f"{value:.2f}", (col, row), ha="center", va="center",
                        fontsize=8, color="w" if value < 0.5 else "k")
    fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
    fig.suptitle("Latent class model of the hiring example (ability class, "
                 "its weight)", fontsize=10, y=1.06)
    facts = {"num_candidates": 2000, "missing_share": float(np.mean(answers < 0)),
             "full_table_parameters": full, "latent_class_parameters": latent,
             "num_iters": int(fit.num_iters), "log_likelihood": float(
                 fit.log_likelihood), "max_probs_error": max_error,
             "weights_fit": np.asarray(aligned.weights),
             "weights_true": truth.weights}
    return checks, fig, facts


# --- item 9 ---------------------------------------------------------------------------


def _ellipse(ax, mean, cov, **style):
    values, vectors = np.linalg.eigh(cov)
    radius = np.sqrt(chi2.ppf(0.95, 2))
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    ax.add_patch(Ellipse(mean, 2 * radius * np.sqrt(values[-1]),
                         2 * radius * np.sqrt(values[0]), angle=angle, fill=False,
                         **style))


def gmm_item(seed: int, num_restarts: int):
    rng = np.random.default_rng(seed)
    truth = GMMParams(np.array([0.5, 0.3, 0.2]),
                      np.array([[0.0, 0.0], [8.0, 1.0], [1.0, 9.0]]),
                      np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]],
                                [[0.8, 0.0], [0.0, 0.8]]]))
    labels = rng.choice(3, 3000, p=truth.weights)
    x = np.stack([rng.multivariate_normal(truth.means[k], truth.covariances[k])
                  for k in labels])
    fit = fit_gaussian_mixture(x, 3, num_restarts=5, rng_key=jax.random.key(seed),
                               tol=1e-10, max_iters=1000)
    aligned, _ = align_components(fit.params, truth)
    n_k = 3000 * truth.weights
    variances = np.diagonal(truth.covariances, axis1=1, axis2=2)
    z_means = np.abs(np.asarray(aligned.means) - truth.means) / np.sqrt(
        variances / n_k[:, None])
    cov_se = np.sqrt((variances[:, :, None] * variances[:, None, :]
                      + truth.covariances**2) / n_k[:, None, None])
    z_covs = np.abs(np.asarray(aligned.covariances) - truth.covariances) / cov_se
    z_weights = np.abs(np.asarray(aligned.weights) - truth.weights) / np.sqrt(
        truth.weights * (1 - truth.weights) / 3000)
    worst = float(max(z_means.max(), z_covs.max(), z_weights.max()))

    # Local optima: five clusters, K = 5, starts at random rows.
    centres = np.array([[0, 0], [4, 0], [0, 4], [4, 4], [9, 2]], float)
    cluster = rng.choice(5, 1000, p=[0.3, 0.2, 0.2, 0.2, 0.1])
    y = centres[cluster] + rng.normal(size=(1000, 2)) * 0.8
    restarts = fit_gaussian_mixture_restarts(
        y, 5, init="random_from_data", num_restarts=num_restarts,
        rng_key=jax.random.key(seed + 1), max_iters=1000, tol=1e-8)
    scores = np.asarray(restarts.results.log_likelihood)
    distinct = np.unique(np.round(scores, 3))
    checks = [
        check(9, "EM's fixed point on well-separated data is the truth up to a "
                 "permutation of the labels",
              "largest |estimate − truth| in Monte Carlo standard errors over "
              "18 weights, means and covariance entries",
              worst, 4.0, "value < tolerance", worst < 4.0,
              "test_recovers_true_parameters_up_to_a_permutation"),
        check(9, "EM climbs to a local maximum: different starts, different optima",
              f"distinct converged optima among {len(scores)} restarts",
              len(distinct), 2, "value ≥ tolerance", len(distinct) >= 2,
              "test_restarts_reach_different_local_optima_and_the_best_is_kept"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].scatter(x[:, 0], x[:, 1], s=3, c="0.6")
    for c in range(3):
        _ellipse(axes[0], truth.means[c], truth.covariances[c], color="k", lw=2,
                 ls="--")
        _ellipse(axes[0], np.asarray(aligned.means[c]),
                 np.asarray(aligned.covariances[c]), color=f"C{c}", lw=1.5)
    axes[0].set(title="Recovery: truth (dashed) and EM (colour)", xlabel="x₁",
                ylabel="x₂")
    order = np.argsort(-scores)
    axes[1].plot(np.arange(len(scores)), scores[order], "o")
    axes[1].set(xlabel="restart (sorted)", ylabel="mean log-likelihood per row",
                title=f"{len(scores)} restarts, {len(distinct)} distinct optima")
    worst_restart = int(order[-1])
    for ax_index, (restart, label) in enumerate(((int(order[0]), "best"),
                                                 (worst_restart, "worst"))):
        params = jax.tree_util.tree_map(lambda a, r=restart: np.asarray(a[r]),
                                        restarts.results.params)
        style = {"color": "C3" if ax_index else "C2", "lw": 1.5}
        if ax_index == 0:
            axes[2].scatter(y[:, 0], y[:, 1], s=3, c="0.6")
        for c in range(5):
            _ellipse(axes[2], params.means[c], params.covariances[c],
                     ls="-" if ax_index == 0 else ":", **style)
        axes[2].plot([], [], label=f"{label} optimum ({scores[restart]:.3f})",
                     ls="-" if ax_index == 0 else ":", **style)
    axes[2].set(title="Five clusters, K = 5: two optima", xlabel="x₁")
    axes[2].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    facts = {"worst_z": worst, "restart_scores": scores,
             "num_distinct_optima": int(len(distinct))}
    return checks, fig, facts


# --- item 10 --------------------------------------------------------------------------


def gradient_item():
    x = load_old_faithful()[["eruptions", "waiting"]].to_numpy(np.float64)
    cov = np.cov(x.T, bias=True)
    init = GMMParams(np.array([0.5, 0.5]), np.quantile(x, [0.25, 0.75], axis=0),
                     np.stack([cov, cov]))
    steps = 40
    paths = {
        "raw ascent, η = 0.05": raw_gradient_ascent(x, init, learning_rate=0.05,
                                                    num_steps=steps),
        "raw ascent, η = 5": raw_gradient_ascent(x, init, learning_rate=5.0,
                                                 num_steps=steps),
        "log-Cholesky/softmax ascent, η = 0.05": reparametrised_gradient_ascent(
            x, init, learning_rate=0.05, num_steps=steps),
        "EM": em_iterations(x, init, num_steps=steps),
    }
    raw_small, raw_large = paths["raw ascent, η = 0.05"], paths["raw ascent, η = 5"]
    em, reparam = paths["EM"], paths["log-Cholesky/softmax ascent, η = 0.05"]
    first_sum = float(raw_small.weight_sum[1])
    min_eig = float(np.min(raw_large.min_eigenvalue))
    kept = bool(np.all(np.abs(np.asarray(em.weight_sum) - 1) < 1e-12)
                and np.all(np.asarray(em.min_eigenvalue) > 0)
                and np.all(np.abs(np.asarray(reparam.weight_sum) - 1) < 1e-12)
                and np.all(np.asarray(reparam.min_eigenvalue) > 0))
    checks = [
        check(10, "raw ascent: ∂f/∂w_{k} = (1/n) Σ_{i} "
                  "N_{ik}/p(x_{i}) > 0, so Σ_{k}w_{k} "
                  "becomes 1 + ηK after one step",
              "Σ w after one raw step (η = 0.05, K = 2) minus 1 + ηK",
              abs(first_sum - 1.1), 1e-10, "value < tolerance",
              abs(first_sum - 1.1) < 1e-10,
              "test_first_raw_step_moves_the_weight_sum_to_one_plus_eta_k"),
        check(10, "raw ascent: Σ + (η/2)(Σ^{−1}SΣ^{−1} − "
                  "Σ^{−1}) overshoots below 0 along a small-variance "
                  "direction",
              "smallest covariance eigenvalue along the raw path, η = 5",
              min_eig, 0.0, "value < tolerance (left the cone)", min_eig < 0,
              "test_raw_step_drives_a_small_variance_below_zero_where_the_closed_"
              "form_says"),
        check(10, "EM's M-step (weighted mean and scatter) and ascent on "
                  "softmax/log-Cholesky coordinates stay on the constraint sets",
              "every iterate: |Σ w − 1| < 10^{−12} and Cholesky succeeds",
              0.0 if kept else 1.0, 0.0, "value = tolerance", kept,
              "test_em_and_the_reparametrised_ascent_keep_every_constraint_on_old_"
              "faithful"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    styles = {"raw ascent, η = 0.05": ("C3", "-"), "raw ascent, η = 5": ("C1", "-"),
              "log-Cholesky/softmax ascent, η = 0.05": ("C0", "--"),
              "EM": ("k", ":")}
    for label, path in paths.items():
        color, line = styles[label]
        axes[0].plot(np.asarray(path.weight_sum), color=color, ls=line, label=label)
        axes[1].plot(np.asarray(path.min_eigenvalue), color=color, ls=line)
        axes[2].plot(np.asarray(path.mean_log_likelihood), color=color, ls=line)
    axes[0].set(xlabel="step", ylabel="Σ w", title="Weights: on the simplex?",
                yscale="log")
    axes[0].legend(fontsize=7)
    axes[1].axhline(0, color="0.5", lw=0.8)
    axes[1].set(xlabel="step", ylabel="smallest eigenvalue of any Σ",
                title="Covariances: positive definite?", yscale="symlog")
    axes[2].set(xlabel="step", ylabel="mean log-likelihood",
                title="f where the iterate is a mixture (gaps: not one)")
    fig.suptitle("Old Faithful, K = 2, from one start", fontsize=10)
    fig.tight_layout()
    return checks, fig


# --- item 12 --------------------------------------------------------------------------


def vlb_item(seed: int, num_steps: int):
    truth = mm.MultinomialMixtureParams(
        np.array([0.5, 0.3, 0.2]),
        np.random.default_rng(seed).dirichlet(np.ones(6), size=3))
    counts, _ = mm.sample(truth, np.full(300, 8), rng_key=jax.random.key(seed))
    params = mm.MultinomialMixtureParams(
        np.full(3, 1 / 3), np.random.default_rng(seed + 1).dirichlet(
            np.full(6, 12.0), size=3))
    log_liks, bounds, touching = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one step per call
        for _ in range(num_steps):
            q = np.asarray(mm.responsibilities(params, counts))
            ll = float(jnp.sum(mm.log_likelihood(params, counts)))
            touching.append(abs(float(mm.lower_bound(params, counts, q)) - ll))
            params = fit_multinomial_mixture(counts, 3, init=params, max_iters=1,
                                             tol=0.0).params
            log_liks.append(ll)
            bounds.append(float(mm.lower_bound(params, counts, q)))
    log_liks.append(float(jnp.sum(mm.log_likelihood(params, counts))))
    log_liks, bounds = np.array(log_liks), np.array(bounds)
    worst_drop = max(0.0, -min(np.diff(log_liks).min(), np.diff(bounds).min()))
    checks = [
        check(12, "VLB(q, θ) = Σ_{i}Σ_{k} q_{ik}[log "
                  "α_{k} + log Mult(x_{i} | β_{k}) − log "
                  "q_{ik}] ≤ log p(X | θ), gap Σ_{i} KL(q_{i} "
                  "‖ p(t_{i} | x_{i}))",
              "largest VLB(q_{t}, θ_{t+1}) − log p(X | "
              "θ_{t+1})", float(np.max(bounds - log_liks[1:])), 1e-9,
              "value ≤ tolerance", float(np.max(bounds - log_liks[1:])) <= 1e-9,
              "test_lower_bound_is_below_the_log_likelihood_by_the_kl_divergence"),
        check(12, "E-step: q_{ik} = γ_{ik} closes the gap",
              "largest |VLB(γ_{t}, θ_{t}) − log p(X | θ_{t})|",
              max(touching), 1e-9, "value ≤ tolerance", max(touching) <= 1e-9,
              "test_lower_bound_and_log_likelihood_over_em_iterations"),
        check(12, "M-step then E-step: both the VLB and log p(X | θ) never decrease",
              "largest decrease of either over the iterations", worst_drop, 1e-9,
              "value ≤ tolerance", worst_drop <= 1e-9,
              "test_lower_bound_and_log_likelihood_over_em_iterations"),
    ]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = np.arange(len(log_liks))
    ax.plot(steps, log_liks, "o-", ms=3, label="log p(X | θₜ)")
    ax.plot(steps[1:], bounds, "s--", ms=3,
            label="VLB(qₜ₋₁, θₜ): E-step q, then M-step θ")
    ax.set(xlabel="EM iteration t", ylabel="nats (300 baskets)",
           title="Multinomial mixture: the bound below the log-likelihood")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return checks, fig


# --- main -----------------------------------------------------------------------------


def run(args) -> dict:
    """Every item, its checks and its figure; returns a dict like the stories.

    Keys: ``summary``, ``checks`` (one dict per derivation step: item, step
    (HTML), check, value, tolerance, rule, passed, test), ``figures``
    [(path, caption)], ``facts`` (numbers quoted by the report), ``timings``,
    ``warnings``, ``files``, ``all_passed``, ``tables`` (empty).
    """
    started = time.perf_counter()
    out = rt.prepare_output_dir(Path(args.out) / "tutorial", overwrite=True)
    progress = rt.Progress(quiet=args.quiet)
    timings, messages, figures, checks, facts = {}, [], [], [], {}
    restarts = 10 if not args.fast else 4

    def save(fig, name, caption):
        path = rt.save_figure(fig, out / name, messages)
        if path is not None:
            figures.append((str(path), caption))

    with rt.StepTimer(timings, "item 1: least squares", progress):
        new, fig = ols_item(args.seed)
        checks += new
        save(fig, "ols.png", "Item 1: OLS recovers the true weights; the posterior "
             "mean tends to it as the prior precision vanishes")
    with rt.StepTimer(timings, "item 4: latent class model", progress):
        new, fig, facts["latent_class"] = latent_class_item(args.seed, restarts)
        checks += new
        save(fig, "latent_class.png", "Item 4: the latent class model of the "
             "hiring example, truth and EM fit")
    with rt.StepTimer(timings, "item 9: GMM recovery and local optima", progress):
        new, fig, facts["gmm"] = gmm_item(args.seed, 20 if not args.fast else 10)
        checks += new
        save(fig, "gmm_recovery.png", "Item 9: recovery up to a permutation, and "
             "restarts reaching different local optima")
    with rt.StepTimer(timings, "item 10: gradient ascent", progress):
        new, fig = gradient_item()
        checks += new
        save(fig, "gradient_ascent.png", "Item 10: raw gradient ascent leaves the "
             "constraints, EM and a reparametrised ascent do not")
    with rt.StepTimer(timings, "item 12: lower bound", progress):
        new, fig = vlb_item(args.seed, 25)
        checks += new
        save(fig, "lower_bound.png", "Item 12: the VLB and the log-likelihood over "
             "EM iterations")
    all_passed = all(row["passed"] for row in checks)
    failed = [f"item {row['item']}: {row['check']}" for row in checks
              if not row["passed"]]
    summary = (f"{sum(row['passed'] for row in checks)} of {len(checks)} tutorial "
               f"checks passed" + (f"; FAILED: {'; '.join(failed)}" if failed
                                   else "") + ".")
    timings["total"] = time.perf_counter() - started
    files = {"summary": str(rt.write_json(out / "summary.json", {
        "summary": summary, "all_passed": all_passed, "checks": checks,
        "facts": facts, "timings": timings, "warnings": messages}))}
    if not args.quiet:
        print(summary)
    return {"summary": summary, "checks": checks, "figures": figures,
            "facts": facts, "timings": timings, "warnings": messages,
            "files": files, "all_passed": all_passed, "tables": []}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="data and EM seed")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--fast", action="store_true", help="fewer restarts")
    device.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Command-line entry point: parse, configure JAX, run, exit status."""
    arguments = parse_args(argv)
    rt.use_agg_backend()
    device.configure_or_exit(arguments.device, dtype="float64", host_devices=4)
    try:
        result = run(arguments)
    except rt.OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return rt.EXIT_OUTPUT
    return rt.EXIT_OK if result["all_passed"] else rt.EXIT_NUMERIC


if __name__ == "__main__":
    sys.exit(main())
