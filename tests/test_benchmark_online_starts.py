"""scripts/benchmark.py online and starts: tiny runs of their tables.

In-process on tiny data (the subcommands' own --quick runs are for a user's
shell): the parsers are hooked into ``benchmark.py``, every method gives a
curve, batch and out-of-core EM (same start, same iterations) give the same
log-likelihoods, and the starts table has a median per start.
"""

import argparse

import numpy as np

from latentmix.scripts import benchmark, benchmark_online, benchmark_starts


def test_online_and_starts_are_benchmark_subcommands():
    args = benchmark.parse_args(["online", "--quick", "--n", "5000"])
    assert args.run is benchmark_online.run_online and args.n == 5000
    args = benchmark.parse_args(["starts", "--datasets", "wine", "--k", "2,3"])
    assert args.run is benchmark_starts.run_starts and args.k == (2, 3)


def test_online_curves_on_tiny_data():
    args = argparse.Namespace(n=3000, d=2, k=2, covariance_type="diag", iters=3,
                              epochs=2, batch_size=500, chunk_rows=1024, seed=0)
    curves = benchmark_online.online_curves(args)
    assert set(curves) == {"batch EM", "out-of-core EM", "online EM"}
    batch = [value for _, _, value in curves["batch EM"]]
    streamed = [value for _, _, value in curves["out-of-core EM"]]
    assert len(batch) == 3 and len(curves["online EM"]) == 2
    np.testing.assert_allclose(batch, streamed, rtol=1e-9)
    # Out of core costs one more pass (the centre and covariance).
    assert [p for p, _, _ in curves["out-of-core EM"]] == [2, 3, 4]
    report = benchmark_online.markdown_report(curves, args, "cmd", 1.0, (0.5, 0.6))
    assert "| online EM | 2 |" in report and "Load average" in report


def test_starts_table_on_tiny_data():
    args = argparse.Namespace(datasets=("wine",), k=(2,),
                              covariance_types=("spherical",),
                              inits=("kmeans", "kmeans++"), seeds=2, restarts=2)
    rows = benchmark_starts.starts_table(args)
    assert len(rows) == 1 and rows[0]["shape"] == (178, 13)
    assert set(rows[0]["ours"]) == {"kmeans", "kmeans++"}
    assert all(0 <= wins <= 2 for wins in rows[0]["wins"].values())
    assert np.isfinite(rows[0]["sklearn"])
    report = benchmark_starts.markdown_report(rows, args, "cmd", 1.0, (0.5, 0.6))
    assert "* kmeans:" in report and "wine | 178 x 13 | 2 | spherical" in report
