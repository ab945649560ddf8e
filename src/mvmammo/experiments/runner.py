"""Run an experiment: every row x seed trained (or resumed, or skipped when done), evaluated with TTA,
then the table and the learning-curve plots written next to the runs."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from mvmammo.config import resolve
from mvmammo.experiments import Experiment


def row_config(exp: Experiment, row, seed: int, out: Path, quick: bool, extra: tuple[str, ...] = ()):
    # Later overrides win: experiment base, quick mode, the caller's extras, the row, then seed and paths.
    # Row overrides may name other runs of the experiment: {out} and {seed} are filled in.
    overrides = [*exp.overrides, *(exp.quick_overrides if quick else ()), *extra,
                 *(o.format(out=out, seed=seed) for o in row.overrides),
                 f"run.seed={seed}", f"run.out={out / f'{row.name}-s{seed}'}", f"data.cache_dir={out / '_cache'}"]
    return resolve(exp.preset, overrides)


def needed_runs(exp: Experiment, row, seeds, out: Path, quick: bool, extra: tuple[str, ...] = ()):
    """Configs of the runs a row needs first: Row.needs names rows as "experiment:row" (or "row" of the same
    experiment), trained with their own experiment's overrides into the same folder, seed by seed."""
    from mvmammo import experiments

    for need in row.needs:
        name, _, row_name = need.rpartition(":")
        other = experiments.get(name) if name else exp
        match = [r for r in other.rows if r.name == row_name]
        if not match:
            raise KeyError(f"{exp.name} row {row.name} needs {need!r}, which is not a row of {other.name}")
        for s in seeds:
            yield row_config(other, match[0], s, out, quick, extra)


def run_experiment(exp: Experiment, out: str | Path, quick: bool = False, seeds: tuple[int, ...] | None = None,
                   extra: tuple[str, ...] = (), progress: bool = False, rows: tuple[str, ...] = ()) -> list[Path]:
    from mvmammo.evaluation.evaluate import evaluate_run
    from mvmammo.training.loop import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = seeds or (exp.quick_seeds if quick else exp.seeds)
    todo = [r for r in exp.rows if not rows or r.name in rows]
    runs = []
    t0 = time.time()
    total = len(todo) * len(seeds)
    for r in todo:
        for cfg in needed_runs(exp, r, seeds, out, quick, extra):
            if not (Path(cfg.run.out) / "DONE").exists():
                print(f"training {Path(cfg.run.out).name}, needed by {r.name} ({time.time() - t0:.0f} s elapsed)",
                      flush=True)
                train(replace(cfg, run=replace(cfg.run, progress=progress)))
        for s in seeds:
            cfg = row_config(exp, r, s, out, quick, extra)
            run_dir = Path(cfg.run.out)
            k = len(runs) + 1
            if not (run_dir / "DONE").exists():
                print(f"[{k}/{total}] training {run_dir.name} ({time.time() - t0:.0f} s elapsed)", flush=True)
                train(replace(cfg, run=replace(cfg.run, progress=progress)))
            if not (run_dir / "metrics_test.json").exists():
                res = evaluate_run(run_dir, split="test")
                print(f"[{k}/{total}] {run_dir.name}: test AUC malignant {res['malignant']['auc']:.3f}, "
                      f"benign {res['benign']['auc']:.3f} (tta {res['tta']})", flush=True)
            runs.append(run_dir)
    (out / f"{exp.name}_runs.json").write_text(json.dumps([str(r) for r in runs], indent=2))
    return runs
