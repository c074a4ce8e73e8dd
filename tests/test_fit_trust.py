"""fit.py on data nobody here prepared (issue 12, sections 2-6).

Each test provokes one mechanism the way a user met it: a table saved by
pandas with its index, a decimal comma, a gzip file, held-out baskets with
categories the training rows never show, two runs into one folder, a second
Ctrl-C, absurd resource requests, float32 data far from 0. Validation cases
call ``fit.main(argv)`` in-process (the exit status and everything the
command does); runs that change JAX's process-wide precision or need signals
use subprocesses.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from latentmix.data.tables import heldout_split
from latentmix.inference.em import fit_linear_regression
from latentmix.scripts import fit
from latentmix.scripts.runtime import OutputFolder

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def call(capsys, *argv):
    status = fit.main([str(a) for a in argv])
    return status, capsys.readouterr().err


def run_cli(*argv, env=None, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPTS / "fit.py"),
                           *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def params(out) -> dict:
    return json.loads((Path(out) / "params.json").read_text())


@pytest.fixture(scope="module")
def points(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (40, 2)), rng.normal(3, 1, (40, 2))])
    frame = pd.DataFrame(x, columns=["u", "v"])
    frame.to_csv(folder / "points.csv", index=False)
    return folder, frame


# ------------------------------------------------------------------ tables


def test_pandas_index_column_is_read_as_the_index(points, tmp_path, capsys):
    folder, frame = points
    frame.to_csv(tmp_path / "indexed.csv")  # pandas' default: index=True
    out = tmp_path / "out"
    status, err = call(capsys, "gaussian-mixture", "--data",
                       tmp_path / "indexed.csv", "--columns", "u,v", "--k", "2",
                       "--out", out, "--quiet")
    assert status == 0, err
    assert "read as a saved row index" in err
    assert params(out)["columns"] == ["u", "v"]
    assert any("row index" in note for note in params(out)["warnings"])


def test_bom_and_spaces_in_the_header_are_stripped_with_a_warning(points, tmp_path,
                                                                  capsys):
    _, frame = points
    text = frame.to_csv(index=False).replace("u,v", " u , v", 1)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    status, err = call(capsys, "gaussian-mixture", "--data", tmp_path / "bom.csv",
                       "--columns", "u,v", "--k", "2", "--out", tmp_path / "out",
                       "--quiet")
    assert status == 0, err
    assert "column names stripped" in err and "' u ' -> 'u'" in err


@pytest.mark.parametrize(("cell", "hint"), [
    ('"1,5"', "decimal comma"),
    ('"1,500"', "thousands separator"),
    ('"1.234,5"', "'.' thousands and ',' decimals"),
])
def test_number_format_hints(tmp_path, capsys, cell, hint):
    (tmp_path / "d.csv").write_text(f"u,v\n1.0,2.0\n{cell},3.0\n2.0,1.0\n")
    status, err = call(capsys, "gaussian-mixture", "--data", tmp_path / "d.csv",
                       "--k", "1", "--out", tmp_path / "out")
    assert status == 3
    assert "column 'u', row 2" in err and hint in err


def test_a_gzip_file_is_named_as_such(points, tmp_path, capsys):
    folder, _ = points
    target = tmp_path / "points.csv"
    target.write_bytes(gzip.compress((folder / "points.csv").read_bytes()))
    status, err = call(capsys, "gaussian-mixture", "--data", target, "--k", "2",
                       "--out", tmp_path / "out")
    assert status == 3 and "is a gzip file" in err and "gzip -d" in err
    assert "UTF-8" not in err


def test_long_format_errors_name_the_file_and_a_one_based_row(tmp_path, capsys):
    lines = pd.DataFrame({"basket": ["b1", "b1", "b2", "b2"],
                          "category": ["milk", None, "milk", "beer"]})
    lines.to_csv(tmp_path / "lines.csv", index=False)
    status, err = call(capsys, "multinomial-mixture", "--data",
                       tmp_path / "lines.csv", "--format", "long", "--k", "1",
                       "--out", tmp_path / "out")
    assert status == 3
    assert str(tmp_path / "lines.csv") in err and "first at row 2" in err


def test_datetime_columns_are_refused(tmp_path, capsys):
    frame = pd.DataFrame({"u": np.arange(10.0), "when": pd.date_range(
        "2026-01-01", periods=10)})
    frame.to_parquet(tmp_path / "t.parquet")
    status, err = call(capsys, "gaussian-mixture", "--data",
                       tmp_path / "t.parquet", "--k", "1", "--out", tmp_path / "o")
    assert status == 3 and "'when' holds dates or times" in err


# ------------------------------------------------------------------ regression


def test_regression_data_that_deserve_a_word(tmp_path, capsys):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30)})
    frame["a2"] = frame["a"]
    frame["y"] = frame["a"] - frame["b"] + rng.normal(0, 0.1, 30)
    frame.to_csv(tmp_path / "r.csv", index=False)
    status, err = call(capsys, "linear-regression", "--data", tmp_path / "r.csv",
                       "--target", "y", "--out", tmp_path / "out", "--quiet")
    assert status == 0, err
    # named, not given by position in the array with the bias column (b2.18)
    assert "identical columns [['a', 'a2']]" in err
    frame.assign(y=2.0).to_csv(tmp_path / "c.csv", index=False)
    status, err = call(capsys, "linear-regression", "--data", tmp_path / "c.csv",
                       "--target", "y", "--out", tmp_path / "c")
    assert status == 3 and "y is constant" in err
    frame.iloc[:1].to_csv(tmp_path / "one.csv", index=False)
    status, err = call(capsys, "linear-regression", "--data", tmp_path / "one.csv",
                       "--target", "y", "--out", tmp_path / "one")
    assert status == 3 and "at least 2 rows" in err


def test_regression_refuses_values_whose_squares_overflow():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(20, 2)), rng.normal(size=20)
    with pytest.raises(ValueError, match="overflow"):
        fit_linear_regression(X * 1e200, y)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag"])
def test_gmm_em_on_columns_measured_1e8_apart_in_scale(points, covariance_type):
    # RELIABILITY b2.20: columns in units 1e4 and 1e-4 (a common situation: a
    # count next to a rate) used to fail every restart (the full-covariance
    # resolution test compared the small column's variance with the large
    # one's). EM is equivariant under a change of units: the fit equals the fit
    # of the unit-scale data mapped back, and scikit-learn's from the same
    # start (independent reference).
    from sklearn.mixture import GaussianMixture as SkMixture

    from latentmix.inference.em import fit_gaussian_mixture
    from latentmix.models import gaussian_mixture as gm

    _, frame = points
    unit = frame.to_numpy()
    scale = np.array([1e4, 1e-4])
    options = {"covariance_type": covariance_type, "reg_covar": 0.0,
               "max_iters": 500, "tol": 1e-12, "rng_key": jax.random.key(0)}
    ours_unit = fit_gaussian_mixture(unit, 2, **options)
    ours = fit_gaussian_mixture(unit * scale, 2, **options)
    reference = SkMixture(2, covariance_type=covariance_type, reg_covar=0.0,
                          tol=1e-12, max_iter=1000, random_state=0).fit(unit)
    assert np.isfinite(float(ours.log_likelihood))
    # Two clusters 6 sd apart: every start reaches the same optimum, where the
    # mean log-likelihood shifts by -sum(log scale) under the change of units;
    # 1e-9 nats allows the rounding of a few hundred iterations on 80 rows.
    np.testing.assert_allclose(float(ours.log_likelihood),
                               float(ours_unit.log_likelihood) - np.log(scale).sum(),
                               atol=1e-9)
    assert abs(reference.score(unit) - float(ours_unit.log_likelihood)) < 1e-9

    def by_first_mean(params, unit_scale):
        order = np.argsort(np.asarray(params.means)[:, 0])
        variances = np.asarray(gm.diagonal_variances(params, covariance_type))
        return (np.asarray(params.means)[order] / unit_scale,
                variances[order] / unit_scale**2)

    # Parameters in the original units, mapped back: equal to 1e-7 relative
    # (rounding of the near-optimum, amplified by the 1e8 ratio of the scales).
    for got, want in zip(by_first_mean(ours.params, scale),
                         by_first_mean(ours_unit.params, np.ones(2)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-7)


@pytest.mark.parametrize(("factor", "message"), [
    (1e200, "their squares overflow float64"),
    (1e-200, "their variances underflow float64"),
])
def test_gmm_columns_beyond_float64_are_refused_by_name(points, tmp_path, capsys,
                                                        factor, message):
    _, frame = points
    (frame * factor).to_csv(tmp_path / "x.csv", index=False)
    status, err = call(capsys, "gaussian-mixture", "--data", tmp_path / "x.csv",
                       "--k", "2", "--out", tmp_path / "out", "--quiet")
    assert status == 3, err
    assert "column(s) ['u', 'v']" in err and message in err
    assert "rescale" in err


def test_collinear_columns_are_named_not_blamed_on_k(points, tmp_path, capsys):
    _, frame = points
    collinear = frame.assign(w=2 * frame["u"] - frame["v"])
    collinear.to_csv(tmp_path / "c.csv", index=False)
    status, err = call(capsys, "gaussian-mixture", "--data", tmp_path / "c.csv",
                       "--k", "2", "--out", tmp_path / "out", "--quiet")
    assert status == 0, err
    assert "columns ['u', 'v', 'w'] of x are linearly dependent" in err


# ------------------------------------------------------------------ held-out


@pytest.fixture(scope="module")
def rare_baskets(tmp_path_factory):
    """Wide baskets where one category occurs in held-out rows only."""
    folder = tmp_path_factory.mktemp("rare")
    rng = np.random.default_rng(3)
    probs = np.array([[.6, .3, .1], [.1, .3, .6]])
    counts = np.concatenate([rng.multinomial(10, probs[0], size=60),
                             rng.multinomial(10, probs[1], size=60)])
    rare = np.zeros(len(counts), dtype=int)
    _, test = heldout_split(len(counts), seed=0)
    rare[test[:2]] = 1  # only in held-out baskets (the split of --seed 0)
    frame = pd.DataFrame(np.column_stack([counts, rare]),
                         columns=["milk", "bread", "beer", "caviar"])
    frame.to_csv(folder / "baskets.csv", index=False)
    return folder / "baskets.csv"


def test_heldout_scoring_is_finite_with_the_default_pseudocount(rare_baskets,
                                                                tmp_path, capsys):
    out = tmp_path / "out"
    status, err = call(capsys, "multinomial-mixture", "--data", rare_baskets,
                       "--k-range", "1:4", "--criterion", "heldout", "--seed", "0",
                       "--restarts", "2", "--out", out)
    assert status == 0, err
    table = pd.DataFrame(params(out)["selection"])
    assert np.isfinite(table["heldout_log_likelihood"]).all()
    # Two segments generated the data: the held-out score must prefer K >= 2
    # over K = 1 (the first K, which a -inf criterion used to pick).
    assert params(out)["num_components"] >= 2
    assert "chosen K = " in err and str(out) in err


def test_heldout_without_smoothing_is_an_error_naming_the_category(rare_baskets,
                                                                  tmp_path, capsys):
    out = tmp_path / "out"
    status, err = call(capsys, "multinomial-mixture", "--data", rare_baskets,
                       "--k-range", "1:3", "--criterion", "heldout", "--seed", "0",
                       "--restarts", "1", "--pseudocount", "0", "--out", out)
    assert status == 4, err
    assert "caviar" in err and "--pseudocount" in err
    assert params(out)["status"] == "numerical_failure"
    # the warning is said once, with the flag, not the API argument
    assert err.count("never observed in the training rows") == 1
    assert "MultinomialMixturePrior" not in err


# ------------------------------------------------------------------ output folder


def test_a_busy_output_folder_is_refused(points, tmp_path, capsys):
    folder, _ = points
    out = tmp_path / "out"
    with OutputFolder(out, overwrite=True):
        status, err = call(capsys, "gaussian-mixture", "--data",
                           folder / "points.csv", "--k", "2", "--out", out,
                           "--overwrite")
    assert status == 5 and "being written by another run" in err
    assert not (out / "params.json").exists()


def test_overwrite_removes_the_previous_runs_files_and_stale_temporaries(
        points, tmp_path, capsys):
    folder, frame = points
    out = tmp_path / "out"
    assert call(capsys, "gaussian-mixture", "--data", folder / "points.csv",
                "--k", "2", "--out", out, "--quiet")[0] == 0
    assert (out / "assignments.csv").exists()
    # the name atomic_write_bytes gives its temporaries (mkstemp: 8 characters)
    (out / ".predictions.csv.ab12cd_8").write_text("left by a killed run")
    frame.assign(y=frame["u"] + 1).to_csv(tmp_path / "r.csv", index=False)
    status, err = call(capsys, "linear-regression", "--data", tmp_path / "r.csv",
                       "--target", "y", "--out", out, "--overwrite", "--quiet")
    assert status == 0, err
    names = {p.name for p in out.iterdir()}
    assert "assignments.csv" not in names  # the Gaussian mixture's
    assert "predictions.csv" in names
    assert not [name for name in names if name.startswith(".")]
    assert set(params(out)["files"]) == names


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(("argv", "message"), [
    (["--sep", ";;"], "--sep must be a single character"),
    (["--seed", str(2**70)], "--seed"),
    (["--k-range", "1:1000000000"], "--k-range"),
    (["--restarts", "10000000"], "needs about"),
])
def test_absurd_arguments_exit_2(points, tmp_path, capsys, argv, message):
    folder, _ = points
    argv = ["--k", "2", *argv] if "--k-range" not in argv else argv
    try:
        status, err = call(capsys, "gaussian-mixture", "--data",
                           folder / "points.csv", *argv, "--out", tmp_path / "o")
    except SystemExit as exit_:
        status, err = exit_.code, capsys.readouterr().err
    assert status == 2, err
    assert message in err


def test_a_literal_backslash_t_separator_means_tab(points, tmp_path, capsys):
    _, frame = points
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    status, err = call(capsys, "gaussian-mixture", "--data", tmp_path / "t.tsv",
                       "--sep", "\\t", "--k", "2", "--out", tmp_path / "o",
                       "--quiet")
    assert status == 0, err


def test_a_huge_max_iters_does_not_allocate_its_trace(points, tmp_path, capsys):
    folder, _ = points
    out = tmp_path / "o"
    # A trace of 1e9 float64 values would need 8 GB: the trace is capped
    # (TRACE_LIMIT) and the fit converges long before.
    status, err = call(capsys, "gaussian-mixture", "--data", folder / "points.csv",
                       "--k", "2", "--max-iters", "1000000000", "--out", out,
                       "--quiet")
    assert status == 0, err
    assert params(out)["em"]["converged"]


# ------------------------------------------------------------------ environment


def test_an_invalid_mplbackend_does_not_break_a_run(points, tmp_path):
    folder, _ = points
    env = {**os.environ, "MPLBACKEND": "module://no_such_backend"}
    result = run_cli("gaussian-mixture", "--data", folder / "points.csv", "--k",
                     "2", "--out", tmp_path / "o", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "report.html").exists()


def test_float32_data_far_from_zero_is_centred_before_the_cast(tmp_path):
    rng = np.random.default_rng(4)
    # Two components 20 sd apart: EM's responsibilities are 0 or 1 after a
    # step or two, so both dtypes end at the per-component sample means.
    x = np.concatenate([rng.normal(-0.1, 0.01, (60, 1)),
                        rng.normal(0.1, 0.01, (60, 1))]) + 1e6
    pd.DataFrame({"x": x[:, 0]}).to_csv(tmp_path / "far.csv", index=False)
    means = {}
    for dtype in ("float32", "float64"):
        out = tmp_path / dtype
        result = run_cli("gaussian-mixture", "--data", tmp_path / "far.csv",
                         "--k", "2", "--dtype", dtype, "--out", out, "--quiet")
        assert result.returncode == 0, result.stderr
        means[dtype] = np.sort(np.asarray(params(out)["means"])[:, 0])
    # Cast before centring, float32 resolves 1e6 only to 0.0625 (6 sd): each
    # value moves by up to 0.03 and the means with it. Centred first, the
    # float32 means differ from float64 by float32 rounding of values of size
    # 0.1 (~1e-8) summed over 60 rows: 1e-5 (0.1 sd) bounds it with room.
    np.testing.assert_allclose(means["float32"], means["float64"], atol=1e-5,
                               rtol=0)
    assert np.diff(means["float64"])[0] > 0.15  # the two components, apart


def test_float32_counts_beyond_exact_integers_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    counts = rng.multinomial(2**25, [0.5, 0.3, 0.2], size=20)
    pd.DataFrame(counts, columns=["a", "b", "c"]).to_csv(tmp_path / "big.csv",
                                                         index=False)
    result = run_cli("multinomial-mixture", "--data", tmp_path / "big.csv",
                     "--k", "2", "--dtype", "float32", "--out", tmp_path / "o")
    assert result.returncode == 3, result.stderr
    assert "2**24" in result.stderr and "float64" in result.stderr
    # The status matches the exit (it said "running" before issue 12's fix).
    assert params(tmp_path / "o")["status"] == "invalid_data"


def test_a_failed_run_leaves_its_status_or_nothing(points, tmp_path, capsys):
    folder, _ = points
    missing = tmp_path / "absent"
    status, err = call(capsys, "gaussian-mixture", "--data", tmp_path / "no.csv",
                       "--k", "2", "--out", missing)
    assert status == 3 and "not found" in err
    assert not missing.exists()  # checked before any output: no empty folder
    out = tmp_path / "big_k"
    status, err = call(capsys, "gaussian-mixture", "--data", folder / "points.csv",
                       "--k", "500", "--out", out)
    assert status == 3
    assert not out.exists() or params(out)["status"] == "invalid_data"


# ------------------------------------------------------------------ signals


def _interrupt_twice(argv, out):
    process = subprocess.Popen([sys.executable, str(SCRIPTS / "fit.py"), *argv],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    for line in process.stderr:
        if "NUTS ..." in line or time.time() > deadline:
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.time()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    return process.returncode, time.time() - sent


def test_a_second_interrupt_exits_at_once_and_leaves_no_temporary(points,
                                                                  tmp_path):
    folder, _ = points
    out = tmp_path / "o"
    status, seconds = _interrupt_twice(
        ["gaussian-mixture", "--data", str(folder / "points.csv"), "--k", "2",
         "--method", "nuts", "--num-warmup", "5000", "--num-samples", "5000",
         "--num-chains", "1", "--out", str(out)], out)
    assert status == 130
    # "At once": the watcher thread exits without waiting for the running
    # XLA chunk; 10 s covers interpreter shutdown on a loaded 2-core machine.
    assert seconds < 10
    assert params(out)["status"] == "interrupted"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


_HELD = """
import os, signal, sys, time
from latentmix.scripts import runtime as rt
rt.INTERRUPT_GRACE_S = float(sys.argv[1])
rt.on_abort(lambda: open(sys.argv[2], "w").write("interrupted"))
with rt.interrupts():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(120)  # held, as by an XLA compilation: no checkpoint runs
print("the block ended")
"""


def test_a_first_interrupt_ends_a_held_run_after_the_grace_period(tmp_path):
    # RELIABILITY b6.64: SIGTERM during XLA's compilation of a NUTS program
    # was honoured only when the compilation ended (91 s). The main thread is
    # held here by a sleep (the Python handler runs, no checkpoint does).
    record = tmp_path / "status"
    started = time.time()
    result = subprocess.run([sys.executable, "-c", _HELD, "1.0", str(record)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 130, result.stderr
    assert "no checkpoint within 1 s of the interrupt" in result.stderr
    assert "the block ended" not in result.stdout
    assert record.read_text() == "interrupted"  # on_abort ran
    # 1 s of grace; 15 s covers the interpreter's start on a loaded machine.
    assert time.time() - started < 15


def test_jax_precision_is_left_as_the_tests_set_it():
    # The in-process calls above must not have switched x64 off (float32 runs
    # go through subprocesses).
    assert jax.config.jax_enable_x64
