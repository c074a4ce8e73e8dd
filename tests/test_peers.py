"""The benchmark's peers (scripts/peers.py), its worker and its flop counts.

Every peer started from our start and run for the same iterations must land on
our parameters (scored by the same numpy log-likelihood); a peer that is not
installed (gmmx and torchgmm come with the optional ``[bench]`` extra) is
reported as unavailable, which is tested with a fake missing module, so the
code path runs in CI where the extra is not installed.
"""

import sys
import warnings

import numpy as np
import pytest
import scipy.stats as st

from latentmix.inference.em import ConvergenceWarning, fit_gaussian_mixture
from latentmix.models.gaussian_mixture import COVARIANCE_TYPES
from latentmix.scripts import bench_worker, benchmark, peers
from latentmix.scripts.bench import (
    gmm_flops,
    multinomial_flops,
    run_worker,
    simulate,
    start_params,
)


def _ours(x, start, covariance_type, iters):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_gaussian_mixture(x, start.weights.shape[0],
                                    covariance_type=covariance_type, init=start,
                                    max_iters=iters, tol=0.0)


def test_peer_log_likelihood_is_the_mixture_density():
    x = simulate(300, 3, 2, "float64", seed=1)
    start = start_params(x, 2, "full", seed=1)
    density = sum(w * st.multivariate_normal(m, c).pdf(x) for w, m, c in zip(
        start.weights, start.means, start.covariances, strict=True))
    np.testing.assert_allclose(peers.peer_log_likelihood(start, x),
                               np.mean(np.log(density)), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sklearn_peer_reaches_our_parameters(covariance_type):
    x = simulate(500, 3, 3, "float64", seed=0)
    start = start_params(x, 3, covariance_type, seed=0)
    fit = peers.fit_peer("sklearn", x, start, covariance_type, 4)
    ours = _ours(x, start, covariance_type, 4)
    assert fit.num_iters == 4 and fit.dtype == "float64"
    # Same float64 EM from the same start: rounding only.
    np.testing.assert_allclose(fit.params.means, ours.params.means, atol=1e-10)
    np.testing.assert_allclose(fit.params.covariances, ours.params.covariances,
                               atol=1e-10)
    np.testing.assert_allclose(peers.peer_log_likelihood(fit.params, x),
                               float(ours.log_likelihood), atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmmx_from_our_start_reaches_our_fit(covariance_type):
    pytest.importorskip("gmmx")
    x = simulate(500, 3, 3, "float64", seed=0)
    start = start_params(x, 3, covariance_type, seed=0)
    fit = peers.fit_peer("gmmx", x, start, covariance_type, 4)
    ours = _ours(x, start, covariance_type, 4)
    assert fit.num_iters == 4 and fit.dtype == "float32"
    # gmmx computes in float32: ~1e-7 relative on values of size ~5.
    np.testing.assert_allclose(peers.peer_log_likelihood(fit.params, x),
                               float(ours.log_likelihood), atol=1e-5)


def test_gmmx_has_no_tied_or_spherical():
    x = simulate(100, 2, 2, "float64", seed=0)
    with pytest.raises(peers.PeerUnavailable, match="tied"):
        peers.fit_peer("gmmx", x, start_params(x, 2, "tied", seed=0), "tied", 2)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_torchgmm_from_our_start_reaches_our_fit(covariance_type):
    pytest.importorskip("torchgmm")
    x = simulate(500, 3, 3, "float64", seed=0)
    start = start_params(x, 3, covariance_type, seed=0)
    fit = peers.fit_peer("torchgmm", x, start, covariance_type, 4)
    ours = _ours(x, start, covariance_type, 4)
    assert fit.num_iters == 4 and fit.dtype == "float64"
    # torchgmm's float64 arithmetic differs from scikit-learn's and ours in
    # its last digits after a few iterations (measured ~3e-8).
    np.testing.assert_allclose(peers.peer_log_likelihood(fit.params, x),
                               float(ours.log_likelihood), atol=1e-6)


@pytest.mark.parametrize("name", ["gmmx", "torchgmm"])
def test_missing_peer_is_unavailable_not_an_error(name, monkeypatch):
    for module in [module for module in sys.modules
                   if module == name or module.startswith(name + ".")] + [name]:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    x = simulate(100, 2, 2, "float64", seed=0)
    start = start_params(x, 2, "full", seed=0)
    with pytest.raises(peers.PeerUnavailable, match=r"\.\[bench\]"):
        peers.fit_peer(name, x, start, "full", 2)
    result = bench_worker.run_task({
        "task": "gmm", "library": name, "n": 100, "d": 2, "k": 2,
        "covariance_type": "full", "dtype": "float64", "iters": 2, "repeats": 1,
        "seed": 0, "device": "cpu"})
    assert "pip install" in result["unavailable"]


def test_worker_times_ours_and_reports_the_final_log_likelihood():
    # In worker processes, as the benchmark runs them (each library timed
    # alone; device.configure and the thread pools stay out of this process).
    spec = {"task": "gmm", "library": "ours", "n": 200, "d": 2, "k": 2,
            "covariance_type": "diag", "dtype": "float64", "iters": 3,
            "repeats": 2, "seed": 0, "device": "cpu"}
    result = run_worker(spec, timeout=300)
    assert len(result["times"]) == 2 and min(result["times"]) > 0
    assert result["iters"] == 3 and result["dtype"] == "float64"
    reference = run_worker({**spec, "library": "sklearn"}, timeout=300)
    assert abs(result["log_likelihood"] - reference["log_likelihood"]) < 1e-10
    gemm = run_worker({"task": "gemm", "library": "numpy", "dtypes": ["float64"],
                       "size": 64, "repeats": 3}, timeout=300)
    assert gemm["float64"]["gflops"] > 0


def test_flop_counts():
    assert gmm_flops(10, 3, 2, "full") == 4 * 10 * 2 * 9
    assert gmm_flops(10, 3, 2, "tied") == 2 * 10 * 9 + 4 * 10 * 2 * 3
    assert gmm_flops(10, 3, 2, "diag") == 8 * 10 * 2 * 3
    assert gmm_flops(10, 3, 2, "spherical") == 4 * 10 * 2 * 4
    assert multinomial_flops(10, 5, 3) == 4 * 10 * 5 * 3


def test_peers_argument_always_includes_sklearn():
    args = benchmark.parse_args(["gmm", "--peers", "torchgmm,gmmx"])
    assert args.peers == ("sklearn", "torchgmm", "gmmx")
    assert benchmark.parse_args(["gmm"]).peers == ("sklearn",)
    with pytest.raises(SystemExit):
        benchmark.parse_args(["gmm", "--peers", "pycave"])


def test_gemm_peak_is_the_best_measurement():
    start = {("numpy", "float64"): 30.0, ("xla", "float64"): 40.0,
             ("numpy", "float32"): 60.0, ("xla", "float32"): 50.0}
    end = {key: value + 5.0 for key, value in start.items()}
    assert benchmark.gemm_peak([start, end], "float64") == 45.0
    assert benchmark.gemm_peak([start, end], "float32") == 65.0
    assert benchmark.gemm_peak([start], "float32", "gpu") == 50.0  # XLA only



def test_a_peer_that_gives_no_result_in_time_is_reported_not_awaited():
    # gmmx on jax 0.10 was seen to hang in its first call (every thread
    # waiting): the benchmark stops such a peer and says so in its table.
    spec = {"task": "gemm", "library": "numpy", "dtypes": ["float64"],
            "size": 64, "repeats": 1}
    result = benchmark.run_peer(spec, timeout=0.01)  # less than Python's start-up
    assert result == {"unavailable": "no result within --peer-timeout 0.01 s "
                                     "(stopped)"}
    assert "float64" in benchmark.run_peer(spec, timeout=None)
