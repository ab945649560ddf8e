"""Run an experiment: every row x seed trained (or resumed, or skipped when done), evaluated with TTA,
then the table and the learning-curve plots written next to the runs."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from mvmammo import config as config_mod
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


def _execute(kind: str, cfg_dict: dict, progress: bool, threads: int) -> str:
    """One job, in this process or a worker: train (+ evaluate on test), or a blending estimate."""
    import torch

    from mvmammo import config as config_mod

    if threads:
        # Several runs share the cores: one thread each avoids OpenMP oversubscription, which on a 2-core
        # machine makes small convolutions 10-50x slower than running the runs side by side.
        torch.set_num_threads(threads)
    cfg = config_mod.from_dict(cfg_dict)
    run_dir = Path(cfg.run.out)
    if kind == "estimate":
        from mvmammo.experiments.blend_estimate import estimate

        weights = Path(cfg.reg.blend_weights_file)
        if not weights.exists():
            estimate(cfg, weights.parent, weights.name)
        return f"blending weights estimated: {weights}"
    from mvmammo.evaluation.evaluate import evaluate_run
    from mvmammo.training.loop import train

    if not (run_dir / "DONE").exists():
        from mvmammo.analysis.hooks import hooks_for
        from mvmammo.experiments.blend_estimate import ensure_weights

        ensure_weights(cfg)
        train(replace(cfg, run=replace(cfg.run, progress=progress)), hooks=hooks_for(cfg))
    if kind == "train":
        return f"{run_dir.name}: trained"
    res = evaluate_run(run_dir, split="test")
    return (f"{run_dir.name}: test AUC malignant {res['malignant']['auc']:.3f}, benign {res['benign']['auc']:.3f} "
            f"(tta {res['tta']})")


def default_jobs() -> int:
    """Runs side by side: one per core on a CPU machine, one at a time on a GPU (each run fills it)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(os.cpu_count() or 1, 8))


def _waves(exp: Experiment, todo, seeds, out: Path, quick: bool, extra) -> list[list[tuple[str, object]]]:
    """Jobs in dependency order: first the runs other rows need and the blending estimates, then the rows."""
    first: dict[str, tuple[str, object]] = {}
    rows: list[tuple[str, object]] = []
    for r in todo:
        for cfg in needed_runs(exp, r, seeds, out, quick, extra):
            if not (Path(cfg.run.out) / "DONE").exists():
                first.setdefault(str(cfg.run.out), ("train", cfg))
        for s in seeds:
            cfg = row_config(exp, r, s, out, quick, extra)
            if cfg.reg.blend == "offline" and cfg.reg.blend_weights_file \
                    and not Path(cfg.reg.blend_weights_file).exists():
                first.setdefault(cfg.reg.blend_weights_file, ("estimate", cfg))
            run_dir = Path(cfg.run.out)
            if not ((run_dir / "DONE").exists() and (run_dir / "metrics_test.json").exists()):  # else nothing to do
                rows.append(("train+evaluate", cfg))
    return [w for w in (list(first.values()), rows) if w]


def run_experiment(exp: Experiment, out: str | Path, quick: bool = False, seeds: tuple[int, ...] | None = None,
                   extra: tuple[str, ...] = (), progress: bool = False, rows: tuple[str, ...] = (),
                   jobs: int | None = None) -> list[Path]:
    """Train and evaluate every row x seed (skipping finished ones) with ``jobs`` runs side by side."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if exp.prepare is not None:  # steps every row needs first (the heatmap chain writes the rows' table)
        exp.prepare(out, quick)
    seeds = seeds or (exp.quick_seeds if quick else exp.seeds)
    todo = [r for r in exp.rows if not rows or r.name in rows]
    jobs = jobs or default_jobs()
    t0 = time.time()
    runs = [Path(row_config(exp, r, s, out, quick, extra).run.out) for r in todo for s in seeds]
    waves = _waves(exp, todo, seeds, out, quick, extra)
    # Cohorts and window caches are built here, once, before runs in parallel workers read them.
    from mvmammo.training.inputs import prepare_cache

    built = set()
    for wave in waves:
        for _, cfg in wave:
            if cfg.data not in built:  # the data config decides the cohort and the cache (frozen: hashable)
                prepare_cache(cfg, progress=True)
                built.add(cfg.data)
    total, done = sum(len(w) for w in waves), 0
    for wave in waves:
        if jobs == 1:
            for kind, cfg in wave:
                print(f"[{done + 1}/{total}] {kind} {Path(cfg.run.out).name} ({time.time() - t0:.0f} s)", flush=True)
                msg = _execute(kind, config_mod.to_dict(cfg), progress, 0)
                done += 1
                print(f"[{done}/{total}] {msg}", flush=True)
            continue
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked OpenMP/torch state
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_execute, kind, config_mod.to_dict(cfg), False, 1): (kind, cfg)
                       for kind, cfg in wave}
            print(f"{len(wave)} job(s) on {min(jobs, len(wave))} worker(s): "
                  + ", ".join(Path(c.run.out).name for _, c in wave), flush=True)
            for fut in as_completed(futures):
                done += 1
                print(f"[{done}/{total}] {fut.result()} ({time.time() - t0:.0f} s)", flush=True)
    (out / f"{exp.name}_runs.json").write_text(json.dumps([str(r) for r in runs], indent=2))
    return runs
