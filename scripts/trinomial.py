"""The tutorial's three synthetic trinomial experiments (article 4, §4.4).

    python scripts/trinomial.py [--seed 0] [--out out] [--quiet] [--fast]
                                [--device auto|cpu|gpu]

Each experiment draws rows of n = 16 trials over C = 3 categories from a known
mixture (``data.simulate_counts.TRINOMIAL_EXPERIMENTS``, the tutorial's
``make_dataset``), splits them 80/20 at random, fits the multinomial mixture by
EM with restarts for every K = 2..20 (one compiled program per experiment,
``select_num_components_multinomial(..., one_program=True)``), and reports BIC
(on the training rows, -2 LL + p ln N with p = (K - 1) + K (C - 1)) and the
held-out log-likelihood:

* well separated, weights (0.1, 0.1, 0.8): the reference picked K = 4 with one
  restart per K (a local optimum at K = 3); with restarts BIC picks K = 3;
* three overlapping components: K = 3, with weights poorly recovered;
* ten components on a grid of the simplex: about K = 10 (the reference: 11).

Past the true K the fitted log-likelihood barely moves, so BIC grows about
linearly with slope C ln N per extra component (``bic_growth``).

Writes into ``<out>/trinomial/``: ``selection_<name>.csv``, ``summary.json`` and
``trinomial.png`` (per experiment: the rows on the simplex grid coloured by true
component, held-out log-likelihood and BIC against K, the minimum in red).
"""

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from latentmix.data.simulate_counts import (
    TRINOMIAL_EXPERIMENTS,
    make_dataset,
    random_split,
)
from latentmix.inference.align import align_components
from latentmix.inference.selection import select_num_components_multinomial
from latentmix.models.multinomial_mixture import MultinomialMixtureParams
from latentmix.scripts import device
from latentmix.scripts import runtime as rt

TRUE_K = {"well_separated": 3, "overlapping": 3, "ten_components": 10}
TITLES = {"well_separated": "well separated, weights (0.1, 0.1, 0.8)",
          "overlapping": "three overlapping components",
          "ten_components": "ten components on a simplex grid"}
REFERENCE_K = {"well_separated": 4, "overlapping": 3, "ten_components": 11}


class Settings(NamedTuple):
    k_values: tuple
    num_restarts: int


# Run time is one compilation per experiment (the folded data have at most 153
# distinct rows of 16 trials over 3 categories), then every (K, restart) pair in
# one vmapped loop that runs until the slowest stops.
FULL = Settings(k_values=tuple(range(2, 21)), num_restarts=4)
FAST = FULL._replace(k_values=(2, 3, 4, 6, 9, 12))


def run_experiment(name: str, k_values, num_restarts: int, seed: int) -> dict:
    """Simulate, split 80/20, sweep K; returns the table, the choice and the fit."""
    experiment = TRINOMIAL_EXPERIMENTS[name]
    key_data, key_split, key_fit = jax.random.split(jax.random.key(seed), 3)
    counts, labels = make_dataset(experiment.num_rows, experiment.weights,
                                  experiment.probs, experiment.total_count,
                                  rng_key=key_data)
    train, test = random_split(len(counts), rng_key=key_split)
    selection = select_num_components_multinomial(
        counts[train], k_values, num_restarts=num_restarts,
        heldout_counts=counts[test], rng_key=key_fit, one_program=True)
    true_k = TRUE_K[name]
    result = {"name": name, "table": selection.table,
              "chosen_k": selection.best_num_components, "true_k": true_k,
              "num_train": int(len(train)), "num_test": int(len(test)),
              "counts": counts, "labels": labels, "experiment": experiment}
    if true_k in selection.fits:
        truth = MultinomialMixtureParams(experiment.weights, experiment.probs)
        aligned, _ = align_components(selection.fits[true_k].params, truth)
        result["fit_at_true_k"] = MultinomialMixtureParams(
            np.asarray(aligned.weights), np.asarray(aligned.probs))
        result["max_probs_error"] = float(np.max(np.abs(
            np.asarray(aligned.probs) - experiment.probs)))
    result["growth"] = bic_growth(selection.table, true_k, len(train),
                                  experiment.probs.shape[1])
    return result


