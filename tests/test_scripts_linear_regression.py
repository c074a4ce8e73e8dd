"""scripts/linear_regression.py runs end to end (NumPyro's test_examples pattern).

The story runs as the demo runs it, in one ``demo.py --fast`` subprocess shared
with test_demo.py (conftest.demo_fast_run); its own cross-checks must all pass
(exit status 0).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "linear_regression.py"

EXPECTED_FILES = [
    "cross_check.csv",
    "coefficients.csv",
    "evidence_by_degree.csv",
    "diagnostics.csv",
    "params.json",
    "predictive_band.png",
    "evidence_by_degree.png",
    "coefficients_sinusoid.png",
    "coefficients_diabetes.png",
    "nuts_trace_sinusoid.png",
    "nuts_posterior_sinusoid.png",
]


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_fast_run_passes_its_cross_checks_and_writes_its_files(demo_fast_run):
    # The story as the demo runs it (conftest.demo_fast_run: one run of
    # demo.py --fast --seed 0 for test_demo and every story test).
    completed, tmp_path = demo_fast_run
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout == ""  # --quiet: no tables, no progress
    folder = tmp_path / "linear_regression"
    for name in EXPECTED_FILES:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 0, name
    params = json.loads((folder / "params.json").read_text())
    assert params["all_passed"] is True and params["fast"] is True
    assert params["seeds"]["seed"] == 0
    table = pd.read_csv(folder / "cross_check.csv")
    assert table["passed"].all()
    methods = set(zip(table["dataset"], table["method"], strict=True))
    assert {("sinusoid", "closed form"), ("sinusoid", "EM-evidence"),
            ("sinusoid", "MAP"), ("sinusoid", "VI (full-rank)"),
            ("sinusoid", "NUTS (hierarchical)"), ("diabetes", "closed form"),
            ("diabetes", "EM-evidence")} <= methods
    evidence = pd.read_csv(folder / "evidence_by_degree.csv")
    assert list(evidence["degree"]) == [0, 1, 2, 3]
    # The coefficients table reports VI in the data's units, like the others:
    # VI ran in whitened coordinates z = L^T w where its means are within
    # `tolerance` posterior sds, so |delta w_j| <= sd_j ||delta z|| <=
    # sd_j sqrt(p) tolerance (each w_j is a combination of the z whose
    # coefficients have squared norm var_j).
    coefficients = pd.read_csv(folder / "coefficients.csv")
    sinusoid = coefficients[coefficients["dataset"] == "sinusoid"]
    exact = sinusoid[sinusoid["method"] == "closed form"].set_index("coefficient")
    vi = sinusoid[sinusoid["method"] == "VI (full-rank)"].set_index("coefficient")
    row = table[(table["dataset"] == "sinusoid")
                & (table["method"] == "VI (full-rank)")].iloc[0]
    bound = np.sqrt(len(exact)) * row["tolerance"] * exact["sd"]
    assert np.all(np.abs(vi["mean"] - exact["mean"]) <= bound), (vi, exact)


def test_bad_option_exits_with_usage_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--seed", "zero", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "--seed" in completed.stderr
