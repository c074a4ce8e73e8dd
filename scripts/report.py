"""Self-contained HTML reports, rendered from a Jinja2 template.

One template (``templates/report.html.j2``) lays out a page: a title, an
optional overview (one card per model with its verdict and key figure), then
sections. A section holds what a reader wants in that order: what was fitted on
which data, a verdict, the key figures, the derivation step by step next to the
check that verifies it, then tables and further figures, the long ones
collapsed under ``<details>`` with a one-line summary in front.

Everything is embedded: figures as base64 PNG data URIs, the style sheet
inline, no script, no font or image URL, so the file can be mailed or archived
as it is and opens without network access. Maths is HTML text with Unicode
symbols, subscripts and superscripts (``maths_html``).

Numbers are formatted for people (``format_number``): 4 significant digits,
thousands separators, a true minus sign, scientific notation as
``5.6 × 10⁻¹⁵``; tables never show a DataFrame's positional index
(``format_table``).

``Report`` keeps the small imperative interface ``scripts/fit_report.py`` uses
(heading, paragraph, table, figure, ...), rendered through the same template.
"""

import base64
import html
import math
import re
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

__all__ = [
    "Report",
    "badge",
    "details",
    "diagnostics_summary",
    "figure_html",
    "format_number",
    "format_table",
    "image_data_uri",
    "maths_html",
    "render_page",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
_SUPERSCRIPT = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")
MINUS = "\u2212"


# --- numbers ------------------------------------------------------------------------


def format_number(value, sig: int = 4) -> str:
    """A number as a person writes it.

    Integers (and floats of magnitude >= 10^(sig - 1)) with thousands
    separators and no decimals; other floats to ``sig`` significant digits
    without trailing zeros; magnitudes below 10^-3 as ``m × 10⁻ᵉ``; NaN or
    None as an en dash; booleans as yes/no. Negative numbers take a true minus sign.
    """
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        text = f"{int(value):,}"
        return text.replace("-", MINUS)
    if not isinstance(value, Real):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else MINUS + "∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** (sig - 1):
        text = f"{value:,.0f}"
    elif magnitude >= 1e-3:
        digits = max(sig - 1 - int(math.floor(math.log10(magnitude))), 0)
        text = f"{value:.{digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    else:
        mantissa, exponent = f"{value:.{max(sig - 2, 0)}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        text = f"{mantissa} × 10{str(int(exponent)).translate(_SUPERSCRIPT)}"
    return text.replace("-", MINUS)


def badge(ok: bool, text: str | None = None) -> Markup:
    """A green "pass" or red "FAIL" label (or ``text`` in that colour)."""
    label = text if text is not None else ("pass" if ok else "FAIL")
    kind = "pass" if ok else "fail"
    return Markup(f'<span class="badge {kind}">{html.escape(label)}</span>')


# --- maths --------------------------------------------------------------------------


_SCRIPT = re.compile(r"([_^])(\{([^{}]*)\}|([A-Za-z0-9]))")


def maths_html(text: str) -> Markup:
    """Plain maths with ``_{...}``/``^{...}`` (or ``_x``/``^x``) as HTML sub/sup.

    The text is escaped first, so any string is safe; Unicode symbols (Σ, ∏,
    ≤, ‖, ...) pass through.
    """
    escaped = html.escape(text, quote=False)

    def replace(match):
        tag = "sub" if match.group(1) == "_" else "sup"
        body = match.group(3) if match.group(3) is not None else match.group(4)
        return f"<{tag}>{body}</{tag}>"

    previous = None
    while previous != escaped:  # nested scripts, innermost first
        previous, escaped = escaped, _SCRIPT.sub(replace, escaped)
    return Markup(f'<span class="math">{escaped}</span>')


# --- tables -------------------------------------------------------------------------

_STATUS_COLUMNS = ("passed", "pass", "ok", "converged")


def _humanise(name) -> str:
    return str(name).replace("_", " ")


def format_table(frame: pd.DataFrame, *, columns=None, formats=None,
                 sig: int = 4, classes: str = "") -> Markup:
    """A DataFrame as a readable HTML table.

    ``columns``: a dict raw name -> label (its order is the column order; other
    columns are dropped) or None (every column, underscores as spaces). A named
    index becomes a first column; a positional index is dropped. ``formats``:
    per raw column name, a callable value -> str. Boolean status columns
    (passed, ok, converged) become coloured badges.
    """
    frame = frame.copy()
    if frame.index.name is not None or isinstance(frame.index, pd.MultiIndex):
        frame = frame.reset_index()
    if columns is None:
        columns = {name: _humanise(name) for name in frame.columns}
    else:
        columns = {name: label for name, label in columns.items()
                   if name in frame.columns}
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(label))}</th>"
                   for label in columns.values())
    rows = []
    for record in frame[list(columns)].itertuples(index=False):
        cells = []
        for name, value in zip(columns, record, strict=True):
            if name in formats:
                text = formats[name](value)
                cell = text if isinstance(text, Markup) else html.escape(str(text))
                align = "text"
            elif name == "converged" and isinstance(value, bool | np.bool_):
                cell, align = badge(bool(value), "yes" if value else "no"), "text"
            elif name in _STATUS_COLUMNS and isinstance(value, bool | np.bool_):
                cell, align = badge(bool(value)), "text"
            elif isinstance(value, Real) and not isinstance(value, bool | np.bool_):
                cell, align = format_number(value, sig), "num"
            else:
                cell = html.escape("–" if value is None else str(value))
                align = "text"
            cells.append(f'<td class="{align}">{cell}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return Markup(f'<table class="{classes}"><thead><tr>{head}</tr></thead>'
                  f'<tbody>{"".join(rows)}</tbody></table>')


