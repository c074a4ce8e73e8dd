"""scripts/benchmark.py scale: a tiny run of every section, bad arguments, helpers.

The --quick run (a subprocess, as a user starts it) checks the plumbing: every
section writes its table, and the numbers in it that are not times are what
theory says. Out of core against in memory and 4 sharded devices against 1 run
the same EM from the same start for the same iterations, so in float64 their
parameters differ by summation order only.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentmix.scripts import bench, benchmark_scale

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"

# Same EM from the same start, float64, values of order 1-10, a few iterations:
# only the order of summation differs (relative rounding ~1e-16 per operation,
# accumulated over a few thousand rows); 1e-9 leaves ample room and would still
# catch a wrong reduction (an error of one row's weight is ~1e-3).
SAME_COMPUTATION_ATOL = 1e-9


def run_scale(*argv, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark.py"), "scale", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _section_rows(text, heading):
    """Table rows (cells) of the section whose heading starts with ``heading``."""
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")]
            for line in lines[1:]]  # without the header row


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path):
    out = tmp_path / "report" / "scale.md"
    completed = run_scale("--quick", "--device", "cpu", "--out", str(out), "--quiet")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout == ""  # --quiet
    text = out.read_text()
    assert "scripts/benchmark.py scale --quick" in text  # the command is recorded
    assert "platform **cpu**" in text and "dtype **float64**" in text

    times = _section_rows(text, "1. Time per EM iteration")
    assert [row[0] for row in times] == ["1e3", "4,000"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in times)

    memory = _section_rows(text, "2. Peak memory")
    assert [row[0] for row in memory] == ["1e3", "4,000"]
    for row in memory:
        assert float(row[2].replace(",", "")) > 0  # in-memory peak RSS
        if row[5] != "n/a":  # out of core available: same fit as in memory
            assert float(row[8]) < SAME_COMPUTATION_ATOL

    sharded = _section_rows(text, "3. Sharded over 4 devices")
    assert len(sharded) == 2 and sharded[0][0].startswith("GMM")
    assert sharded[1][0].startswith("multinomial")
    for row in sharded:
        if row[1] != "n/a":
            assert float(row[4]) < SAME_COMPUTATION_ATOL  # parameters
            assert float(row[5]) < SAME_COMPUTATION_ATOL  # mean log-likelihood
    assert "not speed-up" in text

    sparse = _section_rows(text, "4. Sparse against dense")
    assert [row[0] for row in sparse] == ["20", "200"]
    for row in sparse:
        # 1 + Poisson(4) items per row over 20 or 200 categories: duplicates
        # merge, so between 1 and 5 distinct categories per row on average.
        assert 1.0 < float(row[1]) <= 5.0
        assert float(row[3]) > 0 and float(row[5]) > 0

    sweeps = _section_rows(text, "5. K sweeps")
    assert len(sweeps) == 2
    assert sweeps[0][0].startswith("GMM") and sweeps[1][0].startswith("multinomial")
    for row in sweeps:
        assert row[1] == "not available" or float(row[1]) > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], "expected distinct integers >= 1"),
        (["--n", "2.5"], "expected comma-separated integers"),
        (["--n", "10,10"], "expected distinct integers >= 1"),
        (["--sections", "time,speed"], "expected a comma-separated subset"),
        (["--dense-cap-gib", "-1"], "expected a value > 0"),
        (["--quick", "--full"], "not allowed with argument"),
        (["--device", "tpu"], "invalid choice"),
        (["--covariance-type", "banana"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    from latentmix.scripts import benchmark

    with pytest.raises(SystemExit) as exit_:
        benchmark.parse_args(["scale", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_device_gpu_without_a_gpu_exits_2(tmp_path):
    out = tmp_path / "scale.md"
    completed = run_scale("--quick", "--device", "gpu", "--out", str(out), "--quiet",
                          timeout=120)
    if completed.returncode == 0:
        pytest.skip("this machine has a GPU: --device gpu rightly succeeded")
    assert completed.returncode == 2, completed.stderr
    assert "--device gpu: JAX found no GPU" in completed.stderr
    assert "Traceback" not in completed.stderr and not out.exists()


def test_options_override_the_mode_settings():
    from latentmix.scripts import benchmark

    args = benchmark.parse_args(["scale", "--quick", "--n", "1e3,2e3",
                                 "--sweep-k", "1,3"])
    settings = benchmark_scale.settings_from_args(args)
    assert settings == benchmark_scale.QUICK._replace(n=(1000, 2000),
                                                      sweep_k=(1, 3))
    assert args.sections == benchmark_scale.SECTIONS
    full = benchmark_scale.settings_from_args(benchmark.parse_args(["scale",
                                                                    "--full"]))
    assert full.n[-1] == 10_000_000 and full.protocol_rows is None


def test_int_list_parses_powers_of_ten_and_rejects_fractions():
    assert bench.int_list("10000,1e5, 2") == (10_000, 100_000, 2)
    for text in ("2.5", "a", "", "3,3", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.int_list(text)


def test_sparse_counts_have_the_asked_shape_and_sparsity():
    counts = benchmark_scale.sparse_counts(4000, 10_000, 5.0, 10, seed=0)
    assert counts.shape == (4000, 10_000)
    row_totals = np.asarray(counts.sum(axis=1)).ravel()
    # Row totals are 1 + Poisson(4): mean 5, sd 2; the mean of 4000 rows is
    # within 5 standard errors (5 x 2 / sqrt(4000) = 0.16) of 5.
    assert abs(row_totals.mean() - 5.0) < 0.16
    assert row_totals.min() >= 1
    # Distinct categories per row can only be fewer than the items drawn.
    assert counts.nnz <= row_totals.sum()
    assert counts.nnz / 4000 > 4.0  # over 10,000 categories, few draws coincide


def test_anonymous_memory_sampler_sees_an_allocation():
    sampler_cls = benchmark_scale.AnonymousMemorySampler
    if sampler_cls.current_kib() is None:
        pytest.skip("no /proc/self/status RssAnon on this platform")
    with sampler_cls() as sampler:
        before = sampler_cls.current_kib()
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, written so it is resident
        after = sampler_cls.current_kib()
        time.sleep(0.05)  # ten sampling intervals with the block alive
        del block
    # The allocation raised anonymous memory by about 64 MiB, and the sampler,
    # reading every 5 ms while the block lived, saw at least that level (less
    # 1 MiB for allocations of this process that came and went in between).
    assert after - before > 60 * 1024
    assert sampler.peak_kib >= after - 1024
