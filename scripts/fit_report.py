"""What ``fit.py`` writes: params.json, the per-row CSV, posterior, figures, report.

``params.json`` is written first, with status "running", as soon as the output
folder is held and the data are valid (``Run.begin``), rewritten with what is
known after every major step (the EM fit, a finished K of a sweep), and written
last by ``finish`` with
the final status ("ok", "check_failed" when a cross-check failed,
"interrupted", "output_failed") and the list of files written, every time
atomically. The per-row CSV (``predictions.csv`` or ``assignments.csv``) is
written as soon as the EM fit exists, so that an interrupted NUTS run keeps it;
then come the fitted model (``model.json`` and ``arrays.npz``, read by
``latentmix predict`` and ``latentmix.inference.load``), the NUTS draws
(``posterior.nc``), the figures and ``report.html``. A
figure that cannot be drawn is a recorded warning, never lost results.
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
    "Run",
    "finish",
    "gmm_scatter_figure",
    "predictions_figure",
    "segment_map_figure",
    "selection_figure",
    "write_posterior",
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
    verdict: str | None = None  # one line: the cross-check's result
    model: object = None  # fitted estimator, saved for ``latentmix predict``
    model_metadata: dict = field(default_factory=dict)  # how to read new rows


@dataclass
class Run:
    """One invocation's output state: the folder, the payload so far, the files."""

    args: object
    out: Path | None = None
    payload: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    # The columns of the array the library sees, so that its messages can name
    # them (``fit.in_cli_terms``); None until the data are read.
    column_names: list | None = None

    started: bool = False

    def start(self, out: Path) -> None:
        """The folder is held (nothing is written before the data are valid)."""
        self.out = out
        self.payload = {"model": self.args.model}

    def begin(self, payload: dict) -> None:
        """The data are valid and fitting starts: params.json says "running"."""
        self.payload = payload
        self.started = True
        self.write_params("running")

    def write_params(self, status: str, **extra) -> None:
        """params.json with everything known so far (atomic)."""
        payload = dict(self.payload)
        payload.update({
            "status": status,
            "warnings": list(dict.fromkeys(self.notes)),
            "seed": self.args.seed,
            "device": jax.default_backend(),
            "dtype": self.args.dtype,
            "data": str(self.args.data),
            "command": sys.argv,
            "files": sorted(set(self.files) | {"params.json"}),
            **extra,
        })
        rt.write_json(self.out / "params.json", payload)

    def write_rows(self, outcome: "Outcome") -> None:
        """The per-row CSV, as soon as it exists."""
        rt.atomic_write_text(self.out / outcome.rows_name,
                             outcome.rows.to_csv(index=False))
        self._wrote(outcome.rows_name)

    def _wrote(self, name: str) -> None:
        if name not in self.files:
            self.files.append(name)


def write_posterior(run: Run, idata) -> None:
    """The NUTS draws as netCDF (atomic: through a hidden temporary folder)."""
    out = run.out
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-") as scratch:
        target = Path(scratch) / "posterior.nc"
        idata.to_netcdf(str(target))
        rt.atomic_write_bytes(out / "posterior.nc", target.read_bytes())
    run._wrote("posterior.nc")


def write_model(run: Run, outcome: Outcome) -> None:
    """The fitted estimator as model.json + arrays.npz (``inference.load``)."""
    try:
        outcome.model.save(run.out, metadata={"data": str(run.args.data),
                                              **outcome.model_metadata})
    except OSError as error:
        raise rt.OutputError(f"could not write the model into {run.out}: "
                             f"{error}") from error
    run._wrote("model.json")
    run._wrote("arrays.npz")


def finish(run: Run, outcome: Outcome, status: str) -> None:
    """Rows, netCDF, figures and the HTML report, then params.json last.

    An output failure on the way is recorded as status "output_failed" (when
    params.json can still be written) and raised.
    """
    args, out = run.args, run.out
    run.payload = dict(outcome.payload)
    try:
        run.write_rows(outcome)
        if outcome.model is not None:
            write_model(run, outcome)
        if outcome.idata is not None:
            write_posterior(run, outcome.idata)
        figures = []
        for figure_fn in outcome.figures:
            try:
                path, caption = figure_fn(out)
            except Exception as error:  # a plot failure must not lose the results
                run.notes.append(f"figure failed: {error}")
                print(f"warning: {run.notes[-1]}", file=sys.stderr)
                continue
            run._wrote(Path(path).name)
            figures.append((path, caption))
        report = Report(f"latentmix fit: {args.model} on {Path(args.data).name}")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        report.paragraph(f"Status: {status}. Method: {args.method}. Seed: "
                         f"{args.seed}. Generated {stamp}.")
        if outcome.verdict:
            report.paragraph(f"Cross-check: {outcome.verdict}")
        report.warnings(list(dict.fromkeys(run.notes)))
        summary = {key: value for key, value in outcome.payload.items()
                   if isinstance(value, int | float | str | bool)}
        report.table(pd.DataFrame({"value": summary}).rename_axis("item"),
                     caption="Summary")
        for caption, table in outcome.tables:
            report.table(table, caption=caption)
        for path, caption in figures:
            report.figure(path, caption)
        rt.atomic_write_text(out / "report.html", report.render())
        run._wrote("report.html")
    except rt.OutputError as error:
        try:
            run.write_params("output_failed", error=str(error))
        except rt.OutputError:
            pass
        raise
    extra = {"verdict": outcome.verdict} if outcome.verdict else {}
    run.write_params(status, **extra)


# ------------------------------------------------------------------ figures


def _saved(fig, path) -> Path:
    """Save ``fig`` atomically; raise (with the reason) when it cannot be."""
    messages: list = []
    saved = rt.save_figure(fig, path, messages)
    if saved is None:
        raise RuntimeError(messages[0] if messages else f"could not write {path}")
    return saved


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
    return _saved(fig, out / "predictions.png"), "Observed against predicted"


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
    return _saved(fig, out / name), f"Model selection ({criterion})"


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
    return (_saved(fig, out / "components.png"),
            "Data coloured by component, with 1- and 2-sd ellipses of the EM fit")


def segment_map_figure(coords, weights, out):
    import matplotlib.pyplot as plt

    from latentmix.inference.segments import plot_segment_map

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    plot_segment_map(coords, weights, ax=ax)
    return (_saved(fig, out / "segment_map.png"),
            "Segments: classical MDS of L1 distances between category profiles, "
            "sized by weight")
