"""scripts/report.py: numbers for people, maths as HTML, tables without a
DataFrame index, collapsed details, and the template page."""

import re

import numpy as np
import pandas as pd

from latentmix.scripts.report import (
    Report,
    details,
    diagnostics_summary,
    format_number,
    format_table,
    maths_html,
)


def test_numbers_are_formatted_for_people():
    assert format_number(-452933.4) == "−452,933"
    assert format_number(1.003371) == "1.003"
    assert format_number(0.1234567) == "0.1235"
    assert format_number(5.56e-15) == "5.56 × 10⁻¹⁵"
    assert format_number(802) == "802" and format_number(12000) == "12,000"
    assert format_number(float("nan")) == "–" and format_number(None) == "–"
    assert format_number(3.0) == "3" and format_number(True) == "yes"
    assert format_number(np.float64(2.5e-5)) == "2.5 × 10⁻⁵"


def test_maths_becomes_escaped_html_with_sub_and_superscripts():
    text = str(maths_html("(X^{T}X)^{−1}X^{T}y, w_{l} < x_i"))
    assert "(X<sup>T</sup>X)<sup>−1</sup>X<sup>T</sup>y" in text
    assert "w<sub>l</sub> &lt; x<sub>i</sub>" in text
    assert str(maths_html("<script>")).count("<script>") == 0


def test_tables_have_named_columns_and_no_positional_index():
    frame = pd.DataFrame({"num_components": [2, 3], "bic": [4321.123456, 4300.5],
                          "passed": [True, False]})
    html = str(format_table(frame))
    headers = re.findall(r"<th>(.*?)</th>", html)
    assert headers == ["num components", "bic", "passed"]  # no index column
    assert "4,321" in html and "4,300" in html and "4321.1" not in html
    assert 'class="badge pass"' in html and 'class="badge fail"' in html
    named = frame.set_index("num_components")
    assert re.findall(r"<th>(.*?)</th>", str(format_table(named)))[0] == (
        "num components")
    renamed = format_table(frame, columns={"bic": "BIC (nats)"})
    assert re.findall(r"<th>(.*?)</th>", str(renamed)) == ["BIC (nats)"]


def test_details_are_collapsed_with_a_summary_line():
    block = str(details("max r_hat 1.004", "<table></table>"))
    assert block.startswith("<details><summary>max r_hat 1.004</summary>")
    assert "<details open>" in str(details("x", "", open_=True))


def test_diagnostics_summary_line():
    table = pd.DataFrame({"r_hat": [1.001, 1.004], "ess_bulk": [802.4, 1500.0],
                          "ess_tail": [900.0, 700.2], "divergences": [0, 0]})
    assert diagnostics_summary(table) == (
        "max r_hat 1.004 over 2 parameters, min bulk ESS 802, min tail ESS 700, "
        "0 divergences")


def test_report_class_renders_one_self_contained_page(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = tmp_path / "f.png"
    fig.savefig(path)
    plt.close(fig)
    report = Report("A & B")
    report.heading("Results")
    report.paragraph("x < y")
    report.table(pd.DataFrame({"a": np.arange(40)}), caption="long")
    report.table(pd.DataFrame({"a": [1.5]}), caption="short")
    report.figure(path, "a figure")
    report.figure(tmp_path / "missing.png", "absent")
    page = report.render()
    assert page.startswith("<!DOCTYPE html>") and "<title>A &amp; B</title>" in page
    assert "x &lt; y" in page
    assert "<details><summary>long (40 rows)</summary>" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 1 and sources[0].startswith("data:image/png;base64,")
    assert "http" not in page.lower().replace("http-equiv", "")


def test_loo_section_appears_with_a_log_likelihood_group_and_notes_its_absence():
    """With pointwise log-likelihoods the section shows LOO and WAIC per model
    and az.compare across the K of one family; without them, a visible note.

    Reference: for draws whose pointwise log-likelihood barely varies
    (sd 1e-3), every leave-one-out predictive density is the log-likelihood
    itself to ~1e-6, so elpd_loo = sum_i mean_s ll_is to 1e-3 over 50 points.
    """
    import arviz as az

    from latentmix.scripts.demo import loo_section

    rng = np.random.default_rng(0)
    base = {2: rng.normal(-2.0, 0.3, 50), 3: rng.normal(-1.9, 0.3, 50)}
    idatas = {}
    for k, ll in base.items():
        draws = ll + rng.normal(0.0, 1e-3, (4, 200, 50))
        idatas[f"mixture: K = {k}"] = az.from_dict(
            posterior={"theta": rng.normal(size=(4, 200))},
            log_likelihood={"x": draws})
    idatas["other: K = 2"] = az.from_dict(posterior={"theta": np.zeros((2, 10))})
    # Two data sets of one story (different sizes): each gets its LOO row, but
    # az.compare (which needs the same observations) is not run across them.
    for name, size in (("a", 30), ("b", 40)):
        idatas[f"regression: {name}"] = az.from_dict(
            posterior={"theta": rng.normal(size=(4, 200))},
            log_likelihood={"y": rng.normal(-1.0, 1e-3, (4, 200, size))},
            observed_data={"y": np.arange(size, dtype=float)})
    section = loo_section(idatas)
    page = "".join(str(block) for block in section["blocks"])
    assert "mixture: K = 2" in page and "mixture: K = 3" in page
    assert page.count("az.compare across K") == 1
    assert "regression: a" in page and "regression: b" in page
    assert "regression: az.compare" not in page
    assert "Skipped for other: K = 2" in page
    elpd = float(az.loo(idatas["mixture: K = 3"]).elpd_loo)
    np.testing.assert_allclose(elpd, base[3].sum(), atol=1e-3)
    assert format_number(elpd) in page
