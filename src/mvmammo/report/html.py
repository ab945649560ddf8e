"""`mvmammo report`: one self-contained HTML page for run, experiment and sweep folders.

The page is rendered from templates/report.html.j2 (Jinja2, autoescaped) with every figure inline as a
base64 PNG, so it opens from disk with no network and can be mailed as one file. Sections, in order: the
cohort, the tables, learning curves, gradient norms, LCA, view utilisation, blending weights, sweeps, the
config differences, the environment. It reads run folders only (no training, no evaluation).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mvmammo import __version__
from mvmammo.report.blocks import Section
from mvmammo.report.collect import Inputs, expand

# Section ids in page order (tests check that each is present).
SECTION_IDS = ("cohort", "tables", "learning-curves", "gradient-norms", "lca", "utilisation", "blending", "sweep",
               "config-diff", "environment")


def build_sections(inputs: Inputs, scratch: Path, split: str = "test", label: str = "malignant",
                   n_boot: int = 1000) -> list[Section]:
    from mvmammo.report import sections as s
    from mvmammo.report.figure_sections import blending_section, figure_sections, sweep_section

    out = [s.cohort_section(inputs.runs, scratch), s.tables_section(inputs.groups, split, n_boot)]
    out += figure_sections(inputs.groups, scratch, label)
    out += [blending_section(inputs.runs, inputs.folders), sweep_section(inputs.sweeps, scratch, label),
            s.config_diff_section(inputs.runs), s.environment_section(inputs.runs)]
    return out


def render(sections: list[Section], title: str, inputs: Inputs, paths: list[str]) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("mvmammo", "report/templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=False)
    return env.get_template("report.html.j2").render(title=title, sections=sections, runs=inputs.runs,
                                                     inputs=paths, version=__version__)


def write_atomic(text: str, out: Path) -> Path:
    """Write next to the target, then rename over it: a reader never sees half a page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # open() keeps the umask's permissions (mkstemp: 0600)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def write_report(paths: list[str | Path], out: str | Path, title: str | None = None, split: str = "test",
                 label: str = "malignant", n_boot: int = 1000) -> Path:
    """Render the report of ``paths`` (run, experiment or sweep folders) into the HTML file ``out``."""
    paths = [str(p) for p in paths]
    inputs = expand(paths)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="mvmammo-report-") as scratch:
        sections = build_sections(inputs, Path(scratch), split, label, n_boot)
    title = title or f"mvmammo report: {', '.join(Path(p).name or p for p in paths)}"
    return write_atomic(render(sections, title, inputs, paths), out)
