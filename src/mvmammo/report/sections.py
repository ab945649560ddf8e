"""The report's data sections: the cohort, the AUC tables, the config diff, the environment.

Each builder takes run folders (and a scratch folder for figures) and returns a :class:`Section`; a section
without data says so in one line. Nothing here trains or evaluates: it reads what run folders hold.
"""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from mvmammo import LABELS
from mvmammo.errors import MvError
from mvmammo.report.blocks import Pre, Section, Table, Text, ci, pm, png_figure

# Packages whose versions decide the numbers (and the ones that made the page).
PACKAGES = ("mvmammo", "torch", "numpy", "scipy", "pandas", "scikit-image", "matplotlib", "jinja2", "optuna",
            "tensorboard")


def run_config(run: Path) -> dict:
    """config.json as saved by the run (a plain dict: old runs may lack newer keys)."""
    path = run / "config.json"
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise MvError(f"{path}: not valid JSON; restore it from the run's config (or leave the run out of the "
                      "report)") from None


def cohort_table(cfg: dict, run: Path) -> Path:
    """The exam table a run trained on. Mirrors mvmammo.training.inputs.resolve_table without generating
    anything: data.table, else the synthetic cohort's folder under the cache root."""
    d = cfg.get("data", {})
    if d.get("table"):
        return Path(d["table"])
    size = d.get("size_cc", [0, 0])
    name = f"synth-{d.get('synth_preset')}-n{d.get('synth_breasts')}-s{d.get('synth_seed')}-{size[0]}x{size[1]}"
    beside = run.resolve().parent / "_cache" / name / "exams.csv"  # the default, and where experiments put it
    if not d.get("cache_dir"):
        return beside
    given = Path(d["cache_dir"]) / name / "exams.csv"  # a relative cache_dir is relative to where training ran
    return beside if not given.is_file() and beside.is_file() else given


def cohorts(runs: list[Path]) -> dict[Path, list[Path]]:
    """{exam table: runs that trained on it}, in the order first seen."""
    out: dict[Path, list[Path]] = {}
    for r in runs:
        out.setdefault(cohort_table(run_config(r), r), []).append(r)
    return out


def oracle_of(table: Path) -> dict | None:
    path = table.parent / "oracle.json"
    return json.loads(path.read_text()) if path.is_file() else None


def cohort_section(runs: list[Path], scratch: Path) -> Section:
    from mvmammo.data import exams

    sec = Section("cohort", "Cohort", empty="no run names its exam table")
    for i, (table, members) in enumerate(cohorts(runs).items()):
        sec.add(Text(f"{table} (used by {len(members)} run{'s' if len(members) > 1 else ''})"))
        if not table.is_file():
            sec.add(Text(f"{table}: not found (moved or deleted); the summary needs the exam table"))
            continue
        try:
            df = exams.load_valid(table, check_files=False)
        except MvError as exc:
            sec.add(Text(f"{table}: cannot summarise ({str(exc).splitlines()[0]})"))
            continue
        sec.add(Pre("\n".join(exams.summarize(df).lines())))
        oracle = oracle_of(table)
        if oracle:
            rows = [[lab, *(f"{oracle[lab][k]:.3f}" if oracle[lab].get(k) is not None else "-"
                            for k in ("auc_cc", "auc_mlo", "auc_both"))] for lab in LABELS if lab in oracle]
            sec.add(Table(["label", "CC only", "MLO only", "both views"], rows,
                          f"oracle AUC on the {oracle.get('split', 'test')} split: the best any model can reach "
                          "from what each view shows (synthetic cohort)"))
        if (table.parent / "lesions.csv").is_file():  # the synthetic generator's ground truth: a montage
            from mvmammo.data.synthetic.preview import write_preview

            path = write_preview(table.parent, path=scratch / f"cohort_preview_{i}.png")
            sec.add(png_figure(path, "cohort preview",
                               "CC | MLO pairs; red = malignant, green = benign outlines (dotted: not visible in "
                               "that view); yellow square = the spurious cue"))
    return sec


def _experiment_title(name: str) -> str:
    from mvmammo import experiments

    try:
        return f"{name}: {experiments.get(name).reproduces}"
    except KeyError:
        return name


