"""scripts/benchmark.py gmm on a tiny problem, as a subprocess, plus its set-up.

The tiny run (N = 1000, d = 2, K = 2, full, float64, 2 iterations) checks the
plumbing and the one number in the table that is not a time: the final mean
log-likelihoods of both libraries from the same start must agree to float64
rounding, which proves that the two timed calls do the same computation.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentmix.models.gaussian_mixture import COVARIANCE_TYPES, check_params
from latentmix.scripts import benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"




def _table_rows(text, first_cell):
    return [[cell.strip() for cell in line.strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith(f"| {first_cell} |")]


@pytest.mark.slow
def test_tiny_gmm_benchmark_writes_its_table(tmp_path):
    out = tmp_path / "bench" / "gmm.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "gmm", "--n", "1000", "--d", "2", "--k", "2",
         "--covariance-types", "full", "--dtypes", "float64", "--iters", "2",
         "--repeats", "1", "--restarts", "2", "--restart-iters", "4",
         "--screen-iters", "2", "--out", str(out), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout == ""
    text = out.read_text()
    assert "scripts/benchmark.py gmm --n 1000" in text  # the command is recorded
    rows = _table_rows(text, "1e3")
    assert len(rows) == 2  # one timing row, one restart row
    timing, restart = rows
    assert timing[:5] == ["1e3", "2", "2", "full", "float64"]
    compile_s, ours_s, sklearn_s = (float(cell) for cell in timing[5:8])
    assert compile_s >= 0 and ours_s > 0 and sklearn_s > 0
    assert float(timing[8].rstrip("x")) > 0
    # Same start, same 2 iterations, float64: rounding only (~1e-15 per row).
    assert float(timing[9]) < 1e-10
    assert restart[:5] == ["1e3", "2", "2", "full", "float64"]
    assert float(restart[7].rstrip("x")) > 0
    assert float(restart[9].rstrip("x")) > 0  # screened restarts


def test_gmm_device_gpu_without_a_gpu_exits_2(tmp_path):
    out = tmp_path / "gmm.md"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "gmm", "--device", "gpu", "--n", "1000",
         "--d", "2", "--k", "2", "--restarts", "0", "--out", str(out), "--quiet"],
        cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
        text=True, timeout=120,
    )
    if completed.returncode == 0:
        pytest.skip("this machine has a GPU: --device gpu rightly succeeded")
    assert completed.returncode == 2, completed.stderr
    assert "--device gpu: JAX found no GPU" in completed.stderr
    assert "Traceback" not in completed.stderr and not out.exists()


def test_start_is_valid_and_sklearn_precisions_invert_it():
    x = benchmark.simulate(500, 3, 4, "float64", seed=0)
    for covariance_type in COVARIANCE_TYPES:
        start = benchmark.start_params(x, 4, covariance_type, seed=0)
        check_params(start, 3, covariance_type)  # raises if the structure is off
        precisions = benchmark.sklearn_precisions(start, covariance_type)
        covariances = np.asarray(start.covariances)
        if covariance_type == "full":
            products = precisions @ covariances
        elif covariance_type == "tied":
            products = precisions @ covariances[0]
        else:
            diagonal = np.diagonal(covariances, axis1=1, axis2=2)
            products = (precisions[:, None] if precisions.ndim == 1
                        else precisions) * diagonal
        np.testing.assert_allclose(products, np.broadcast_to(
            np.eye(3) if covariance_type in ("full", "tied") else 1.0,
            products.shape), atol=1e-12)


@pytest.mark.parametrize("argv, message", [
    ([], "gmm"),
    (["gmm", "--covariance-types", "full,banded"], "--covariance-types"),
    (["gmm", "--n", "many"], "--n"),
    (["gmm", "--iters", "0"], "--iters"),
])
def test_bad_arguments_exit_with_usage_error(argv, message):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert message in completed.stderr
