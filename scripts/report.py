"""A self-contained HTML report: text, tables and PNG figures embedded as base64.

No external resource is referenced (no CSS, script or image URL), so the file can
be mailed or archived as it is.
"""

import base64
import html
from pathlib import Path

import pandas as pd

__all__ = ["Report"]

_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; }
td.pass { background: #e6f4e6; } td.fail { background: #f9e0e0; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.warning { color: #8a4b00; }
"""


class Report:
    """Accumulates sections, then renders one HTML document."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def html(self, fragment: str) -> None:
        """Append trusted HTML written by our own code."""
        self.parts.append(fragment)

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def warnings(self, messages) -> None:
        for message in messages:
            self.parts.append(f'<p class="warning">warning: {html.escape(message)}</p>')

    def table(self, frame: pd.DataFrame, *, caption: str | None = None,
              float_format: str = "{:.4g}", index: bool = True) -> None:
        """A DataFrame as an HTML table; a boolean column named 'pass' is coloured."""
        frame = frame.copy()
        status = None
        if "pass" in frame.columns:
            status = frame["pass"].astype(bool).tolist()
            frame["pass"] = ["pass" if ok else "FAIL" for ok in status]
        body = frame.to_html(
            index=index,
            float_format=lambda value: float_format.format(value),
            escape=True,
            border=0,
            na_rep="",
        )
        if status is not None:
            body = body.replace("<td>pass</td>", '<td class="pass">pass</td>')
            body = body.replace("<td>FAIL</td>", '<td class="fail">FAIL</td>')
        if caption:
            self.parts.append(f"<p><b>{html.escape(caption)}</b></p>")
        self.parts.append(body)

    def figure(self, path, caption: str = "") -> None:
        """Embed a PNG file as a data URI (skipped silently when the file is absent,
        since a failed plot was already reported as a warning)."""
        if path is None or not Path(path).exists():
            return
        encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        self.parts.append(
            f'<figure><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style>"
            f"</head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )
