"""Gaussian mixture on Old Faithful, fitted four ways: EM, MAP, VI and NUTS.

    python scripts/gaussian_mixture.py [--seed 0] [--out out] [--quiet] [--fast]
                                       [--num-components 2] [--device auto|cpu|gpu]

Model (``models/gaussian_mixture.py``): t_i ~ Categorical(weights),
x_i | t_i = c ~ N(means_c, covariances_c), full covariances, with the assignments
summed out; the Bayesian steps put the conjugate default prior on the parameters
(Dirichlet(1) weights, normal / inverse-Wishart means and covariances, weak and
data-dependent: ``default_prior``). Data: the 272 eruptions of the Old Faithful
geyser (eruption length and waiting time, in minutes).

Steps, each checked against an independent reference:

1. EM with restarts (``inference.em.fit_gaussian_mixture``) against
   scikit-learn's GaussianMixture: the same best log-likelihood with the same
   number of restarts, and the same parameters after 20 iterations from the same
   start; its log-likelihood trace never decreases.
2. MAP-EM (EM with the prior's closed-form M-step) against NumPyro's AutoDelta
   MAP (``fit_map``) on the same model and prior.
3. NUTS (4 chains; two start at the EM estimate, two at the same estimate with
   the component labels swapped, so the raw draws show label switching), then
   ``relabel_samples`` against the EM fit: R-hat before and after, and the EM
   estimate inside every 94% HDI.
4. Mean-field VI (``fit_vi``, started at EM) against the NUTS means.
5. BIC (``gmm_bic``) against scikit-learn's ``bic``; BIC, AIC and ICL for
   K = 1..6 (``select_num_components``).
6. NUTS also at K = 1 and 3 (K = 1 with --fast), through the estimator's
   ``sample_posterior``, so that the demo's report compares K by LOO and WAIC
   (az.compare on the pointwise log_likelihood groups) beside BIC.

Writes into ``<out>/gaussian_mixture/``: ``cross_check.csv``, ``selection.csv``,
``diagnostics.csv``, ``params.json``, the relabelled posterior as ArviZ netCDF
(``posterior.nc``) and PNG figures (data with component ellipses from EM and
posterior draws, the log-likelihood traces of all restarts, snapshots of EM
iterations, posterior marginals with the EM value marked, BIC/AIC/ICL against K,
R-hat before and after relabelling).

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
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Ellipse
from scipy.stats import chi2

from latentmix.data.datasets import load_old_faithful
from latentmix.data.validation import DataWarning
from latentmix.inference.crosscheck import (
    CrossCheckWarning,
    crosscheck_gaussian_mixture,
)
from latentmix.inference.crosscheck.gaussian_mixture import fit_map_em
from latentmix.inference.crosscheck.mixtures import HDI_PROB
from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.inference.mcmc import RHAT_THRESHOLD, SamplerWarning, diagnostics
from latentmix.inference.selection import select_num_components
from latentmix.models import gaussian_mixture as gm
from latentmix.scripts import device
from latentmix.scripts import runtime as rt
from latentmix.scripts.posterior_figures import plot_em_vs_nuts

FEATURES = ("eruptions", "waiting")
REG_COVAR = 1e-6  # scikit-learn's default floor, used by both sides
RHAT_MAX = RHAT_THRESHOLD  # Vehtari et al. (2021)
ELLIPSE_MASS = 0.95  # probability inside each drawn ellipse


class Settings(NamedTuple):
    """Run sizes; --fast shrinks them (the tolerances do not depend on them)."""

    num_restarts: int
    max_iters: int
    em_tol: float
    map_steps: int
    vi_steps: int
    vi_draws: int
    num_warmup: int
    num_samples: int
    k_values: tuple
    snapshot_iters: tuple
    max_snapshot_iters: int
    num_drawn_ellipses: int
    optimisers: bool  # run AutoDelta MAP and VI
    loo_k_values: tuple  # NUTS at these K too, for LOO/WAIC across K


# Run time is compilation, one program per method and shape (every K of the model
# selection is one), not iterations or draws, so --fast skips programs rather than
# shrinking them: no AutoDelta MAP or VI (tests/test_gmm_bayes.py checks both),
# K = 1, 2 only, and a shorter NUTS warmup (the chains start at the mode). NUTS
# keeps 400 draws per chain: with 300 (and 300 warmup) R-hat of the relabelled
# draws measured 1.011, too noisy to hold 1.01; with 400-500 it measured <= 1.006.
FULL = Settings(num_restarts=10, max_iters=1000, em_tol=1e-10, map_steps=2000,
                vi_steps=1500, vi_draws=4000, num_warmup=500, num_samples=500,
                k_values=(1, 2, 3, 4, 5, 6), snapshot_iters=(0, 1, 2, 5, 10, 20),
                max_snapshot_iters=500, num_drawn_ellipses=20, optimisers=True,
                loo_k_values=(1, 3))
FAST = FULL._replace(k_values=(1, 2), optimisers=False, num_warmup=200,
                     num_samples=400, loo_k_values=(1,))


def faithful_data() -> np.ndarray:
    """Old Faithful as a (272, 2) float64 array (eruption length, waiting time)."""
    return load_old_faithful()[list(FEATURES)].to_numpy(dtype=np.float64)


def em_path(x, start, settings):
    """Parameters after each EM iteration from ``start`` until the stopping rule.

    One-iteration fits chained through ``init`` (one compiled program for all);
    the same iterations as a single fit, since the start of each is the end of the
    previous one. Returns ([GMMParams after 0, 1, ... iterations], [objective]).
    """
    path, values = [start], []
    params = start
    with warnings.catch_warnings():
        # max_iters=1 never "converges"; the loop below applies the stopping rule.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(settings.max_snapshot_iters):
            step = fit_gaussian_mixture(x, start.weights.shape[0], init=params,
                                        max_iters=1, tol=0.0, reg_covar=REG_COVAR)
            # trace[0]: the objective at the parameters entering the iteration.
            values.append(float(step.trace[0]))
            params = gm.GMMParams(*(np.asarray(leaf) for leaf in step.params))
            path.append(params)
            # Run at least the iterations shown and compared with scikit-learn.
            enough = len(values) > max(settings.snapshot_iters)
            if enough and abs(values[-1] - values[-2]) < settings.em_tol:
                break
    values.append(float(step.log_likelihood))  # at the last parameters
    return path, values


# --- figures ----------------------------------------------------------------------


def _ellipse(ax, mean, covariance, **style):
    """The ELLIPSE_MASS probability contour of N(mean, covariance)."""
    values, vectors = np.linalg.eigh(covariance)
    radius = np.sqrt(chi2.ppf(ELLIPSE_MASS, 2))
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    ax.add_patch(Ellipse(mean, 2 * radius * np.sqrt(values[-1]),
                         2 * radius * np.sqrt(values[0]), angle=angle, fill=False,
                         **style))


def plot_data_ellipses(x, em, relabelled, settings, seed):
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.scatter(x[:, 0], x[:, 1], s=8, color="0.5", alpha=0.7, label="data")
    posterior = relabelled.posterior
    num_chains, num_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    rng = np.random.default_rng(seed)
    picks = rng.choice(num_chains * num_draws, settings.num_drawn_ellipses,
                       replace=False)
    means = posterior["means"].values.reshape((-1,) + em.params.means.shape)
    covs = posterior["covariances"].values.reshape(
        (-1,) + em.params.covariances.shape)
    for pick in picks:
        for c in range(em.params.weights.shape[0]):
            _ellipse(ax, means[pick, c], covs[pick, c], color=f"C{c}", lw=0.5,
                     alpha=0.5)
    for c in range(em.params.weights.shape[0]):
        _ellipse(ax, np.asarray(em.params.means[c]),
                 np.asarray(em.params.covariances[c]), color=f"C{c}", lw=2.5,
                 label=f"EM component {c} (weight {float(em.params.weights[c]):.2f})")
    ax.set_xlabel("eruption length (min)")
    ax.set_ylabel("waiting time (min)")
    ax.set_title(f"Old Faithful: {ELLIPSE_MASS:.0%} ellipses, EM (thick) and "
                 f"{settings.num_drawn_ellipses} NUTS draws (thin)")
    ax.legend(loc="upper left", fontsize=8)
    ax.autoscale_view()
    return fig


def plot_traces(restarts, path_values, sklearn_ll):
    """Objective against completed iterations: k-means++ restarts, naive start."""
    results = restarts.results
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in range(len(restarts.failed)):
        # trace[t] is the objective at the parameters after t iterations.
        count = int(results.num_iters[r])
        style = ({"color": "C3", "lw": 2.0, "label": "best k-means++ restart",
                  "zorder": 3}
                 if r == restarts.best_index else {"color": "0.6", "lw": 0.8})
        ax.plot(np.arange(count), np.asarray(results.trace[r, :count]), marker=".",
                **style)
    ax.plot(np.arange(len(path_values)), path_values, color="C0", marker=".",
            label="naive start (snapshot figure)")
    ax.axhline(sklearn_ll, color="k", ls="--", lw=0.8,
               label="sklearn best of restarts")
    ax.set_xlabel("EM iterations completed")
    ax.set_ylabel("mean log-likelihood per row")
    ax.set_title(f"EM log-likelihood: {len(restarts.failed)} k-means++ restarts "
                 "and a naive start")
    ax.legend(loc="lower right")
    return fig


def plot_snapshots(x, path, values, settings):
    shown = [t for t in settings.snapshot_iters if t < len(path) - 1]
    shown.append(len(path) - 1)
    fig, axes = plt.subplots(2, (len(shown) + 1) // 2, figsize=(12, 7), sharex=True,
                             sharey=True)
    responsibilities = jax.jit(gm.responsibilities)  # one compile for all panels
    for ax, t in zip(axes.ravel(), shown, strict=False):
        params = path[t]
        resp = np.asarray(responsibilities(params, x))
        ax.scatter(x[:, 0], x[:, 1], s=6, c=resp[:, 0], cmap="coolwarm",
                   vmin=0, vmax=1)
        for c in range(params.weights.shape[0]):
            _ellipse(ax, params.means[c], params.covariances[c], color=f"C{c}", lw=2)
            ax.plot(*params.means[c], "x", color=f"C{c}", ms=9, mew=2)
        label = "start" if t == 0 else f"after {t} iteration{'s' * (t > 1)}"
        if t == len(path) - 1 and t > 0:
            label = f"converged after {t}"
        ax.set_title(f"{label}: log-lik {values[t]:.4f}", fontsize=9)
        ax.autoscale_view()
    for ax in axes.ravel()[len(shown):]:
        ax.set_visible(False)
    fig.supxlabel("eruption length (min)")
    fig.supylabel("waiting time (min)")
    fig.suptitle("EM from a naive start (colour: responsibility of component 0)")
    return fig


def plot_marginals(relabelled, em):
    sites = gm.to_sites(em.params)
    posterior = relabelled.posterior
    ref_val = {}
    for name, value in sites.items():
        dims = [dim for dim in posterior[name].dims if dim not in ("chain", "draw")]
        value = np.asarray(value)
        ref_val[name] = [dict(zip(dims, map(int, index), strict=True),
                              ref_val=float(f"{value[index]:.3g}"))
                         for index in np.ndindex(value.shape)]
    axes = az.plot_posterior(relabelled, var_names=list(sites), ref_val=ref_val,
                             hdi_prob=HDI_PROB, textsize=7, figsize=(14, 14))
    fig = np.ravel(axes)[0].figure
    fig.suptitle("NUTS posterior (relabelled); orange: EM estimate (3 significant "
                 "digits), with the posterior mass below and above it")
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # panel titles clear of tick labels
    return fig


def plot_selection(table):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in (("bic", "o"), ("aic", "s"), ("icl", "^")):
        ax.plot(table["num_components"], table[name], marker=marker,
                label=name.upper())
    ax.set_xlabel("number of components K")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title("Old Faithful: information criteria against K (EM, restarts)")
    ax.legend()
    return fig


def rhat_frame(raw_rhat, fixed_rhat):
    records = []
    for name, values in raw_rhat.items():
        for index in np.ndindex(values.shape):
            records.append({"parameter": f"{name}{list(index)}",
                            "raw": float(values[index]),
                            "relabelled": float(fixed_rhat[name][index])})
    return pd.DataFrame(records)


def plot_rhat(frame):
    fig, ax = plt.subplots(figsize=(8, 4))
    positions = np.arange(len(frame))
    ax.bar(positions - 0.2, frame["raw"], width=0.4, label="raw draws")
    ax.bar(positions + 0.2, frame["relabelled"], width=0.4, label="relabelled")
    ax.axhline(RHAT_MAX, color="k", ls="--", lw=0.8, label=f"R-hat = {RHAT_MAX}")
    ax.set_xticks(positions, frame["parameter"], rotation=60, ha="right",
                  fontsize=7)
    ax.set_ylim(bottom=0.95)
    ax.set_ylabel("rank-normalised split R-hat")
    ax.set_title("R-hat before and after relabelling against the EM fit")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# --- main -------------------------------------------------------------------------

OUR_WARNINGS = (DataWarning, ConvergenceWarning, SamplerWarning, CrossCheckWarning,
                RuntimeWarning)


def _rhat_by_site(idata, names):
    rhat = az.rhat(idata, var_names=list(names))
    return {name: np.asarray(rhat[name]) for name in names}


def run_all(x, num_components, settings, seed, progress, timings):
    """The library's cross-check plus the story's extras; returns (rows, results)."""
    key_check, key_select = jax.random.split(jax.random.key(seed))
    methods = ("map", "vi", "nuts") if settings.optimisers else ("nuts",)
    check = crosscheck_gaussian_mixture(
        x, num_components, rng_key=key_check, methods=methods,
        num_restarts=settings.num_restarts, max_iters=settings.max_iters,
        tol=settings.em_tol, reg_covar=REG_COVAR, num_warmup=settings.num_warmup,
        num_samples=settings.num_samples, map_steps=settings.map_steps,
        vi_steps=settings.vi_steps, vi_draws=settings.vi_draws,
        same_start_iters=settings.snapshot_iters[-1], label_switching=True,
        progress_fn=progress)
    fits = check.fits
    timings.update(fits["seconds"])
    res = {key: fits[key] for key in ("prior", "em", "restarts", "sklearn", "map",
                                      "vi", "vi_draws", "map_em") if key in fits}
    res.update(raw=fits["nuts"], relabelled=check.idata, start=fits["same_start"])
    if "map_em" not in res:  # --fast: no AutoDelta, the MAP-EM for params.json
        res["map_em"] = fit_map_em(x, res["em"], res["prior"], "full")
    with rt.StepTimer(timings, "EM path from the naive start", progress):
        res["path"], res["path_values"] = em_path(x, res["start"], settings)
    res["diagnostics"] = diagnostics(check.idata)
    names = list(gm.to_sites(res["em"].params))
    res["raw_rhat"] = _rhat_by_site(res["raw"], names)
    res["fixed_rhat"] = _rhat_by_site(check.idata, names)
    with rt.StepTimer(timings, f"model selection, K = {list(settings.k_values)}",
                      progress):
        # The same restarts, tolerance and max_iters as the main fit, so that its
        # K reuses the compiled program.
        res["selection"] = select_num_components(
            x, settings.k_values, criterion="bic", num_restarts=settings.num_restarts,
            rng_key=key_select, tol=settings.em_tol, max_iters=settings.max_iters,
            reg_covar=REG_COVAR)
    with rt.StepTimer(timings, f"NUTS at K = {list(settings.loo_k_values)} for "
                      f"LOO/WAIC across K", progress):
        res["other_k"] = other_k_posteriors(x, settings, seed)
    return check.table.to_dict(orient="records"), res


def other_k_posteriors(x, settings, seed) -> dict:
    """NUTS draws (relabelled, with the pointwise log_likelihood group) at the
    K of ``settings.loo_k_values``, for az.loo / az.compare across K beside the
    main fit: {"K = k": InferenceData}. The estimator's sample_posterior runs
    the same scale-free NUTS as the cross-check, started at its EM fit."""
    from latentmix.inference import GaussianMixture

    posteriors = {}
    for k in settings.loo_k_values:
        model = GaussianMixture(k, n_init=settings.num_restarts, tol=settings.em_tol,
                                max_iter=settings.max_iters, reg_covar=REG_COVAR,
                                random_state=seed).fit(x)
        posteriors[f"K = {k}"] = model.sample_posterior(
            x, "nuts", num_chains=4, num_warmup=settings.num_warmup,
            num_samples=settings.num_samples, random_state=seed + k)
    return posteriors


def write_figures(out, x, res, settings, seed, rhat_table, messages):
    figures = []

    def save(make, filename, caption):
        rt.draw_figure(make, out / filename, caption, figures, messages)

    save(lambda: plot_data_ellipses(x, res["em"], res["relabelled"], settings, seed),
         "data_ellipses.png", "Old Faithful with 95% ellipses of the EM components "
         "(thick) and of posterior draws (thin)")
    save(lambda: plot_traces(res["restarts"], res["path_values"],
                             float(res["sklearn"].score(x))),
         "log_likelihood_trace.png", "EM log-likelihood per iteration, every restart")
    save(lambda: plot_snapshots(x, res["path"], res["path_values"], settings),
         "em_snapshots.png", "EM iterations from a naive start")
    save(lambda: plot_marginals(res["relabelled"], res["em"]),
         "posterior_marginals.png", "Posterior marginals (NUTS, relabelled) with "
         "the EM estimate marked")
    save(lambda: plot_selection(res["selection"].table), "model_selection.png",
         "BIC, AIC and ICL against the number of components")
    save(lambda: plot_em_vs_nuts(
        res["relabelled"], {name: np.asarray(value) for name, value in
                            gm.to_sites(res["em"].params).items()},
        "Old Faithful: EM inside the NUTS posterior"),
        "em_vs_nuts.png", "EM estimate against the relabelled NUTS posterior, "
        "every parameter in posterior sd units")
    save(lambda: plot_rhat(rhat_table), "rhat_relabelling.png",
         "R-hat of every parameter before and after relabelling")
    return figures


def _params_dict(params):
    return {field: np.asarray(value) for field, value in params._asdict().items()}


def summarise(cross, res):
    failed = cross.loc[~cross["passed"], "check"].tolist()
    verdict = "" if not failed else ": FAILED " + "; ".join(failed)
    em = res["em"]
    order = np.argsort(np.asarray(em.params.means[:, 0]))
    weights, means = np.asarray(em.params.weights), np.asarray(em.params.means)
    described = "; ".join(f"weight {weights[c]:.3f} at ({means[c, 0]:.2f} min, "
                          f"{means[c, 1]:.1f} min)" for c in order)
    selection = res["selection"]
    best_aic = int(selection.table["num_components"].iloc[
        int(np.argmin(selection.table["aic"]))])
    best_icl = int(selection.table["num_components"].iloc[
        int(np.argmin(selection.table["icl"]))])
    return (
        f"{int(cross['passed'].sum())} of {len(cross)} cross-checks passed{verdict}. "
        f"EM (best of {len(res['restarts'].failed)} restarts): mean log-likelihood "
        f"{float(em.log_likelihood):.6f}; components {described}. BIC picks K = "
        f"{selection.best_num_components}, AIC K = {best_aic}, ICL K = {best_icl}."
    )


def run(args) -> dict:
    """Run every fit and cross-check, write tables and figures, return a dict.

    Keys: ``summary``, ``warnings``, ``tables`` [(caption, DataFrame)],
    ``figures`` [(path, caption)], ``timings`` {step: seconds}, ``rows`` (the
    cross-check table as records), ``params``, ``selection``, ``diagnostics``,
    ``seeds``, ``files``, ``all_passed``.
    """
    started = time.perf_counter()
    settings = FAST if args.fast else FULL
    num_components = getattr(args, "num_components", 2)
    out = rt.prepare_output_dir(Path(args.out) / "gaussian_mixture", overwrite=True)
    progress = rt.Progress(quiet=args.quiet)
    timings, messages = {}, []
    x = faithful_data()
    rows, res = rt.collect_warnings(
        OUR_WARNINGS,
        lambda: run_all(x, num_components, settings, args.seed, progress, timings),
        messages)
    cross = pd.DataFrame.from_records(rows)
    rhat_table = rhat_frame(res["raw_rhat"], res["fixed_rhat"])
    with rt.StepTimer(timings, "figures", progress):
        figures = write_figures(out, x, res, settings, args.seed, rhat_table,
                                messages)

    selection = res["selection"].table
    diag = res["diagnostics"]
    files = {}
    for label, frame, index in [("cross_check", cross, False),
                                ("selection", selection, False),
                                ("diagnostics", diag, True),
                                ("rhat_relabelling", rhat_table, False)]:
        files[label] = str(rt.atomic_write_text(out / f"{label}.csv",
                                                frame.to_csv(index=index)))
    path = out / "posterior.nc"
    try:
        res["relabelled"].to_netcdf(str(path))
        files["posterior"] = str(path)
    except Exception as error:  # optional output; the CSVs hold the numbers
        messages.append(f"could not write {path}: {error}")

    em, map_em = res["em"], res["map_em"]
    params = {
        "em": {**_params_dict(em.params), "mean_log_likelihood":
               float(em.log_likelihood), "num_iters": int(em.num_iters),
               "converged": bool(em.converged), "trace":
               np.asarray(em.trace[: int(em.num_iters)])},
        "map_em": {**_params_dict(map_em.params), "mean_log_posterior":
                   float(map_em.log_likelihood), "num_iters": int(map_em.num_iters)},
        "autodelta_map": {name: np.asarray(value) for name, value
                          in (res["map"].params if "map" in res else {}).items()},
        "vi_means": {name: value.mean(axis=0)
                     for name, value in res.get("vi_draws", {}).items()},
        "nuts_means": {name: res["relabelled"].posterior[name]
                       .mean(("chain", "draw")).values
                       for name in gm.to_sites(em.params)},
        "sklearn": {"weights": res["sklearn"].weights_,
                    "means": res["sklearn"].means_,
                    "covariances": res["sklearn"].covariances_,
                    "mean_log_likelihood": float(res["sklearn"].score(x))},
        "prior": res["prior"]._asdict(),
        "features": list(FEATURES),
    }
    seeds = {"seed": args.seed, "rng_key": f"jax.random.key({args.seed}), split "
             "into the cross-check's key (em, start, map, vi, nuts; "
             "inference.crosscheck.crosscheck_gaussian_mixture) and select"}
    all_passed = bool(cross["passed"].all())
    summary = summarise(cross, res)
    timings["total"] = time.perf_counter() - started
    diagnostics_records = diag.reset_index(names="parameter").to_dict(orient="records")
    files["params"] = str(rt.write_json(out / "params.json", {
        "summary": summary, "all_passed": all_passed, "fast": bool(args.fast),
        "num_components": num_components, "settings": settings._asdict(),
        "seeds": seeds, "cross_check": rows, "params": params,
        "selection": selection.to_dict(orient="records"),
        "diagnostics": diagnostics_records, "timings": timings,
        "figures": [path for path, _ in figures], "warnings": messages,
    }))

    tables = [("Cross-check (tolerance and rule per row)", cross),
              ("Model selection: BIC, AIC, ICL against K", selection),
              ("NUTS diagnostics after relabelling", diag),
              ("R-hat before and after relabelling", rhat_table)]
    if not args.quiet:
        with pd.option_context("display.width", 200, "display.max_columns", 20,
                               "display.max_colwidth", 60,
                               "display.float_format", "{:.4g}".format):
            print("\n== cross-check ==")
            print(cross.drop(columns=["note"]).to_string(index=False))
            print("\n== model selection ==")
            print(selection.to_string(index=False))
            print("\n" + summary)
    return {"summary": summary, "warnings": messages, "tables": tables,
            "figures": figures, "timings": timings, "rows": rows, "params": params,
            "selection": selection.to_dict(orient="records"),
            "diagnostics": diagnostics_records, "seeds": seeds, "files": files,
            "all_passed": all_passed,
            "frames": {"cross_check": cross, "selection": selection,
                       "diagnostics": diag, "rhat": rhat_table},
            "idata": dict(sorted({f"K = {num_components}": res["relabelled"],
                                  **res["other_k"]}.items())),
            "num_components": num_components}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="data and sampler seed")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress messages or tables")
    parser.add_argument("--fast", action="store_true",
                        help="reduced sizes (seconds, for tests)")
    parser.add_argument("--num-components", type=int, default=2,
                        help="K of the fitted mixture (default: 2)")
    # The stories' cross-check tolerances are set for float64, on any device.
    device.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.num_components < 1:
        parser.error(f"--num-components must be >= 1, got {args.num_components}")
    return args


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