def details(summary: str, body, *, open_: bool = False) -> Markup:
    """``body`` (trusted HTML) collapsed under a one-line ``summary``."""
    state = " open" if open_ else ""
    return Markup(f"<details{state}><summary>{html.escape(summary)}</summary>"
                  f"{body}</details>")


def diagnostics_summary(table: pd.DataFrame) -> str:
    """One line for a NUTS diagnostics table (``inference.mcmc.diagnostics``)."""
    if table is None or len(table) == 0:
        return "no NUTS diagnostics"
    divergences = int(table["divergences"].max()) if "divergences" in table else 0
    return (f"max r_hat {format_number(float(table['r_hat'].max()))} over "
            f"{len(table)} parameters, min bulk ESS "
            f"{format_number(int(round(float(table['ess_bulk'].min()))))}, "
            f"min tail ESS "
            f"{format_number(int(round(float(table['ess_tail'].min()))))}, "
            f"{divergences} divergences")


# --- figures ------------------------------------------------------------------------


def image_data_uri(path) -> str | None:
    """A PNG file as a base64 data URI (None when the file is absent)."""
    if path is None or not Path(path).exists():
        return None
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


def figure_html(path, caption: str = "", *, wide: bool = False) -> Markup:
    """An embedded figure with its caption ('' when the file is absent: a failed
    plot was already reported as a warning)."""
    uri = image_data_uri(path)
    if uri is None:
        return Markup("")
    kind = "wide" if wide else ""
    return Markup(f'<figure class="{kind}"><img alt="{html.escape(caption)}" '
                  f'src="{uri}"><figcaption>{html.escape(caption)}</figcaption>'
                  f"</figure>")


# --- page ---------------------------------------------------------------------------


def _environment() -> Environment:
    environment = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                              autoescape=select_autoescape(["html", "j2"]),
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["number"] = format_number
    environment.filters["maths"] = maths_html
    return environment


def render_page(context: dict) -> str:
    """Render the page template.

    ``context``: title, subtitle (optional), overview (list of cards: id,
    title, data, verdict_ok, verdict, headline, figure), sections (list of:
    id, title, data, verdict_ok, verdict, summary, key_figures [Markup],
    steps [{maths, checks: [{name, result, ok}]}], blocks [Markup],
    warnings [str]), footer (Markup).
    """
    return _environment().get_template("report.html.j2").render(**context)


class Report:
    """Accumulates blocks of one section, then renders the page template."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[Markup] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(Markup(f"<h{level}>{html.escape(text)}</h{level}>"))

    def paragraph(self, text: str) -> None:
        self.parts.append(Markup(f"<p>{html.escape(text)}</p>"))

    def html(self, fragment: str) -> None:
        """Append trusted HTML written by our own code."""
        self.parts.append(Markup(fragment))

    def preformatted(self, text: str) -> None:
        self.parts.append(Markup(f"<pre>{html.escape(text)}</pre>"))

    def warnings(self, messages) -> None:
        for message in messages:
            self.parts.append(Markup(
                f'<p class="warning">warning: {html.escape(message)}</p>'))

    def table(self, frame: pd.DataFrame, *, caption: str | None = None,
              float_format: str | None = None, index: bool = True,
              collapse_over: int = 25) -> None:
        """A readable table (``format_table``); a named index becomes a column.

        Longer than ``collapse_over`` rows: collapsed under ``<details>`` with
        the caption and the row count as its summary. ``float_format`` and
        ``index`` are accepted for compatibility; numbers follow
        ``format_number`` and a positional index is never shown.
        """
        del float_format, index
        body = format_table(frame)
        if len(frame) > collapse_over:
            self.parts.append(details(f"{caption or 'Table'} ({len(frame)} rows)",
                                      body))
            return
        if caption:
            self.parts.append(Markup(f'<p class="caption">{html.escape(caption)}'
                                     f"</p>"))
        self.parts.append(body)

    def figure(self, path, caption: str = "") -> None:
        """Embed a PNG file (skipped silently when the file is absent)."""
        self.parts.append(figure_html(path, caption))

    def render(self) -> str:
        return render_page({"title": self.title, "sections": [
            {"id": "main", "title": None, "blocks": self.parts}]})
