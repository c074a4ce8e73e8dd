"""What ``fit.py`` writes: params.json, the per-row CSV, posterior, figures, report.

``finish`` writes ``params.json`` first, then the per-row CSV (``predictions.csv``
or ``assignments.csv``), the fitted model (``model.json`` and ``arrays.npz``,
read by ``latentmix predict`` and ``latentmix.inference.load``), the NUTS draws
(``posterior.nc``), the figures and ``report.html``, each atomically. While a
fit runs, ``Partial`` holds what is already computed (e.g. the K values of a
sweep that finished), so that an interrupted run still writes it with status
"interrupted".
"""

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from latentmix.scripts import runtime as rt
from latentmix.scripts.report import Report

__all__ = [
    "Outcome",
    "Partial",
    "finish",
    "gmm_scatter_figure",
    "predictions_figure",
    "segment_map_figure",
    "selection_figure",
    "write_interrupted",
]


@dataclass
class Outcome:
    """Everything one fit produced, ready to be written."""

    payload: dict  # everything that goes into params.json
    rows: pd.DataFrame  # predictions.csv or assignments.csv
    rows_name: str
    tables: list = field(default_factory=list)  # (caption, DataFrame) for the report
    figures: list = field(default_factory=list)  # callables out -> (path, caption)
    idata: object = None  # ArviZ InferenceData of NUTS, written as netCDF
    checks_failed: bool = False
    check_messages: list = field(default_factory=list)
    model: object = None  # fitted estimator, saved for ``latentmix predict``
    model_metadata: dict = field(default_factory=dict)  # how to read new rows


@dataclass
class Partial:
    """What an interrupted run can still write: the folder and the payload so far."""

    out: Path | None = None
    payload: dict = field(default_factory=dict)


def finish(args, out: Path, outcome: Outcome, notes: list, status: str) -> None:
    """params.json first, then rows, netCDF, figures, and the HTML report."""
    payload = dict(outcome.payload)
    payload.update({
        "status": status,
        "warnings": notes + outcome.check_messages,
        "seed": args.seed,
        "device": jax.default_backend(),
        "dtype": args.dtype,
        "data": str(args.data),
        "command": sys.argv,
    })
    rt.write_json(out / "params.json", payload)
    rt.atomic_write_text(out / outcome.rows_name, outcome.rows.to_csv(index=False))
    if outcome.model is not None:  # model.json + arrays.npz (inference.load)
        outcome.model.save(out, metadata={"data": str(args.data),
                                          **outcome.model_metadata})
    if outcome.idata is not None:
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
    report.warnings(notes + outcome.check_messages + figure_warnings)
    summary = {key: value for key, value in outcome.payload.items()
               if isinstance(value, int | float | str | bool)}
    report.table(pd.DataFrame({"value": summary}).rename_axis("item"),
                 caption="Summary")
    for caption, table in outcome.tables:
        report.table(table, caption=caption)
    for path, caption in figures:
        report.figure(path, caption)
    rt.atomic_write_text(out / "report.html", report.render())


def write_interrupted(args, partial: Partial) -> None:
    """Write what a run had when it was interrupted (never raises)."""
    if partial.out is None:
        return
    payload = dict(partial.payload)
    payload.update({"status": "interrupted", "seed": args.seed,
                    "data": str(args.data)})
    try:
        rt.write_json(Path(partial.out) / "params.json", payload)
    except OSError as error:
        print(f"warning: could not write partial results: {error}", file=sys.stderr)


# ------------------------------------------------------------------ figures


def predictions_figure(rows, out):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(rows["predicted_mean"], rows["y"], xerr=2 * rows["predicted_sd"],
                fmt=".", alpha=0.5, label="±2 predictive sd")
    low = rows[["y", "predicted_mean"]].min().min()
    high = rows[["y", "predicted_mean"]].max().max()
    ax.plot([low, high], [low, high], "k--", lw=1)
    ax.set_xlabel("posterior predictive mean")
    ax.set_ylabel("observed target")
    ax.legend()
    return rt.save_figure(fig, out / "predictions.png"), "Observed against predicted"


def selection_figure(table: pd.DataFrame, criterion: str, out, name: str):
    import matplotlib.pyplot as plt

    columns = [c for c in ("bic", "icl", "aic") if c in table.columns]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for column in columns:
        axes[0].plot(table["num_components"], table[column], "o-", label=column.upper())
    axes[0].set_xlabel("K")
    axes[0].set_ylabel("criterion (-2 LL scale, lower is better)")
    axes[0].legend()
    heldout = "heldout_log_likelihood"
    if heldout in table.columns and table[heldout].notna().any():
        axes[1].plot(table["num_components"], table[heldout], "o-", color="C3")
        axes[1].set_ylabel("held-out log-likelihood")
    else:
        axes[1].plot(table["num_components"], table["log_likelihood"], "o-")
        axes[1].set_ylabel("mean training log-likelihood")
    axes[1].set_xlabel("K")
    fig.suptitle(f"Choice of K (criterion: {criterion})")
    return rt.save_figure(fig, out / name), f"Model selection ({criterion})"


def gmm_scatter_figure(x, columns, params, resp, out):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(x[:, 0], x[:, 1], c=resp.argmax(1), s=8, cmap="tab10", alpha=0.7)
    for mean, cov in zip(np.asarray(params.means), np.asarray(params.covariances),
                         strict=True):
        values, vectors = np.linalg.eigh(cov[:2, :2])
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for radius in (1.0, 2.0):
            ax.add_patch(Ellipse(mean[:2], *(2 * radius * np.sqrt(values[::-1])),
                                 angle=angle, fill=False, lw=1.2))
    ax.set_xlabel(columns[0])
    ax.set_ylabel(columns[1])
    return (rt.save_figure(fig, out / "components.png"),
            "Data coloured by component, with 1- and 2-sd ellipses of the EM fit")


def segment_map_figure(coords, weights, out):
    import matplotlib.pyplot as plt

    from latentmix.inference.segments import plot_segment_map

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    plot_segment_map(coords, weights, ax=ax)
    return (rt.save_figure(fig, out / "segment_map.png"),
            "Segments: classical MDS of L1 distances between category profiles, "
            "sized by weight")
