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
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from latentmix.data.datasets import load_diabetes
from latentmix.data.validation import DataWarning
from latentmix.inference.crosscheck import (
    CrossCheckWarning,
    coefficient_table,
    crosscheck_linear_regression,
)
from latentmix.inference.crosscheck.linear_regression import (
    EM_INITS,
    fit_em_with_restarts,
)
from latentmix.inference.em import ConvergenceWarning
from latentmix.inference.mcmc import SamplerWarning, diagnostics
from latentmix.models.linear_regression import (
    gaussian_features,
    polynomial_features,
    predictive,
)
from latentmix.scripts import device
from latentmix.scripts import runtime as rt

NOISE_SD = 0.3  # sinusoid noise; true noise precision 1 / 0.09 = 11.1
NUM_CENTERS = 9
BUMP_WIDTH = 0.1
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


# --- the cross-check (inference.crosscheck.crosscheck_linear_regression) -------------


def cross_check(name, data, settings, methods, rng_key, progress, timings):
    """The library's cross-check of one data set; returns (table rows,
    coefficients DataFrame, extras dict for the figures and params.json)."""
    def progress_fn(message):
        progress(f"{name}: {message}")

    check = crosscheck_linear_regression(
        data["X"], data["y"], rng_key=rng_key, methods=methods,
        feature_names=data["names"], num_chains=settings.num_chains,
        num_warmup=settings.num_warmup, num_samples=settings.num_samples,
        map_steps=settings.map_steps, vi_steps=settings.vi_steps,
        vi_particles=settings.vi_particles,
        vi_final_lr_ratio=settings.vi_final_lr_ratio,
        true_noise_precision=data.get("true_noise_precision"),
        progress_fn=progress_fn)
    fits = check.fits
    for label, seconds in fits["seconds"].items():
        timings[f"{name}: {label}"] = seconds
    em, sklearn = fits["em"], fits["sklearn"]
    alpha = float(em.params.prior_precision)
    cov = np.asarray(fits["closed_form"].cov)
    extras = {
        "em": {"prior_precision": alpha,
               "noise_precision": float(em.params.noise_precision),
               "log_evidence": float(em.log_likelihood),
               "num_iters": int(em.num_iters), "converged": bool(em.converged),
               "init_prior_precision": fits["em_init"],
               "effective_num_parameters": float(cov.shape[0]
                                                 - alpha * np.trace(cov)),
               "sklearn_lambda_": float(sklearn.lambda_),
               "sklearn_alpha_": float(sklearn.alpha_),
               "trace": np.asarray(em.trace[: int(em.num_iters)]).tolist(),
               "restart_log_evidences": fits["em_log_evidences"]},
        "posterior": fits["closed_form"],
        "diagnostics": {label: diagnostics(fits[method], warn=False)
                        for method, label in (("nuts", "NUTS"),
                                              ("nuts_hierarchical",
                                               "NUTS (hierarchical)"))
                        if method in fits},
    }
    if "nuts_hierarchical" in fits:
        extras.update(idata=fits["nuts_hierarchical"],
                      hierarchical_precisions=fits["hierarchical_precisions"])
    table = check.table.copy()
    table.insert(0, "dataset", name)
    return table.to_dict(orient="records"), coefficient_table(check), extras


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
    ref_val = {site: [{"ref_val": float(f"{extras['em'][site]:.4g}")}]
               for site in ("prior_precision", "noise_precision")}
    axes = az.plot_posterior(idata, var_names=["prior_precision", "noise_precision"],
                             ref_val=ref_val, show=False)
    posterior_fig = np.ravel(axes)[0].figure
    posterior_fig.suptitle(f"{dataset}: precisions (reference line: EM estimate)")
    return trace_fig, posterior_fig


# --- main -------------------------------------------------------------------------

OUR_WARNINGS = (DataWarning, ConvergenceWarning, SamplerWarning,
                CrossCheckWarning, RuntimeWarning)


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
    failed = cross.loc[~cross["passed"], ["dataset", "method"]]
    verdict = "" if failed.empty else ": FAILED " + "; ".join(
        f"{dataset}/{method}" for dataset, method in failed.itertuples(index=False))
    sinusoid, diabetes = params["sinusoid"]["em"], params["diabetes"]["em"]
    best = int(evidence.loc[evidence["log_evidence"].idxmax(), "degree"])
    return (
        f"{int(cross['passed'].sum())} of {len(cross)} cross-checks passed{verdict}. "
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
    all_passed = bool(cross["passed"].all())
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
            "seeds": seeds, "files": files, "all_passed": all_passed,
            "frames": {"cross_check": cross, "coefficients": coefficients,
                       "evidence": evidence, "diagnostics": diag},
            "idata": {f"{name}, hierarchical": extras[name]["idata"]
                      for name in datasets if "idata" in extras[name]}}


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
