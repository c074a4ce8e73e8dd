"""The model-specific half of ``fit.py``: read columns, fit, write results.

``fit(args, frame, out, progress, notes)`` returns an ``Outcome``; ``finish`` writes
``params.json`` first, then the per-row CSV, figures and ``report.html``. While a
fit runs, ``PARTIAL`` holds what is already computed (e.g. the K values of a sweep
that finished), so an interrupted run can still write it with status
"interrupted".
"""

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from latentmix.data.tables import DataError, numeric_matrix, require_columns
from latentmix.scripts import runtime as rt
from latentmix.scripts.report import Report

PARTIAL: dict = {"out": None, "payload": {}}


@dataclass
class Outcome:
    payload: dict  # everything that goes into params.json
    rows: pd.DataFrame  # predictions.csv or assignments.csv
    rows_name: str
    tables: list = field(default_factory=list)  # (caption, DataFrame) for the report
    figures: list = field(default_factory=list)  # callables fig_fn(out) -> (path, cap)
    idata: object = None  # ArviZ InferenceData of NUTS, written as netCDF
    diagnostics_failed: bool = False
    diagnostic_messages: list = field(default_factory=list)


def default_columns(frame, exclude) -> list[str]:
    """Every column except ``exclude``: a non-numeric one is then reported by the
    validators (naming column, row and value) instead of being dropped silently."""
    names = [name for name in frame.columns if name not in exclude]
    if not names:
        raise DataError(f"no columns to use besides {sorted(exclude)}; add columns")
    return names


def _nuts_gate(table: pd.DataFrame, outcome: Outcome, label: str) -> None:
    """Record failed NUTS diagnostics (warnings; --strict turns them into exit 4)."""
    bad = table.index[~table["ok"]].tolist()
    if bad:
        outcome.diagnostics_failed = True
        outcome.diagnostic_messages.append(
            f"{label}: r_hat > 1.01, ESS < 100 per chain or divergences for {bad}"
        )


# ------------------------------------------------------------ linear regression


def fit_linear_regression(args, frame, progress) -> Outcome:
    from latentmix.inference.em import fit_linear_regression as em_fit
    from latentmix.inference.mcmc import diagnostics, run_nuts
    from latentmix.inference.svi import fit_map, fit_vi
    from latentmix.models import linear_regression as lr

    path = args.data
    require_columns(frame, [args.target], path=path, role="target column")
    features = args.columns or default_columns(frame, {args.target})
    if args.target in features:
        raise rt.UsageError(f"--target {args.target!r} is also listed in --columns")
    X = numeric_matrix(frame, features, path=path).astype(args.dtype)
    y = numeric_matrix(frame, [args.target], path=path)[:, 0].astype(args.dtype)
    names = list(features)
    if not args.no_bias:
        X = np.column_stack([np.ones(len(X)), X])
        names = ["bias", *names]
    with progress.step("EM for the prior and noise precisions"):
        result = em_fit(X, y, max_iters=max(args.max_iters, 1) * 20)
    alpha = float(result.params.prior_precision)
    beta = float(result.params.noise_precision)
    posterior = lr.GaussianPosterior(result.params.mean, result.params.cov)
    mean, variance = lr.predictive(posterior, X, beta)
    payload = {
        "model": "linear-regression",
        "features": names,
        "target": args.target,
        "prior_precision": alpha,
        "noise_precision": beta,
        "log_evidence": float(result.log_likelihood),
        "em": {"num_iters": int(result.num_iters),
               "converged": bool(result.converged)},
        "posterior_mean": dict(zip(names, np.asarray(result.params.mean).tolist(),
                                   strict=True)),
        "posterior_sd": dict(zip(names, np.sqrt(np.diag(result.params.cov)).tolist(),
                                 strict=True)),
    }
    PARTIAL["payload"] = payload
    rows = pd.DataFrame({
        "row": np.arange(1, len(y) + 1),
        "y": y,
        "predicted_mean": np.asarray(mean),
        "predicted_sd": np.sqrt(np.asarray(variance)),
    })
    rows["residual"] = rows["y"] - rows["predicted_mean"]
    outcome = Outcome(payload, rows, "predictions.csv")
    methods = _methods(args.method)
    key_map, key_vi, key_nuts = jax.random.split(jax.random.key(args.seed), 3)
    sd = np.sqrt(np.diag(np.asarray(result.params.cov)))
    comparison = {"closed form / EM": (np.asarray(result.params.mean), sd)}
    fixed = {"prior_precision": alpha, "noise_precision": beta}
    scale_note = "precisions fixed at their EM values"
    if "map" in methods:
        with progress.step("MAP (AutoDelta)"):
            fit = fit_map(lr.model, X, y, rng_key=key_map, num_steps=3000,
                          learning_rate=0.05, **fixed)
        comparison["MAP"] = (np.asarray(fit.params["w"]), np.full(len(names), np.nan))
        payload["map_w"] = dict(zip(names, comparison["MAP"][0].tolist(), strict=True))
    if "vi" in methods:
        with progress.step("VI (full-rank Gaussian)"):
            fit = fit_vi(lr.model, X, y, rng_key=key_vi, guide="mvn",
                         num_steps=5000, learning_rate=0.02, **fixed)
        posterior = fit.guide.get_posterior(fit.guide_params)
        comparison["VI"] = (np.asarray(posterior.mean),
                            np.sqrt(np.diag(np.asarray(posterior.covariance_matrix))))
    if "nuts" in methods:
        with progress.step("NUTS"):
            idata = run_nuts(lr.model, X, y, rng_key=key_nuts,
                             num_chains=args.num_chains, num_warmup=args.num_warmup,
                             num_samples=args.num_samples, **fixed)
        draws = idata.posterior["w"].values.reshape(-1, len(names))
        comparison["NUTS"] = (draws.mean(0), draws.std(0))
        table = diagnostics(idata, warn=False)
        _nuts_gate(table, outcome, "NUTS")
        outcome.idata = idata
        outcome.tables.append(("NUTS diagnostics", table))
        payload["nuts_diagnostics"] = table.reset_index().to_dict(orient="list")
    if len(comparison) > 1:
        cross = _comparison_table(comparison, names)
        outcome.tables.insert(0, (f"Cross-check of the posterior of w ({scale_note})",
                                  cross))
        payload["cross_check"] = cross.reset_index().to_dict(orient="list")
    outcome.figures.append(lambda out: _plot_predictions(rows, out))
    return outcome