def bic_growth(table: pd.DataFrame, true_k: int, num_rows: int,
               num_categories: int) -> dict:
    """Least-squares line of BIC against K for K > true_k, next to C ln N.

    Each extra component adds C parameters (one weight, C - 1 probabilities),
    so past the true K, where the maximised log-likelihood gains only fitting
    noise (about chi^2_C / 2 nats per component), BIC rises by about C ln N per
    component. Returns slope, expected slope, R^2 and the K values used.
    """
    past = table[table["num_components"] > true_k]
    expected = num_categories * np.log(num_rows)
    if len(past) < 2:
        return {"slope": float("nan"), "expected_slope": float(expected),
                "r_squared": float("nan"), "k_values": past["num_components"].tolist()}
    k = past["num_components"].to_numpy(float)
    bic = past["bic"].to_numpy(float)
    slope, intercept = np.polyfit(k, bic, 1)
    residual = bic - (slope * k + intercept)
    total = np.sum((bic - bic.mean()) ** 2)
    r_squared = 1.0 - np.sum(residual**2) / total if total > 0 else float("nan")
    return {"slope": float(slope), "expected_slope": float(expected),
            "r_squared": float(r_squared), "k_values": k.astype(int).tolist()}


# --- figure ---------------------------------------------------------------------------


def _simplex_xy(counts):
    """Barycentric coordinates of (x1, x2, x3) / n on an equilateral triangle."""
    shares = counts / counts.sum(axis=1, keepdims=True)
    return shares[:, 1] + 0.5 * shares[:, 2], np.sqrt(3) / 2 * shares[:, 2]


def plot_experiments(results):
    fig, axes = plt.subplots(len(results), 3, figsize=(13, 3.6 * len(results)),
                             squeeze=False)
    for row, result in zip(axes, results, strict=True):
        counts, labels = result["counts"], result["labels"]
        # One bubble per (distinct row, true component), area = frequency.
        keys = np.column_stack([counts, labels])
        distinct, frequency = np.unique(keys, axis=0, return_counts=True)
        xs, ys = _simplex_xy(distinct[:, :3].astype(float))
        row[0].scatter(xs, ys, s=300 * frequency / frequency.max(),
                       c=[f"C{label % 10}" for label in distinct[:, 3]],
                       alpha=0.45, linewidths=0)
        row[0].plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], "k-", lw=0.8)
        row[0].set(title=TITLES[result["name"]], xticks=[], yticks=[],
                   xlim=(-0.1, 1.1), ylim=(-0.1, 0.97))
        row[0].set_aspect("equal")
        for text, (x, y) in zip(("all x₁", "all x₂", "all x₃"),
                                ((-0.08, -0.07), (0.9, -0.07), (0.53, 0.88)),
                                strict=True):
            row[0].annotate(text, (x, y), fontsize=8)
        table = result["table"]
        k = table["num_components"]
        row[1].plot(k, table["heldout_log_likelihood"], "o-", color="tab:green",
                    ms=4)
        row[1].axvline(result["true_k"], color="0.5", ls=":",
                       label=f"true K = {result['true_k']}")
        row[1].set(xlabel="K", ylabel="held-out log-likelihood (nats)",
                   title=f"{result['num_test']:,} held-out rows")
        row[1].legend(fontsize=8)
        row[2].plot(k, table["bic"], "o-", ms=4)
        best = table.loc[table["bic"].idxmin()]
        row[2].plot(best["num_components"], best["bic"], "o", color="red", ms=9,
                    label=f"BIC minimum: K = {int(best['num_components'])}")
        growth = result["growth"]
        if np.isfinite(growth["expected_slope"]) and growth["k_values"]:
            start = table.loc[table["num_components"] == result["true_k"], "bic"]
            if len(start):
                grid = np.array([result["true_k"], k.max()])
                row[2].plot(grid, start.iloc[0] + growth["expected_slope"]
                            * (grid - result["true_k"]), "k--", lw=0.8,
                            label=f"slope C ln N = {growth['expected_slope']:.1f}")
        # Zoom on the minimum and beyond: the steep drop before it would
        # flatten the linear growth the panel is about.
        past = table.loc[k >= result["true_k"], "bic"]
        if len(past) > 1:
            low, high = past.min(), past.max()
            margin = 0.15 * (high - low) + 1.0
            row[2].set_ylim(low - margin, high + margin)
            above = table[table["bic"] > high + margin]
            if len(above):
                ks = above["num_components"].astype(int).tolist()
                label = f"K = {ks[0]}" if len(ks) == 1 else f"K = {ks[0]}–{ks[-1]}"
                row[2].annotate(f"{label} above the frame (up to "
                                f"{above['bic'].max():,.0f}) ↑",
                                (0.03, 0.95), xycoords="axes fraction",
                                fontsize=7, ha="left", va="top")
        row[2].set(xlabel="K", ylabel="BIC (training rows)",
                   title="BIC = −2 LL + p ln N")
        row[2].legend(fontsize=8)
        for ax in row[1:]:  # K is a count: no ticks between integers
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


