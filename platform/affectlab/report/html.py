"""A tiny self-contained HTML report writer.

One file, inline CSS, figures embedded as PNG data URIs: a report can be mailed,
attached to a W&B run or opened from a cluster's object store with nothing beside it.
Figures are rendered with matplotlib's Agg canvas directly, so no GUI backend (and no
global `matplotlib.use`) is involved.
"""

from __future__ import annotations

import base64
import html
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["Section", "new_figure", "figure_to_data_uri", "table_html", "write_report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: 1em 0; }
.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Section:
    """One titled block of a report.

    `html` is inserted verbatim (the caller escapes any untrusted text in it);
    `figures` are matplotlib figures or ready `data:` URIs; `table` is a pandas
    DataFrame or a list of row dicts, escaped cell by cell.
    """

    title: str
    html: str = ""
    figures: list = field(default_factory=list)
    table: object = None


def new_figure(figsize=(6.0, 4.0), **kwargs) -> Figure:
    """A matplotlib Figure on an Agg canvas, outside pyplot's global figure registry."""
    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def figure_to_data_uri(fig, dpi: int = 100) -> str:
    """Render `fig` to a base64 PNG data URI and close it (frees pyplot's reference)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    # A figure made through pyplot stays alive in its registry until closed; pyplot can
    # only own it if pyplot was imported, so avoid importing it (and a backend) here.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(value) -> str:
    """Escaped text of one table cell; floats get 4 significant digits."""
    if isinstance(value, float):
        value = f"{value:.4g}"
    return html.escape(str(value))


def table_html(table) -> str:
    """Render a DataFrame or list of row dicts as an HTML table, one row per line."""
    if hasattr(table, "to_dict"):  # pandas.DataFrame, without importing pandas
        rows = table.to_dict("records")
    else:
        rows = list(table)
    if not rows:
        return '<p class="note">(empty table)</p>'
    columns = list(dict.fromkeys(k for row in rows for k in row))  # union, first-seen order
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    lines = ["<table>", f"<tr>{head}</tr>"]
    for row in rows:
        cells = "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns)
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _section_html(section: Section) -> str:
    parts = [f"<section>\n<h2>{html.escape(section.title)}</h2>"]
    if section.html:
        parts.append(section.html)
    if section.table is not None:
        parts.append(table_html(section.table))
    for i, fig in enumerate(section.figures, start=1):
        uri = fig if isinstance(fig, str) and fig.startswith("data:") else figure_to_data_uri(fig)
        alt = html.escape(f"{section.title}, figure {i}", quote=True)
        parts.append(f'<img src="{uri}" alt="{alt}">')
    parts.append("</section>")
    return "\n".join(parts)


def write_report(path, title: str, sections: list[Section]) -> Path:
    """Write one self-contained HTML file and return its path.

    The file is written beside its destination and renamed into place, so a failure
    half-way never leaves a truncated report over a good one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(_section_html(s) for s in sections)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, path)
    return path
