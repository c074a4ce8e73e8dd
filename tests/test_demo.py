"""scripts/demo.py (the entry point of `make demo`) in its reduced mode."""

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


class _Collector(HTMLParser):
    """Collects every URL-bearing attribute and the headings of the report."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
        self._in_heading = tag in ("h1", "h2")

    def handle_data(self, data):
        if self._in_heading and data.strip():
            self.headings.append(data.strip())

    def handle_endtag(self, tag):
        self._in_heading = False


@pytest.mark.slow
def test_demo_fast_writes_a_self_contained_report(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "demo.py"), "--fast", "--quiet",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report.html").read_text()
    parser = _Collector()
    parser.feed(report)
    parser.close()
    assert parser.urls, "the report embeds no figure"
    assert all(url.startswith("data:image/png;base64,") for url in parser.urls), [
        url[:40] for url in parser.urls if not url.startswith("data:")
    ]
    for title in ("Bayesian linear regression", "Gaussian mixture on Old Faithful",
                  "Shopper segmentation with a multinomial mixture", "Environment"):
        assert title in parser.headings
    for story in ("linear_regression", "gaussian_mixture", "shoppers"):
        folder = tmp_path / story
        assert any(folder.glob("*.png")), story
        assert any(folder.glob("*.json")), story
    assert any(tmp_path.glob("*/*.nc")), "no ArviZ netCDF posterior written"