def tables_section(groups: dict[str, list[Path]], split: str = "test", n_boot: int = 1000) -> Section:
    """One table per group: AUC mean ± std over seeds, the seeds' ensemble with DeLong and bootstrap 95% CIs."""
    from mvmammo.evaluation.tables import oracle_for_row, table

    sec = Section("tables", f"Tables ({split} split)", empty="no runs")
    for name, runs in groups.items():
        done = [r for r in runs if (r / f"predictions_{split}.csv").is_file()]
        sec.add(Text(_experiment_title(name)))
        if not done:
            sec.add(Text(f"no run here is evaluated on the {split} split (run `mvmammo evaluate RUN --split "
                         f"{split}`)"))
            continue
        oracle = oracle_of(cohort_table(run_config(done[0]), done[0]))
        try:
            df = table(done, split, n_boot=n_boot)
        except (MvError, ValueError) as exc:  # e.g. seeds evaluated on different breasts: say so, keep the page
            sec.add(Text(f"no table for {name}: {str(exc).splitlines()[0]}"))
            continue
        headers = ["model", "seeds"]
        for lab in LABELS[::-1]:  # malignant first, as the paper
            headers += [f"{lab} AUC (mean ± std)", f"{lab} ensemble [DeLong 95% CI]", f"{lab} bootstrap 95% CI"]
        if oracle:
            headers.append("malignant gap to oracle")
        rows = []
        for _, r in df.iterrows():
            cells = [str(r["row"]), str(int(r["seeds"]))]
            for lab in LABELS[::-1]:
                cells += [pm(r[f"{lab}_mean"], r[f"{lab}_std"]),
                          ci(r[f"{lab}_ens"], r[f"{lab}_ens_delong_lo"], r[f"{lab}_ens_delong_hi"]),
                          f"[{r[f'{lab}_ens_boot_lo']:.3f}, {r[f'{lab}_ens_boot_hi']:.3f}]"]
            if oracle:
                ref = oracle_for_row(str(r["row"]), oracle, "malignant")
                cells.append(f"{r['malignant_mean'] - ref:+.3f}" if ref is not None else "-")
            rows.append(cells)
        missing = [r.name for r in runs if r not in done]
        caption = (f"mean ± sample std of the per-seed AUCs (each seed's TTA-averaged predictions); ensemble = the seeds' "
                   f"averaged TTA predictions; {n_boot} patient-bootstrap resamples")
        if missing:
            caption += f"; not evaluated on {split}: {', '.join(missing)}"
        sec.add(Table(headers, rows, caption))
    return sec


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out


# Keys that differ between any two runs by construction: the folder names the run already.
_ALWAYS_DIFFER = ("run.out",)


def config_diff_section(runs: list[Path]) -> Section:
    sec = Section("config-diff", "Config differences between the runs")
    if len(runs) < 2:
        sec.empty = "one run: nothing to compare"
        return sec
    flat = [_flat(run_config(r)) for r in runs]
    keys = sorted(set().union(*flat))
    differ = [k for k in keys if k not in _ALWAYS_DIFFER and len({f.get(k, "(absent)") for f in flat}) > 1]
    if not differ:
        sec.empty = f"all {len(runs)} runs have the same config (apart from run.out)"
        return sec
    rows = [[r.name, *(f.get(k, "(absent)") for k in differ)] for r, f in zip(runs, flat)]
    sec.add(Table(["run", *differ], rows, f"only the {len(differ)} of {len(keys)} config keys whose values differ "
                                          "between runs (JSON values from each run's config.json)"))
    return sec


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_section(runs: list[Path]) -> Section:
    sec = Section("environment", "Environment")
    revs: dict[str, list[str]] = {}
    devices: dict[str, list[str]] = {}
    for r in runs:
        p = r / "git_revision.txt"
        rev = p.read_text().strip() if p.is_file() else "(no git_revision.txt)"
        revs.setdefault(rev or "unknown", []).append(r.name)
        run = run_config(r).get("run", {})
        dev = f"device {run.get('device', '?')}, precision {run.get('precision', '?')}"
        devices.setdefault(dev, []).append(r.name)
    if runs:
        sec.add(Table(["git revision of the code that trained", "runs"],
                      [[k, ", ".join(v)] for k, v in revs.items()]))
        sec.add(Table(["device / precision asked for (run.device; auto = a GPU when present)", "runs"],
                      [[k, ", ".join(v)] for k, v in devices.items()]))
    sec.add(Table(["package", "version"], [["python", platform.python_version()]]
                  + [[p, _version(p)] for p in PACKAGES],
                  "versions on the machine that wrote this report"))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sec.add(Text(f"report written {now} on {platform.platform()} ({platform.machine()})"))
    return sec
