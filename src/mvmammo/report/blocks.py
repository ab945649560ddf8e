"""The pieces a report page is made of: sections holding text, preformatted text, tables and figures.

Section builders return these plain objects; the Jinja2 template (templates/report.html.j2) turns them into
HTML, escaping every string. Figures travel as data: URIs (base64 PNG), so the page is one file that opens
from disk with no network.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Figure:
    title: str
    src: str  # data:image/png;base64,...
    caption: str = ""
    kind: str = "figure"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    kind: str = "table"


@dataclass
class Text:
    text: str
    kind: str = "text"


@dataclass
class Pre:
    text: str
    kind: str = "pre"


@dataclass
class Section:
    id: str  # the HTML id (tests and the table of contents find sections by it)
    title: str
    blocks: list = field(default_factory=list)
    empty: str = ""  # the one line shown when the section has no data

    def add(self, block) -> Section:
        self.blocks.append(block)
        return self


def png_figure(path: str | Path, title: str, caption: str = "") -> Figure:
    """A PNG file read back and inlined as base64."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return Figure(title, f"data:image/png;base64,{data}", caption)


def pm(mean: float, std: float, digits: int = 3) -> str:
    """'mean ± std' (std omitted when undefined, i.e. one seed)."""
    if mean != mean:  # NaN: undefined (one class only)
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std == std else "")


def ci(value: float, lo: float, hi: float, digits: int = 3) -> str:
    if value != value:
        return "-"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
