"""scripts/shoppers.py runs end to end on the real Complete Journey data.

The story runs as the demo runs it, in one ``demo.py --fast`` subprocess shared
with test_demo.py (conftest.demo_fast_run), with --fast (300
households, K in 2..4 plus the tutorial's 30, NUTS without VI) so that it takes
well under a minute; its own cross-checks must all pass (exit status 0). The
numbers it writes are then checked for sanity against independent facts: the
data loader's sizes, the simplex constraints, the identity ICL >= BIC, the range
of an L1 distance between distributions, and the label switching that NUTS from
rolled starts must show.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "shoppers.py"

EXPECTED_FILES = [
    "summary.json",
    "params.json",
    "selection.csv",
    "data_summary.csv",
    "households.csv",
    "household_weights.csv",
    "household_weights_ml.csv",
    "heldout_by_household_size.csv",
    "cross_check.csv",
    "diagnostics.csv",
    "rhat_relabelling.csv",
    "posterior.nc",
    "selection.png",
    "segment_map.png",
    "segment_top_categories.png",
    "global_vs_grouped.png",
    "household_visits.png",
    "nuts_rhat.png",
    "nuts_weights.png",
    "nuts_em_vs_posterior.png",
]


@pytest.fixture(scope="module")
def fast_run(demo_fast_run):
    """The story as the demo runs it (conftest.demo_fast_run: one run of
    demo.py --fast --seed 0 for test_demo and every story test)."""
    completed, out = demo_fast_run
    return completed, out / "shoppers"


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_fast_run_passes_its_checks_and_writes_its_files(fast_run):
    completed, folder = fast_run
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout == ""  # --quiet: no tables, no progress
    for name in EXPECTED_FILES:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 0, name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["all_passed"] is True and summary["fast"] is True
    assert summary["seed"] == 0
    table = pd.read_csv(folder / "cross_check.csv")
    assert table["passed"].all(), table
    assert {"NUTS raw draws: label switching", "NUTS relabelled draws: r_hat",
            "EM inside NUTS 94% HDI", "held-out log-likelihood vs scipy",
            "ICL >= BIC for every K"} <= set(table["check"])


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_fast_run_numbers_are_sane(fast_run):
    completed, folder = fast_run
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((folder / "summary.json").read_text())
    params = json.loads((folder / "params.json").read_text())

    # Sizes: 300 sampled households; the split keeps every training basket and
    # drops test baskets of households unseen in training.
    sizes = summary["sizes"]
    assert sizes["all"]["households"] == 300
    assert sizes["train"]["baskets"] == int(0.8 * sizes["all"]["baskets"])
    assert sizes["train"]["baskets"] + sizes["test"]["baskets"] <= sizes["all"][
        "baskets"]
    assert sizes["all"]["categories"] == len(params["categories"]) == 94

    # K: chosen by BIC within the grid; its BIC is the grid's minimum.
    selection = pd.read_csv(folder / "selection.csv")
    assert list(selection["num_components"]) == [2, 3, 4]
    assert summary["chosen_k"] == params["chosen_k"]
    best = selection.loc[selection["bic"].idxmin(), "num_components"]
    assert summary["chosen_k"] == best
    assert (selection["icl"] >= selection["bic"]).all()
    # Held-out log-likelihood per basket of ~8 lines over 94 categories: uniform
    # probabilities would score about 8 ln(1/94) + ln(8!) ~ -26 at best; a fitted
    # mixture must do better than -30 and stay below 0 (a probability < 1).
    per_basket = selection["heldout_log_likelihood"] / sizes["test"]["baskets"]
    assert np.all(np.isfinite(per_basket)) and np.all((per_basket > -30) &
                                                       (per_basket < 0))

    # Parameters on the simplex, for every featured K (chosen, ICL's, tutorial's).
    assert str(summary["tutorial_k"]) in params["global"]
    for k, fit in params["global"].items():
        weights, probs = np.asarray(fit["weights"]), np.asarray(fit["probs"])
        assert weights.shape == (int(k),) and probs.shape == (int(k), 94)
        np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-12)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        assert np.all(np.diff(weights) <= 0)  # segments sorted, largest first
    grouped_weights = pd.read_csv(folder / "household_weights.csv",
                                  index_col="household")
    assert grouped_weights.shape == (sizes["train"]["households"],
                                     summary["chosen_k"])
    np.testing.assert_allclose(grouped_weights.sum(axis=1), 1.0, atol=1e-10)

    # Household comparison: L1 distances between distributions lie in [0, 2];
    # the shares are the fractions of strictly better households.
    households = pd.read_csv(folder / "households.csv")
    for column in ("global_l1", "grouped_l1", "shrunk_l1", "population_l1"):
        assert households[column].between(0.0, 2.0).all(), column
    grouped = summary["grouped"]
    assert grouped["num_test_households"] == len(households)
    np.testing.assert_allclose(grouped["share_households_grouped_better"],
                               households["grouped_better"].mean())
    assert 0.0 <= grouped["share_successive_visits_switching_segment"] <= 1.0
    for key in ("heldout_log_likelihood_global", "heldout_log_likelihood_grouped",
                "heldout_log_likelihood_shrunk"):
        assert np.isfinite(grouped[key]) and grouped[key] < 0

    # NUTS: rolled starts make the raw chains disagree; relabelling fixes it.
    nuts = summary["nuts"]
    assert nuts["r_hat_max_raw"] > 1.1
    assert nuts["r_hat_max_relabelled"] <= 1.01
    np.testing.assert_allclose(sum(nuts["em_weights"]), 1.0, atol=1e-12)

    # The reference tutorial's numbers are reported, labelled as other data.
    reference = summary["reference_tutorial"]
    assert reference["k_analysed"] == 30
    assert reference["share_households_grouped_better_k30"] == 0.6158
    assert "Kaggle" in reference["data"]


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_fast_run_findings_hold(fast_run):
    """Checklist items 18 and 20 as assertions on the real (subsampled) data."""
    completed, folder = fast_run
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((folder / "summary.json").read_text())
    num_test = summary["sizes"]["test"]["baskets"]

    # Item 18: the held-out log-likelihood rises with K up to the chosen K. The
    # tutorial saw it rise over the whole grid; here each step from K = 2 gains
    # hundreds of nats over ~2,800 test baskets, far above the spread between
    # restarts.
    selection = pd.read_csv(folder / "selection.csv").set_index("num_components")
    heldout = selection["heldout_log_likelihood"].loc[:summary["chosen_k"]]
    assert summary["chosen_k"] > 2 and np.all(np.diff(heldout.to_numpy()) > 0), (
        heldout)

    # Item 20, compared honestly on the same held-out baskets: the default
    # per-household model (weights shrunk towards the population mix) predicts
    # them better than the global model and than maximum-likelihood weights.
    grouped = summary["grouped"]
    assert grouped["default_household_model"] == "shrunk"
    assert (grouped["heldout_log_likelihood_shrunk"]
            > max(grouped["heldout_log_likelihood_global"],
                  grouped["heldout_log_likelihood_grouped"]))
    # The table by household size splits those totals exactly: baskets x mean.
    by_size = pd.read_csv(folder / "heldout_by_household_size.csv")
    assert by_size["test baskets"].sum() == num_test
    per_basket = by_size["global (nats per basket)"]
    for column, key in ((None, "global"), ("ML household weights: gain", "grouped"),
                        ("shrunk household weights: gain", "shrunk")):
        mean = per_basket if column is None else per_basket + by_size[column]
        np.testing.assert_allclose((by_size["test baskets"] * mean).sum(),
                                   grouped[f"heldout_log_likelihood_{key}"],
                                   rtol=1e-10)
    # MAP weights w_hk = (N_hk + s w_k) / (N_h + s) are all positive; maximum
    # likelihood leaves households with weights of (numerically) zero.
    shrunk = pd.read_csv(folder / "household_weights.csv", index_col="household")
    ml = pd.read_csv(folder / "household_weights_ml.csv", index_col="household")
    assert shrunk.to_numpy().min() > 0
    assert (ml.to_numpy() < 1e-3).any()
    np.testing.assert_allclose(ml.sum(axis=1), 1.0, atol=1e-10)


def test_bad_k_grid_exits_with_usage_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--k-grid", "2,x", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "--k-grid" in completed.stderr