# --- main -----------------------------------------------------------------------------


def summarise(results) -> str:
    parts = []
    for result in results:
        growth = result["growth"]
        text = (f"{TITLES[result['name']]}: BIC picks K = {result['chosen_k']} "
                f"(truth {result['true_k']}, reference "
                f"{REFERENCE_K[result['name']]})")
        if np.isfinite(growth["slope"]):
            text += (f"; past the truth BIC rises {growth['slope']:.1f} per "
                     f"component (C ln N = {growth['expected_slope']:.1f})")
        parts.append(text)
    return "; ".join(parts) + "."


def run(args) -> dict:
    """Run the three experiments, write the figure and tables, return a dict.

    Keys: ``summary``, ``warnings``, ``figures``, ``timings``, ``experiments``
    (name -> chosen_k, true_k, reference_k, growth, max_probs_error, table),
    ``files``, ``all_passed`` (BIC picks the true K where the tutorial says it
    should: the well-separated and overlapping experiments).
    """
    started = time.perf_counter()
    settings = FAST if args.fast else FULL
    out = rt.prepare_output_dir(Path(args.out) / "trinomial", overwrite=True)
    progress = rt.Progress(quiet=args.quiet)
    timings, messages, files = {}, [], {}
    results = []
    for index, name in enumerate(TRINOMIAL_EXPERIMENTS):
        with rt.StepTimer(timings, f"{name}: K sweep", progress):
            results.append(run_experiment(name, settings.k_values,
                                          settings.num_restarts, args.seed + index))
        files[name] = str(rt.atomic_write_text(
            out / f"selection_{name}.csv",
            results[-1]["table"].to_csv(index=False)))
    figures = []
    with rt.StepTimer(timings, "figure", progress):
        rt.draw_figure(lambda: plot_experiments(results), out / "trinomial.png",
                       "The three trinomial experiments: data on the simplex, "
                       "held-out log-likelihood and BIC against K", figures,
                       messages)
    experiments = {
        result["name"]: {
            "title": TITLES[result["name"]], "chosen_k": result["chosen_k"],
            "true_k": result["true_k"], "reference_k": REFERENCE_K[result["name"]],
            "num_train": result["num_train"], "num_test": result["num_test"],
            "growth": result["growth"],
            "max_probs_error": result.get("max_probs_error"),
            "table": result["table"].to_dict(orient="records")}
        for result in results}
    all_passed = all(experiments[name]["chosen_k"] == TRUE_K[name]
                     for name in ("well_separated", "overlapping"))
    summary = summarise(results)
    timings["total"] = time.perf_counter() - started
    files["summary"] = str(rt.write_json(out / "summary.json", {
        "summary": summary, "all_passed": all_passed, "seed": args.seed,
        "settings": settings._asdict(), "experiments": experiments,
        "timings": timings, "warnings": messages}))
    if not args.quiet:
        print(summary)
    return {"summary": summary, "warnings": messages, "figures": figures,
            "timings": timings, "experiments": experiments, "files": files,
            "all_passed": all_passed, "tables": []}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="data and EM seed")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--fast", action="store_true",
                        help="K in 2, 3, 4, 6, 9, 12 only (for tests)")
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
