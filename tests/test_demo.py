"""scripts/demo.py (the entry point of `make demo`) in its reduced mode."""

from html.parser import HTMLParser
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


class _Collector(HTMLParser):
    """Collects URL-bearing attributes, headings, table headers, details."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.headings: list[str] = []
        self.header_cells: list[str] = []
        self.details_open: list[bool] = []
        self.summaries: list[str] = []
        self.section_ids: list[str] = []
        # (rows, under a <details> or a derivation table) per table, in order.
        self.tables: list[tuple[int, bool]] = []
        self._details_depth = 0
        self._capture = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
        if tag == "details":
            self.details_open.append("open" in attributes)
            self._details_depth += 1
        if tag == "table":
            # The derivation tables (class "steps") are the page's content.
            self.tables.append((0, self._details_depth > 0
                                or "steps" in (attributes.get("class") or "")))
        if tag == "tr" and self.tables:
            rows, inside = self.tables[-1]
            self.tables[-1] = (rows + 1, inside)
        if tag == "section" and attributes.get("id"):
            self.section_ids.append(attributes["id"])
        if tag in ("h1", "h2", "th", "summary"):
            self._capture, self._text = tag, ""

    def handle_data(self, data):
        if self._capture:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "details":
            self._details_depth -= 1
        if tag != self._capture:
            return
        text = self._text.strip()
        if tag in ("h1", "h2") and text:
            self.headings.append(text)
        elif tag == "th":
            self.header_cells.append(text)
        elif tag == "summary":
            self.summaries.append(text)
        self._capture = None


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_fast_writes_a_self_contained_report(demo_fast_run):
    result, tmp_path = demo_fast_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""  # --quiet: no tables, no progress
    report = (tmp_path / "report.html").read_text()
    parser = _Collector()
    parser.feed(report)
    parser.close()
    images = [url for url in parser.urls if not url.startswith("#")]
    assert len(images) >= 20, "the report embeds too few figures"
    assert all(url.startswith("data:image/png;base64,") for url in images), [
        url[:40] for url in images if not url.startswith("data:")
    ]
    # In-page links only point at sections that exist.
    links = [url[1:] for url in parser.urls if url.startswith("#")]
    assert links and set(links) <= set(parser.section_ids)
    for title in ("Article 1 — Bayesian linear regression and latent variables",
                  "Articles 2–3 — Gaussian mixture and EM",
                  "Article 4 — Multinomial mixture: trinomials, then shoppers",
                  "Comparing models by LOO and WAIC", "The tutorial's checklist",
                  "Environment"):
        assert title in parser.headings, parser.headings
    # First screen: the overview comes before the first section, one card per
    # model with its verdict.
    assert parser.section_ids[0] == "overview"
    assert report.count('class="card"') == 3
    assert report.index('id="overview"') < report.index('id="linear-regression"')
    # No DataFrame index: every header cell is named, none is a bare number.
    assert parser.header_cells and all(
        cell and not cell.isdigit() for cell in parser.header_cells), [
        cell for cell in parser.header_cells if not cell or cell.isdigit()]
    # Long tables collapsed, each behind a one-line summary; only failures open.
    assert len(parser.details_open) >= 10 and not any(parser.details_open)
    # Every table longer than a screen (header + 12 rows) sits under <details>,
    # but for the derivation steps, which are shown open next to their checks.
    long_tables = [(rows, inside) for rows, inside in parser.tables if rows > 13]
    assert long_tables and all(inside for _, inside in long_tables), parser.tables
    assert any(summary.startswith("NUTS diagnostics") and "max r_hat" in summary
               for summary in parser.summaries), parser.summaries
    # Maths as HTML, the derivation next to its checks, segments as cards.
    assert "<sup>" in report and "<sub>" in report and 'class="steps"' in report
    assert report.count('class="segment"') >= 2
    assert 'class="dataframe"' not in report  # no pandas to_html tables
    # LOO/WAIC across K (issue 15): the mixture's NUTS draws at K = 1 (--fast)
    # beside the main K = 2, compared on the same observations.
    assert "Gaussian mixture: az.compare across K" in report
    assert "Gaussian mixture: K = 1" in report and "Gaussian mixture: K = 2" in report
    # az.compare ranks K = 2 first: Old Faithful has two clusters (the
    # estimators' sample_posterior draws, K = 1 and 2, by LOO).
    compared = report[report.index("Gaussian mixture: az.compare across K"):]
    assert (compared.index("Gaussian mixture: K = 2")
            < compared.index("Gaussian mixture: K = 1"))
    for story in ("linear_regression", "gaussian_mixture", "shoppers", "tutorial",
                  "trinomial"):
        folder = tmp_path / story
        assert any(folder.glob("*.png")), story
        assert any(folder.glob("*.json")), story
    assert any(tmp_path.glob("*/*.nc")), "no ArviZ netCDF posterior written"
