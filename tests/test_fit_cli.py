"""scripts/fit.py: exit codes, messages and output safety (issue 5, RELIABILITY b1-b6).

Validation cases call ``fit.main(argv)`` in-process (it returns the exit status
and does everything the command line does, minus interpreter start-up); the
end-to-end runs, the interrupt and the determinism checks use real subprocesses.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentmix.scripts import fit

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_cli(*argv):
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "fit.py"), *argv],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    n = 40
    regression = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    regression["y"] = 1 + 2 * regression["a"] - regression["b"] + rng.normal(0, .3, n)
    regression.to_csv(folder / "regression.csv", index=False)
    points = np.concatenate([rng.normal(-3, 1, (30, 2)), rng.normal(3, 1, (30, 2))])
    pd.DataFrame(points, columns=["u", "v"]).to_csv(folder / "points.csv", index=False)
    counts = rng.multinomial(6, [0.4, 0.3, 0.2, 0.1], size=50)
    wide = pd.DataFrame(counts, columns=["milk", "bread", "beer", "chips"])
    wide["household"] = [f"h{i % 5}" for i in range(50)]
    wide.to_csv(folder / "baskets.csv", index=False)
    lines = [(f"b{i}", f"h{i % 5}", name)
             for i, row in enumerate(counts)
             for name, count in zip(wide.columns[:4], row, strict=False)
             for _ in range(count)]
    pd.DataFrame(lines, columns=["basket", "household", "category"]).to_csv(
        folder / "lines.csv", index=False)
    return folder


def call(capsys, *argv):
    status = fit.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.err


# ------------------------------------------------------------------ exit code 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("a,b,y\n", "header but no data rows"),
        ("a,a,y\n1,2,3\n4,5,6\n", "'a' appears twice"),
        # a semicolon file is read correctly (two rows: one row is refused,
        # as the noise precision cannot be estimated from it)
        ("a;b;y\n1;2;3\n4;6;5\n2;1;1\n", None),
        ("a,b,y\n1,2,3\n4,5\n", "data row 2 has 2 fields"),
        ("a,b,y\n1,2,3\n4,x,6\n7,8,9\n",
         "column 'b', row 2: value 'x' is not a number"),
        ("a,b,y\n1,2,3\n4,,6\n7,8,9\n", "column 'b' has 1 missing value"),
        ("a,b,y\n1,2,3\n4,inf,6\n7,8,9\n",
         "column 'b', row 2: value inf is infinite"),
        ("a,b,z\n1,2,3\n4,5,6\n", "target column(s) ['y'] not found"),
    ],
)
def test_invalid_regression_files(tmp_path, capsys, text, message):
    path = tmp_path / "input.csv"
    path.write_text(text)
    status, err = call(capsys, "linear-regression", "--data", str(path),
                       "--target", "y", "--out", str(tmp_path / "out"), "--quiet")
    if message is None:
        assert status == 0, err
        return
    assert status == 3, err
    assert message in err
    assert str(path) in err
    assert not (tmp_path / "out" / "params.json").exists()


def test_missing_file(tmp_path, capsys):
    status, err = call(capsys, "linear-regression", "--data",
                       str(tmp_path / "absent.csv"), "--target", "y",
                       "--out", str(tmp_path / "out"))
    assert status == 3 and "not found" in err


def test_wrong_delimiter_is_named(tmp_path, capsys):
    path = tmp_path / "input.csv"
    path.write_text("a:b:y\n1:2:3\n4:5:6\n")
    status, err = call(capsys, "gaussian-mixture", "--data", str(path), "--k", "1",
                       "--out", str(tmp_path / "out"), "--sep", ",")
    # ':' is no delimiter we guess, so the single column 'a:b:y' is not numeric.
    assert status == 3, err


@pytest.mark.parametrize(
    ("cell", "message"),
    [("-1", "has count -1; counts must be >= 0"),
     ("2.5", "has count 2.5; counts must be whole numbers")],
)
def test_invalid_counts(tmp_path, capsys, cell, message):
    path = tmp_path / "counts.csv"
    path.write_text(f"milk,bread\n1,2\n{cell},3\n2,2\n")
    status, err = call(capsys, "multinomial-mixture", "--data", str(path), "--k", "1",
                       "--out", str(tmp_path / "out"))
    assert status == 3, err
    assert f"column 'milk', row 2 {message}" in err


def test_k_larger_than_rows(files, tmp_path, capsys):
    status, err = call(capsys, "gaussian-mixture", "--data",
                       str(files / "points.csv"), "--k", "500",
                       "--out", str(tmp_path / "out"))
    assert status == 3 and "500" in err


# ------------------------------------------------------------------ exit code 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--k", "0"], "expected an integer >= 1"),
        (["--k", "two"], "expected an integer"),
        (["--k-range", "5:2"], "START <= STOP"),
        (["--k-range", "a:b"], "--k-range must look like"),
        (["--restarts", "0"], "expected an integer >= 1"),
        (["--covariance-type", "banana"], "invalid choice"),
        (["--method", "gibbs"], "invalid choice"),
        ([], "needs --k K or --k-range"),
        (["--k", "2", "--target", "y"], "--target applies to linear-regression"),
        (["--k", "2", "--criterion", "heldout"], "--criterion heldout needs --k-range"),
        (["--k", "2", "--device", "tpu"], "invalid choice"),
        (["--k", "2", "--dtype", "float16"], "invalid choice"),
    ],
)
def test_bad_arguments(files, tmp_path, capsys, argv, message):
    base = ["gaussian-mixture", "--data", str(files / "points.csv"),
            "--out", str(tmp_path / "out")]
    try:
        status, err = call(capsys, *base, *argv)
    except SystemExit as exit_:  # argparse's own errors
        status, err = exit_.code, capsys.readouterr().err
    assert status == 2
    assert message in err


def test_existing_output_needs_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["linear-regression", "--data", str(files / "regression.csv"),
            "--target", "y", "--out", str(out), "--quiet"]
    assert call(capsys, *argv)[0] == 0
    status, err = call(capsys, *argv)
    assert status == 2 and "--overwrite" in err
    assert call(capsys, *argv, "--overwrite")[0] == 0


def test_device_gpu_without_a_gpu_exits_2_naming_the_devices(files, tmp_path):
    out = tmp_path / "out"
    result = run_cli("gaussian-mixture", "--data", str(files / "points.csv"),
                     "--k", "2", "--device", "gpu", "--out", str(out), "--quiet")
    if result.returncode == 0:
        pytest.skip("this machine has a GPU: --device gpu rightly succeeded")
    assert result.returncode == 2, result.stderr
    assert "--device gpu: JAX found no GPU, only [CpuDevice" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # the device is checked before any output is written


# ------------------------------------------------------------------ exit code 5


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_output(files, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    status, err = call(capsys, "linear-regression", "--data",
                       str(files / "regression.csv"), "--target", "y",
                       "--out", str(locked / "out"))
    assert status == 5 and "output" in err


def test_output_path_that_is_a_file(files, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    status, err = call(capsys, "linear-regression", "--data",
                       str(files / "regression.csv"), "--target", "y",
                       "--out", str(blocker / "out"))
    assert status == 5 and "cannot create output folder" in err


# ------------------------------------------------------------------ end to end


def _no_half_files(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


def test_regression_end_to_end(files, tmp_path):
    out = tmp_path / "out"
    result = run_cli("linear-regression", "--data", str(files / "regression.csv"),
                     "--target", "y", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    payload = json.loads((out / "params.json").read_text())
    assert payload["status"] == "ok"
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns[:4]) == ["row", "y", "predicted_mean",
                                             "predicted_sd"]
    html = (out / "report.html").read_text()
    assert "<html" in html and 'src="http' not in html
    _no_half_files(out)


def test_gaussian_mixture_sweep_and_determinism(files, tmp_path):
    outputs = []
    for name in ("first", "second"):
        out = tmp_path / name
        result = run_cli("gaussian-mixture", "--data", str(files / "points.csv"),
                         "--k-range", "1:3", "--restarts", "2", "--seed", "3",
                         "--out", str(out), "--quiet")
        assert result.returncode == 0, result.stderr
        outputs.append(out)
    payload = json.loads((outputs[0] / "params.json").read_text())
    assert payload["num_components"] == 2  # two clusters 6 sd apart
    assert (outputs[0] / "assignments.csv").read_bytes() == (
        outputs[1] / "assignments.csv").read_bytes()
    first = json.loads((outputs[0] / "params.json").read_text())
    second = json.loads((outputs[1] / "params.json").read_text())
    for key in ("weights", "means", "covariances", "selection"):
        assert first[key] == second[key]


def test_device_cpu_and_float32(files, tmp_path):
    out = tmp_path / "out"
    result = run_cli("gaussian-mixture", "--data", str(files / "points.csv"),
                     "--k", "2", "--device", "cpu", "--dtype", "float32",
                     "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    payload = json.loads((out / "params.json").read_text())
    assert payload["device"] == "cpu" and payload["dtype"] == "float32"
    # The two clusters of 30 unit-variance points are centred at (-3, -3) and
    # (3, 3): each fitted mean is a cluster's sample mean, within 3 sd / sqrt(30)
    # = 0.55 of its centre per coordinate (float32 rounding is far smaller).
    means = np.sort(np.asarray(payload["means"]), axis=0)
    np.testing.assert_allclose(means, [[-3, -3], [3, 3]], atol=0.55)


def test_multinomial_long_format_with_groups(files, tmp_path):
    out = tmp_path / "out"
    result = run_cli("multinomial-mixture", "--data", str(files / "lines.csv"),
                     "--format", "long", "--groups", "household", "--k", "2",
                     "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    payload = json.loads((out / "params.json").read_text())
    assert np.asarray(payload["weights"]).shape == (5, 2)
    np.testing.assert_allclose(np.asarray(payload["probs"]).sum(1), 1.0)
    assignments = pd.read_csv(out / "assignments.csv")
    assert len(assignments) == 50


def test_strict_turns_failed_diagnostics_into_exit_4(files, tmp_path):
    # 10 draws per chain cannot reach ESS >= 100 per chain: the gate must fail.
    out = tmp_path / "out"
    result = run_cli("linear-regression", "--data", str(files / "regression.csv"),
                     "--target", "y", "--method", "nuts", "--num-samples", "10",
                     "--num-warmup", "20", "--strict", "--out", str(out), "--quiet")
    assert result.returncode == 4, result.stderr
    assert "cross-check failed (--strict)" in result.stderr
    assert "NUTS diagnostics" in result.stderr
    # ... and said so before sampling (RELIABILITY b4.49), in the command's terms
    assert "--num-samples 10 draws per chain" in result.stderr
    assert "cannot reach the effective sample size of 100" in result.stderr
    # issue 12: a failed check is recorded as such, never "ok"
    payload = json.loads((out / "params.json").read_text())
    assert payload["status"] == "check_failed"
    assert "NUTS diagnostics" in payload["verdict"]


def test_interrupt_writes_partial_results_and_exits_130(files, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "fit.py"), "gaussian-mixture", "--data",
         str(files / "points.csv"), "--k-range", "1:40", "--restarts", "1",
         "--out", str(out)],
        stderr=subprocess.PIPE, text=True,
    )
    # Wait until the sweep has started, then interrupt as a scheduler would.
    deadline = time.time() + 120
    for line in process.stderr:
        if "sweeping K" in line or time.time() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert process.returncode == 130
    payload = json.loads((out / "params.json").read_text())
    assert payload["status"] == "interrupted"
    _no_half_files(out)
