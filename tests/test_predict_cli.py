"""The saved model of ``latentmix fit`` and ``latentmix predict`` on new rows.

``fit.py`` runs as a subprocess (as a user runs it); ``predict.main`` runs
in-process (it returns the exit status and does everything the command does).
The reference of every prediction is what ``fit.py`` itself wrote for the same
rows (assignments.csv, predictions.csv), computed by other code (the
functional API) from the same fitted parameters.
"""

import json
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

from latentmix.inference import MultinomialMixture
from latentmix.scripts import cli, predict

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# Responsibilities and densities from the same parameters by two formulas
# (models.*.responsibilities in fit.py, the estimator's compiled E-step here):
# float64 rounding of values of order 1 (densities of order 10 nats).
ROUNDING = 1e-12


def run_fit(*argv):
    completed = subprocess.run([sys.executable, str(SCRIPTS / "fit.py"), *argv],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict_inputs")
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(-3, 1, (30, 2)), rng.normal(3, 1, (30, 2))])
    pd.DataFrame(points, columns=["u", "v"]).to_csv(folder / "points.csv",
                                                    index=False)
    regression = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    regression["y"] = 1 + 2 * regression["a"] - regression["b"] + rng.normal(
        0, .3, 40)
    regression.to_csv(folder / "regression.csv", index=False)
    probs = np.array([[.5, .3, .15, .05], [.05, .15, .3, .5]])
    lines = []
    for basket in range(60):
        household = f"h{basket % 6}"
        component = (basket % 6 < 3) == (basket % 2 == 0)
        counts = rng.multinomial(8, probs[int(component)])
        for category, count in zip(["milk", "bread", "beer", "chips"], counts,
                                   strict=True):
            lines += [(f"b{basket}", household, category)] * int(count)
    pd.DataFrame(lines, columns=["basket", "household", "category"]).to_csv(
        folder / "lines.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def gmm_model(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("gmm_fit")
    run_fit("gaussian-mixture", "--data", str(files / "points.csv"), "--k", "2",
            "--out", str(out), "--overwrite", "--quiet")
    return out


def test_predict_is_a_latentmix_subcommand():
    assert "predict" in cli.SUBCOMMANDS
    assert cli.SUBCOMMANDS["predict"][0] == "predict"


def test_gaussian_mixture_predictions_equal_the_fits_assignments(files, gmm_model,
                                                                 tmp_path):
    document = json.loads((gmm_model / "model.json").read_text())
    assert document["model"] == "GaussianMixture"
    assert document["columns"] == ["u", "v"] and document["named_columns"]
    status = predict.main(["--model", str(gmm_model), "--data",
                           str(files / "points.csv"), "--out", str(tmp_path),
                           "--quiet"])
    assert status == 0
    ours = pd.read_csv(tmp_path / "assignments.csv")
    fitted = pd.read_csv(gmm_model / "assignments.csv")
    assert list(ours.columns) == [*fitted.columns, "log_likelihood"]
    np.testing.assert_array_equal(ours["component"], fitted["component"])
    for column in ("probability", "resp_0", "resp_1"):
        np.testing.assert_allclose(ours[column], fitted[column], rtol=ROUNDING,
                                   atol=ROUNDING)
    params = json.loads((gmm_model / "params.json").read_text())
    # The mean of the per-row log-likelihoods is the fit's objective.
    np.testing.assert_allclose(ours["log_likelihood"].mean(),
                               params["log_likelihood_per_row"], rtol=ROUNDING)


def test_columns_that_differ_exit_3_naming_missing_and_extra(files, gmm_model,
                                                             tmp_path, capsys):
    frame = pd.read_csv(files / "points.csv").rename(columns={"v": "w"})
    frame["z"] = 1.0
    frame.to_csv(tmp_path / "renamed.csv", index=False)
    status = predict.main(["--model", str(gmm_model), "--data",
                           str(tmp_path / "renamed.csv"), "--out",
                           str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert status == 3
    assert "missing ['v']" in error and "extra ['w', 'z']" in error


@pytest.mark.parametrize(("text", "message", "status"), [
    ("u,v\n1,2\n3,x\n", "column 'v', row 2: value 'x' is not a number", 3),
    ("u,v\n1,2\n3,\n", "column 'v' has 1 missing value", 3),
    ("", "is empty", 3),
])
def test_same_validation_and_exit_codes_as_fit(gmm_model, tmp_path, capsys, text,
                                               message, status):
    (tmp_path / "new.csv").write_text(text)
    code = predict.main(["--model", str(gmm_model), "--data",
                         str(tmp_path / "new.csv"), "--out", str(tmp_path / "out"),
                         "--quiet"])
    assert code == status
    assert message in capsys.readouterr().err


def test_bad_model_folder_and_existing_output(files, gmm_model, tmp_path, capsys):
    status = predict.main(["--model", str(tmp_path / "nothing"), "--data",
                           str(files / "points.csv"), "--out", str(tmp_path / "o"),
                           "--quiet"])
    assert status == 3 and "holds no saved model" in capsys.readouterr().err
    out = tmp_path / "again"
    arguments = ["--model", str(gmm_model), "--data", str(files / "points.csv"),
                 "--out", str(out), "--quiet"]
    assert predict.main(arguments) == 0
    assert predict.main(arguments) == 2  # results there: --overwrite needed
    assert "--overwrite" in capsys.readouterr().err
    assert predict.main([*arguments, "--overwrite"]) == 0


def test_regression_predictions_equal_the_fits(files, tmp_path):
    out = tmp_path / "fit"
    run_fit("linear-regression", "--data", str(files / "regression.csv"),
            "--target", "y", "--out", str(out), "--quiet")
    frame = pd.read_csv(files / "regression.csv")
    frame[["a", "b"]].to_csv(tmp_path / "new.csv", index=False)
    assert predict.main(["--model", str(out), "--data", str(tmp_path / "new.csv"),
                         "--out", str(tmp_path / "p"), "--quiet"]) == 0
    ours = pd.read_csv(tmp_path / "p" / "predictions.csv")
    fitted = pd.read_csv(out / "predictions.csv")
    assert list(ours.columns) == ["row", "predicted_mean", "predicted_sd"]
    # The same posterior (mean, covariance, noise precision) through the same
    # closed forms in another order: float64 rounding.
    for column in ("predicted_mean", "predicted_sd"):
        np.testing.assert_allclose(ours[column], fitted[column], rtol=ROUNDING)
    # With the target in the file: y and the residual come back too.
    assert predict.main(["--model", str(out), "--data",
                         str(files / "regression.csv"), "--out",
                         str(tmp_path / "q"), "--quiet"]) == 0
    with_target = pd.read_csv(tmp_path / "q" / "predictions.csv")
    np.testing.assert_allclose(with_target["residual"], fitted["residual"],
                               rtol=1e-10, atol=ROUNDING)


def hierarchical_lines(path):
    """Lines of 30 households x 8 baskets of 12 items drawn from the
    hierarchical model itself (household weights ~ Dirichlet(3, 3)), so that
    its posterior is one NUTS can sample. (Households that each buy from one
    segment only, as in ``files``, put the posterior at the simplex's
    boundary: NUTS then diverges and the run honestly ends check_failed.)"""
    rng = np.random.default_rng(3)
    probs = np.array([[.5, .3, .1, .05, .03, .02], [.05, .05, .1, .2, .3, .3]])
    names = ["milk", "bread", "eggs", "beer", "chips", "salsa"]
    lines = []
    for household, weights in enumerate(rng.dirichlet([3.0, 3.0], size=30)):
        for basket in range(8):
            counts = rng.multinomial(12, probs[rng.choice(2, p=weights)])
            for name, count in zip(names, counts, strict=True):
                lines += [(f"b{household}-{basket}", f"h{household:02d}",
                           name)] * int(count)
    pd.DataFrame(lines, columns=["basket", "household", "category"]).to_csv(
        path, index=False)
    return path


def test_grouped_multinomial_by_nuts_end_to_end_and_predict(tmp_path):
    """fit.py --groups --method nuts: EM per household, NUTS and VI on the
    hierarchical model (MAP skipped), the cross-check table, the relabelled
    draws with their log-likelihood, the saved model; then predict."""
    lines_file = hierarchical_lines(tmp_path / "lines.csv")
    out = tmp_path / "fit"
    # 800 draws per chain: with 300 the relabelled r_hat gate (1.01) failed on
    # its own noise (1.0116 at group_weights[2], ESS 899), as in
    # test_posterior_scale_free's cross-check.
    run_fit("multinomial-mixture", "--data", str(lines_file), "--format",
            "long", "--basket-column", "basket", "--category-column", "category",
            "--groups", "household", "--k", "2", "--method", "nuts",
            "--num-warmup", "300", "--num-samples", "800", "--num-chains", "4",
            "--restarts", "2", "--out", str(out), "--quiet")
    params = json.loads((out / "params.json").read_text())
    table = pd.DataFrame(params["cross_check"])
    assert params["status"] == "ok", table.to_string()
    assert {"NUTS relabelled draws: r_hat", "EM inside NUTS 94% HDI"} <= set(
        table["check"])
    assert len(params["group_labels"]) == 30
    idata = az.from_netcdf(str(out / "posterior.nc"))
    assert idata.posterior["group_weights"].shape == (4, 800, 30, 2)
    assert idata.log_likelihood["counts"].shape == (4, 800, 240)
    document = json.loads((out / "model.json").read_text())
    assert document["model"] == "MultinomialMixture"
    assert document["metadata"]["format"] == "long"
    assert predict.main(["--model", str(out), "--data", str(lines_file),
                         "--out", str(tmp_path / "p"), "--quiet"]) == 0
    ours = pd.read_csv(tmp_path / "p" / "assignments.csv")
    fitted = pd.read_csv(out / "assignments.csv")
    np.testing.assert_array_equal(ours["row"], fitted["row"])
    np.testing.assert_array_equal(ours["component"], fitted["component"])
    np.testing.assert_allclose(ours["resp_0"], fitted["resp_0"], rtol=ROUNDING,
                               atol=ROUNDING)
    lines = pd.read_csv(lines_file)
    lines.loc[0, "household"] = "stranger"
    lines.to_csv(tmp_path / "stranger.csv", index=False)
    assert predict.main(["--model", str(out), "--data",
                         str(tmp_path / "stranger.csv"), "--out",
                         str(tmp_path / "s"), "--quiet"]) == 3


def test_wide_count_table_columns_are_checked(tmp_path, capsys):
    rng = np.random.default_rng(1)
    counts = pd.DataFrame(rng.multinomial(6, [.4, .3, .2, .1], size=40),
                          columns=["milk", "bread", "beer", "chips"])
    model = MultinomialMixture(2, random_state=0).fit(counts)
    model.save(tmp_path / "model", metadata={"format": "wide", "groups": None})
    counts.to_csv(tmp_path / "same.csv", index=False)
    assert predict.main(["--model", str(tmp_path / "model"), "--data",
                         str(tmp_path / "same.csv"), "--out", str(tmp_path / "p"),
                         "--quiet"]) == 0
    ours = pd.read_csv(tmp_path / "p" / "assignments.csv")
    np.testing.assert_allclose(ours["log_likelihood"], model.score_samples(counts),
                               rtol=ROUNDING)
    counts.drop(columns="beer").assign(wine=1).to_csv(tmp_path / "other.csv",
                                                      index=False)
    assert predict.main(["--model", str(tmp_path / "model"), "--data",
                         str(tmp_path / "other.csv"), "--out", str(tmp_path / "q"),
                         "--quiet"]) == 3
    error = capsys.readouterr().err
    assert "missing ['beer']" in error and "extra ['wine']" in error
