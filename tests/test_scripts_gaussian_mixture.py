"""scripts/gaussian_mixture.py runs end to end (NumPyro's test_examples pattern).

The story runs as the demo runs it, in one ``demo.py --fast`` subprocess shared
with test_demo.py (conftest.demo_fast_run); its own
cross-checks must all pass (exit status 0) and every output must be written. The
relabelled posterior is then read back from its netCDF file and its R-hat
recomputed here, independently of the script's table.
"""

import json
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gaussian_mixture.py"

EXPECTED_FILES = [
    "cross_check.csv",
    "selection.csv",
    "diagnostics.csv",
    "rhat_relabelling.csv",
    "params.json",
    "posterior.nc",
    "data_ellipses.png",
    "log_likelihood_trace.png",
    "em_snapshots.png",
    "posterior_marginals.png",
    "model_selection.png",
    "rhat_relabelling.png",
]


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_fast_run_passes_its_cross_checks_and_writes_its_files(demo_fast_run):
    # The story as the demo runs it (conftest.demo_fast_run: one run of
    # demo.py --fast --seed 0 for test_demo and every story test).
    completed, tmp_path = demo_fast_run
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout == ""  # --quiet: no tables, no progress
    folder = tmp_path / "gaussian_mixture"
    for name in EXPECTED_FILES:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 0, name

    params = json.loads((folder / "params.json").read_text())
    assert params["all_passed"] is True and params["fast"] is True
    assert params["seeds"]["seed"] == 0 and params["num_components"] == 2
    table = pd.read_csv(folder / "cross_check.csv")
    assert table["passed"].all(), table.to_string()
    assert {"EM, same start and iterations", "EM, best of restarts: mean log-lik",
            "BIC", "NUTS raw draws: label switching", "NUTS relabelled draws: r_hat",
            "EM inside NUTS 94% HDI"} <= set(table["check"])
    selection = pd.read_csv(folder / "selection.csv")
    assert list(selection["num_components"]) == [1, 2]

    # The relabelled draws on disk: R-hat recomputed here is the standard
    # <= 1.01 for every site, and the EM weights lie inside the draws' range.
    posterior = az.from_netcdf(str(folder / "posterior.nc"))
    rhat = az.rhat(posterior)
    for name in ("weights", "means", "covariances"):
        assert float(rhat[name].max()) <= 1.01, name
    draws = posterior.posterior["weights"].values
    em_weights = np.asarray(params["params"]["em"]["weights"])
    assert np.all(draws.min(axis=(0, 1)) < em_weights)
    assert np.all(em_weights < draws.max(axis=(0, 1)))
    # Before relabelling the chains disagree (two start in swapped labellings).
    rhat_table = pd.read_csv(folder / "rhat_relabelling.csv")
    assert rhat_table["raw"].max() > 1.1
    assert rhat_table["relabelled"].max() <= 1.01


def test_bad_option_exits_with_usage_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--num-components", "0", "--out",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "--num-components" in completed.stderr
