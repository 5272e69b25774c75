"""A small, dependency-free builder for self-contained HTML reports.

Every figure and thumbnail is embedded as a base64 ``data:`` URI and the stylesheet is inlined, so a
report is one file that can be mailed, archived or opened offline. The builder knows nothing about
clustering: the pipeline, the cell-image and the ST -> MSI commands all compose their reports from
the same few blocks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from .._atomic import atomic_path

__all__ = ["GalleryItem", "Report", "image_data_uri"]

_STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:0 24px 48px;color:#222;line-height:1.45}
header{border-bottom:2px solid #2b5d8a;margin-bottom:16px;padding:18px 0 8px}
header h1{margin:0;font-size:1.7em;color:#2b5d8a} header p{margin:4px 0;color:#666;font-size:.9em}
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:32px}
nav ul{columns:3;font-size:.9em} table{border-collapse:collapse;font-size:.85em;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#eef3f8}
td.l,th.l{text-align:left} figure{margin:12px 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;max-width:900px}
.gallery{display:flex;flex-wrap:wrap;gap:6px} .thumb{text-align:center;font-size:.72em;width:min-content}
.thumb img{image-rendering:pixelated;border:1px solid #ccc;display:block}
details{margin:6px 0;border:1px solid #e3e3e3;border-radius:4px;padding:4px 8px}
summary{cursor:pointer;font-weight:600} pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:.85em}
.note{color:#555;font-size:.9em}
"""


