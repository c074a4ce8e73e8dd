"""scripts/benchmark.py multinomial on a tiny problem, and the reference EM itself.

* The tiny run (300 training baskets, K in {2, 3}, 2 iterations, 2 restarts) checks
  the plumbing and the one number of the speed table that is not a time: both
  implementations started from the same parameters reach the same parameters
  after one iteration, which proves that the timed calls run the same algorithm.
* ``scripts/reference_mnmm.py`` (the tutorial's algorithm, kept as the baseline)
  is checked against independent computations on small data where nothing
  underflows: its E-step is Bayes' rule (scipy pmf), its VLB equals the
  log-likelihood when gamma is the posterior (the bound is tight after an
  E-step), and 20 of its iterations match 20 of ours from the same start.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy.stats import multinomial

from latentmix.data.simulate_counts import sample_multinomial_mixture
from latentmix.inference.em import (
    ConvergenceWarning,
    MultinomialMixtureParams,
    fit_multinomial_mixture,
)
from latentmix.models.multinomial_mixture import log_likelihood
from latentmix.scripts import benchmark_multinomial, reference_mnmm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"


def _table_rows(text, first_cell):
    return [[cell.strip() for cell in line.strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith(f"| {first_cell} |")]


@pytest.fixture(scope="module")
def small_counts():
    """300 baskets of 4 categories from a 3-component mixture, 5..15 lines each:
    pmf values stay far above the smallest double, so no row underflows."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=3)
    counts, _ = sample_multinomial_mixture(
        np.array([0.5, 0.3, 0.2]), probs, rng.integers(5, 16, 300),
        rng_key=jax.random.key(0))
    return np.asarray(counts, dtype=np.float64)


def test_reference_e_step_is_bayes_rule(small_counts):
    ref = reference_mnmm
    rng = np.random.default_rng(1)
    alpha, beta = ref.reference_init(rng, 3, small_counts.shape[1])
    gamma = ref.reference_e_step(small_counts, alpha, beta)
    totals = small_counts.sum(axis=1)
    joint = np.column_stack([alpha[k] * multinomial(totals, beta[k]).pmf(small_counts)
                             for k in range(3)])
    # Same products and one division per cell: float64 rounding only.
    np.testing.assert_allclose(gamma, joint / joint.sum(axis=1, keepdims=True),
                               rtol=1e-12)
    assert np.allclose(gamma.sum(axis=1), 1.0)


def test_reference_vlb_is_tight_after_the_e_step(small_counts):
    ref = reference_mnmm
    rng = np.random.default_rng(2)
    alpha, beta = ref.reference_init(rng, 3, small_counts.shape[1])
    gamma = ref.reference_e_step(small_counts, alpha, beta)
    vlb = ref.reference_vlb(small_counts, alpha, beta, gamma)
    total = float(np.sum(log_likelihood(MultinomialMixtureParams(alpha, beta),
                                        small_counts)))
    # ELBO(q = posterior) = log p exactly; ~1e3 nats summed over 300 rows in
    # float64, so agreement to 1e-9 relative is rounding.
    np.testing.assert_allclose(vlb, total, rtol=1e-9)
    np.testing.assert_allclose(
        ref.reference_log_likelihood(small_counts, alpha, beta), total, rtol=1e-9)


def test_reference_iterations_match_ours_from_the_same_start(small_counts):
    ref = reference_mnmm
    rng = np.random.default_rng(3)
    alpha, beta = ref.reference_init(rng, 3, small_counts.shape[1])
    theirs = ref.reference_train_once(small_counts, alpha, beta, rtol=0.0,
                                      max_iter=20)
    assert theirs.num_iters == 20
    with pytest.warns(ConvergenceWarning):  # tol = 0 never "converges"
        ours = fit_multinomial_mixture(
            small_counts, 3, init=MultinomialMixtureParams(alpha, beta), tol=0.0,
            rtol=0.0, max_iters=20)
    # The same closed-form updates; rounding differences of ~1e-16 grow by at
    # most the contraction factor of EM per step, far below 1e-10 over 20 steps.
    np.testing.assert_allclose(ours.params.weights, theirs.alpha, atol=1e-10)
    np.testing.assert_allclose(ours.params.probs, theirs.beta, atol=1e-10)


@pytest.mark.slow
def test_tiny_multinomial_benchmark_writes_its_tables(tmp_path):
    out = tmp_path / "bench" / "multinomial.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "multinomial", "--rows", "300", "--k", "2,3",
         "--protocol-k", "2,3", "--max-iters", "2", "--iters", "2",
         "--reference-rows", "100", "--reference-iters", "2", "--restarts", "2",
         "--dtypes", "float64", "--out", str(out), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout == ""
    text = out.read_text()
    assert "scripts/benchmark.py multinomial --rows 300" in text
    assert "300 x 94 line counts" in text
    speed_2, fixed_2, protocol_2 = _table_rows(text, "2")
    speed_3, fixed_3, protocol_3 = _table_rows(text, "3")
    for row in (fixed_2, fixed_3):
        assert all(float(cell) >= 0 for cell in row[1:])
    for row in (speed_2, speed_3):
        reference_sample, reference_all = float(row[1]), float(row[2])
        # Linear extrapolation from 100 to 300 rows.
        np.testing.assert_allclose(reference_all, 3 * reference_sample, rtol=0.02)
        times = [float(cell.removesuffix(" ms")) for cell in row[3:7:2]]
        assert all(value > 0 for value in times)
        # One iteration of both from the same start: float64 rounding only.
        assert float(row[-1]) < 1e-12
    for row, k in ((protocol_2, 2), (protocol_3, 3)):
        assert int(row[0]) == k and float(row[1]) > 0
        assert int(row[2]) == 2 and row[3] == "no"  # capped at --max-iters 2
        assert -40 < float(row[4]) < 0  # mean training log-likelihood per basket
    assert "Total: ours" in text
    # Issue 14: GFLOP/s and the share of the GEMM peak measured in the run.
    flop_rows = [[cell.strip() for cell in line.strip("|").split(" | ")]
                 for line in text.splitlines() if line.startswith("| K=")]
    assert [row[0] for row in flop_rows] == ["K=2", "K=3"]
    assert all(float(row[1]) > 0 and row[3].endswith("%") for row in flop_rows)


def test_a_tiny_iteration_time_never_prints_as_zero():
    """Per-iteration times of a tiny problem are microseconds: two decimals of a
    millisecond would print them as 0.00 (and the table's ratio next to them
    would look like a division by zero)."""
    module = benchmark_multinomial
    assert module._milliseconds(3.2e-6) == "0.0032 ms"
    assert module._milliseconds(0.06425) == "64.25 ms"
    assert module._milliseconds(1e-4) == "0.10 ms"