def _comparison_table(comparison: dict, names) -> pd.DataFrame:
    """Means and sds per method, and each method's largest difference to the first."""
    reference_name, (reference_mean, reference_sd) = next(iter(comparison.items()))
    frames = []
    for method, (mean, sd) in comparison.items():
        frames.append(pd.DataFrame({
            "method": method, "parameter": names, "mean": mean, "sd": sd,
            "abs diff mean": np.abs(mean - reference_mean),
            "abs diff sd": np.abs(sd - reference_sd),
        }))
    return pd.concat(frames).set_index(["method", "parameter"])


def _plot_predictions(rows, out):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(rows["predicted_mean"], rows["y"], xerr=2 * rows["predicted_sd"],
                fmt=".", alpha=0.5, label="±2 predictive sd")
    low, high = rows[["y", "predicted_mean"]].min().min(), rows[
        ["y", "predicted_mean"]].max().max()
    ax.plot([low, high], [low, high], "k--", lw=1)
    ax.set_xlabel("posterior predictive mean")
    ax.set_ylabel("observed target")
    ax.legend()
    return rt.save_figure(fig, out / "predictions.png"), "Observed against predicted"


def _methods(method: str) -> set:
    return {"em", "map", "vi", "nuts"} if method == "all" else {"em", method}


# ------------------------------------------------------------ finishing


def finish(args, out: Path, outcome: Outcome, notes: list, status: str) -> None:
    """params.json first, then rows, netCDF, figures, and the HTML report."""
    payload = dict(outcome.payload)
    payload.update({
        "status": status,
        "warnings": notes + outcome.diagnostic_messages,
        "seed": args.seed,
        "device": jax.default_backend(),
        "dtype": args.dtype,
        "data": str(args.data),
        "command": sys.argv,
    })
    rt.write_json(out / "params.json", payload)
    rt.atomic_write_text(out / outcome.rows_name, outcome.rows.to_csv(index=False))
    if outcome.idata is not None:
        import tempfile

        with tempfile.TemporaryDirectory(dir=out) as scratch:
            target = Path(scratch) / "posterior.nc"
            outcome.idata.to_netcdf(str(target))
            rt.atomic_write_bytes(out / "posterior.nc", target.read_bytes())
    figure_warnings: list = []
    figures = []
    for figure_fn in outcome.figures:
        try:
            path, caption = figure_fn(out)
        except Exception as error:  # a plot failure must not lose the results
            figure_warnings.append(f"figure failed: {error}")
            continue
        figures.append((path, caption))
    for message in figure_warnings:
        print(f"warning: {message}", file=sys.stderr)
    report = Report(f"latentmix fit: {args.model} on {Path(args.data).name}")
    report.paragraph(f"Status: {status}. Method: {args.method}. Seed: {args.seed}. "
                     f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    report.warnings(notes + outcome.diagnostic_messages + figure_warnings)
    summary = {key: value for key, value in outcome.payload.items()
               if isinstance(value, int | float | str | bool)}
    report.table(pd.DataFrame({"value": summary}).rename_axis("item"),
                 caption="Summary")
    for caption, table in outcome.tables:
        report.table(table, caption=caption)
    for path, caption in figures:
        report.figure(path, caption)
    rt.atomic_write_text(out / "report.html", report.render())


def write_interrupted(args) -> None:
    """Write what a run had when it was interrupted (never raises)."""
    out = PARTIAL.get("out")
    if out is None:
        return
    payload = dict(PARTIAL.get("payload", {}))
    payload.update({"status": "interrupted", "seed": args.seed,
                    "data": str(args.data)})
    try:
        rt.write_json(Path(out) / "params.json", payload)
    except OSError as error:
        print(f"warning: could not write partial results: {error}", file=sys.stderr)


def fit(args, frame, out: Path, progress, notes) -> Outcome:
    PARTIAL["out"] = out
    PARTIAL["payload"] = {"model": args.model}
    if args.model == "linear-regression":
        return fit_linear_regression(args, frame, progress)
    if args.model == "gaussian-mixture":
        from latentmix.scripts.fitting_mixtures import fit_gaussian_mixture

        return fit_gaussian_mixture(args, frame, progress, PARTIAL, Outcome)
    from latentmix.scripts.fitting_mixtures import fit_multinomial_mixture

    return fit_multinomial_mixture(args, frame, progress, PARTIAL, Outcome)