def image_data_uri(image: Any, *, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None) -> str:
    """Encode an image as a PNG ``data:`` URI.

    Parameters
    ----------
    image
        A path to a PNG/JPEG file, a :class:`matplotlib.figure.Figure`, PNG bytes, or a 2-D array
        (rendered with ``cmap`` between ``vmin`` and ``vmax``) or an RGB(A) array ``(H, W, 3|4)``
        with values in [0, 1].
    cmap, vmin, vmax
        Colour map and limits for 2-D arrays.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"Image file {str(path)!r} does not exist.")
        mime = "image/jpeg" if path.suffix.lower() in {".jpg", ".jpeg"} else "image/png"
        data = path.read_bytes()
    elif isinstance(image, bytes):
        mime, data = "image/png", image
    elif hasattr(image, "savefig"):
        buffer = io.BytesIO()
        image.savefig(buffer, format="png", dpi=image.dpi, bbox_inches="tight")
        mime, data = "image/png", buffer.getvalue()
    else:
        import matplotlib.image

        array = np.asarray(image)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(f"`image` must be 2-D or (H, W, 3|4); got an array of shape {array.shape}.")
        buffer = io.BytesIO()
        if array.ndim == 2:
            finite = array[np.isfinite(array)]
            lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
            hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
            matplotlib.image.imsave(buffer, np.nan_to_num(array, nan=lo), cmap=cmap, vmin=lo, vmax=hi, format="png")
        else:
            matplotlib.image.imsave(buffer, np.clip(array, 0, 1), format="png")
        mime, data = "image/png", buffer.getvalue()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@dataclass
class GalleryItem:
    """One thumbnail of a gallery: an image (anything :func:`image_data_uri` accepts) and a label."""

    image: Any
    label: str = ""
    title: str = ""
    """Tooltip shown on hover (e.g. the full feature name)."""


class Report:
    """Self-contained HTML report assembled from blocks, written atomically.

    Blocks appear in the order they are added; every block with a title gets an entry in the table
    of contents. All images are embedded, so the written file needs nothing else.

    Parameters
    ----------
    title
        Page title and heading.
    subtitle
        One line under the heading (e.g. the input file).

    Examples
    --------
    >>> from spatialclust.report import Report, GalleryItem
    >>> report = Report("My run", subtitle="input: data.imzML")
    >>> report.add_params({"embedding": {"method": "regular"}})
    >>> report.add_table("Metrics", metrics_frame, caption="Higher is better.")
    >>> report.add_figure("Cluster means", "figures/cluster_means.png", caption="...")
    >>> report.add_gallery("Cluster 0", [GalleryItem(image, label="m/z 426.93")], collapsed=True)
    >>> report.write("run/report.html")

    Methods
    -------
    add_text(title, text)
        A paragraph (plain text, escaped) or preformatted block (``pre=True``).
    add_params(params, title="Parameters")
        A nested mapping shown as YAML.
    add_table(title, frame, caption=None, float_format="{:.3g}")
        A :class:`pandas.DataFrame` (or a mapping -> one-row table).
    add_figure(title, figure, caption=None)
        A PNG file path, a matplotlib Figure or an image array.
    add_gallery(title, items, description=None, collapsed=False, thumbnail_px=64)
        A grid of labelled thumbnails, optionally in a collapsed ``<details>`` block.
    to_html() / write(path)
        Render the page; write it atomically (temporary file renamed into place).
    """

    def __init__(self, title: str, *, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self._blocks: list[tuple[str | None, str]] = []

    # -- blocks ----------------------------------------------------------------------------------
    def add_text(self, title: str | None, text: str, *, pre: bool = False) -> Report:
        """Add a paragraph of plain text (escaped); ``pre=True`` keeps line breaks and spacing."""
        body = f"<pre>{html.escape(text)}</pre>" if pre else "".join(
            f"<p>{html.escape(p)}</p>" for p in text.split("\n\n") if p.strip()
        )
        return self._add(title, body)

    def add_params(self, params: Mapping[str, Any], *, title: str = "Parameters") -> Report:
        """Add a nested parameter mapping, shown as YAML."""
        import yaml

        text = yaml.safe_dump(plain(params), sort_keys=False, default_flow_style=False)
        return self._add(title, f"<pre>{html.escape(text)}</pre>")

    def add_table(
        self,
        title: str | None,
        frame: pd.DataFrame | Mapping[str, Any],
        *,
        caption: str | None = None,
        float_format: str = "{:.3g}",
        index: bool = False,
    ) -> Report:
        """Add a table; floats are formatted with ``float_format``, missing values shown as ``/``."""
        if isinstance(frame, Mapping):
            frame = pd.DataFrame([dict(frame)])
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"`frame` must be a pandas DataFrame or a mapping; got {type(frame).__name__}.")
        if index:
            frame = frame.reset_index()
        head = "".join(f'<th class="{_align(frame[c])}">{html.escape(str(c))}</th>' for c in frame.columns)
        rows = []
        for _, row in frame.iterrows():
            cells = "".join(
                f'<td class="{_align(frame[c])}">{html.escape(_format(v, float_format))}</td>'
                for c, v in row.items()
            )
            rows.append(f"<tr>{cells}</tr>")
        body = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if caption:
            body += f'<p class="note">{html.escape(caption)}</p>'
        return self._add(title, body)

    def add_figure(self, title: str | None, figure: Any, *, caption: str | None = None) -> Report:
        """Add a figure: a PNG/JPEG path, a matplotlib Figure or an image array."""
        uri = image_data_uri(figure)
        alt = html.escape(title or caption or "figure")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return self._add(title, f'<figure><img src="{uri}" alt="{alt}">{cap}</figure>')

    def add_gallery(
        self,
        title: str,
        items: Iterable[GalleryItem],
        *,
        description: str | None = None,
        collapsed: bool = False,
        thumbnail_px: int = 64,
    ) -> Report:
        """Add a grid of labelled thumbnails (shown ``thumbnail_px`` wide).

        With ``collapsed=True`` the gallery is a ``<details>`` block that opens on click and does
        not get its own table-of-contents entry (use it for long per-cluster member lists).
        """
        thumbs = []
        for item in items:
            if not isinstance(item, GalleryItem):
                raise TypeError(f"`items` must hold GalleryItem objects; got {type(item).__name__}.")
            tip = f' title="{html.escape(item.title)}"' if item.title else ""
            thumbs.append(
                f'<div class="thumb"{tip}><img src="{image_data_uri(item.image)}" width="{int(thumbnail_px)}" '
                f'alt="{html.escape(item.label)}">{html.escape(item.label)}</div>'
            )
        desc = f'<p class="note">{html.escape(description)}</p>' if description else ""
        grid = f'{desc}<div class="gallery">{"".join(thumbs)}</div>'
        if collapsed:
            self._blocks.append((None, f"<details><summary>{html.escape(title)}</summary>{grid}</details>"))
            return self
        return self._add(title, grid)

    # -- output ----------------------------------------------------------------------------------
    def to_html(self) -> str:
        """Render the report as one HTML string."""
        toc, parts = [], []
        for i, (title, body) in enumerate(self._blocks):
            if title:
                toc.append(f'<li><a href="#s{i}">{html.escape(title)}</a></li>')
                parts.append(f'<section id="s{i}"><h2>{html.escape(title)}</h2>{body}</section>')
            else:
                parts.append(body)
        stamp = time.strftime("%Y-%m-%d %H:%M")
        sub = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        nav = f"<nav><ul>{''.join(toc)}</ul></nav>" if len(toc) > 2 else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<header><h1>{html.escape(self.title)}</h1>{sub}"
            f"<p>spatialclust {html.escape(__version__)} &middot; {stamp}</p></header>"
            f"{nav}{''.join(parts)}</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the report to ``path`` atomically and return the path."""
        path = Path(path)
        text = self.to_html()
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    def _add(self, title: str | None, body: str) -> Report:
        self._blocks.append((title, body))
        return self


def _align(column: pd.Series) -> str:
    return "" if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) else "l"


def _format(value: Any, float_format: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "/"
    if isinstance(value, (float, np.floating)):
        return float_format.format(float(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths to plain Python for YAML/JSON output."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return json.loads(json.dumps(value, default=str))

