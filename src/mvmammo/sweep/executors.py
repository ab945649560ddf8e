"""Where sweep workers run: K local processes, or a Slurm job array through submitit.

Both run the same worker loop (worker.py) against the same storage, so they can be mixed: start a sweep
locally and add Slurm workers to it, or the other way round.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mvmammo.errors import UsageError


def local_threads(workers: int) -> int:
    """torch threads per local worker: the cores split between the workers (at least one each)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def start_local(sweep_dir: Path, workers: int, threads: int = 0, gpus: list[str] | None = None
                ) -> list[subprocess.Popen]:
    """K worker processes; their output goes to SWEEP/logs/worker-<i>.log.

    gpus: worker i sees only GPU gpus[i % len(gpus)] (CUDA_VISIBLE_DEVICES), so K workers on a K-GPU
    workstation each train on their own card; None leaves the environment as it is.
    """
    logs = sweep_dir / "logs"
    logs.mkdir(exist_ok=True)
    threads = threads or local_threads(workers)
    procs = []
    for i in range(workers):
        log = open(logs / f"worker-{i}.log", "ab")
        cmd = [sys.executable, "-m", "mvmammo.sweep.worker", str(sweep_dir), f"--threads={threads}"]
        env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {}))
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
        log.close()  # the child holds its own descriptor
    return procs


@dataclass
class SlurmOptions:
    partition: str = ""
    time_min: int = 24 * 60  # per array task; a task cut off mid-trial is retried (heartbeat) and resumes
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 64
    extra: dict = field(default_factory=dict)  # more submitit slurm_* parameters (e.g. {"account": "x"})


def _worker_entry(sweep_dir: str, threads: int) -> int:
    from mvmammo.sweep.worker import run_worker

    return run_worker(sweep_dir, threads)


def _final_entry(sweep_dir: str) -> dict:
    from mvmammo.sweep import study as st
    from mvmammo.sweep.final import finish

    spec = st.load_spec(sweep_dir)
    study, _ = st.open_study(spec)
    return finish(spec, study)


def _executor(sweep_dir: Path, opts: SlurmOptions, cluster: str | None, name: str, parallel: int = 1):
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install submitit") from None
    ex = submitit.AutoExecutor(folder=str(sweep_dir / "slurm"), cluster=cluster)
    params = dict(timeout_min=opts.time_min, cpus_per_task=opts.cpus_per_task, mem_gb=opts.mem_gb,
                  slurm_array_parallelism=parallel, name=f"{name}-{sweep_dir.name}")
    if ex.cluster == "slurm":
        params.update(gpus_per_node=opts.gpus_per_task, tasks_per_node=1,
                      **({"slurm_partition": opts.partition} if opts.partition else {}),
                      **{f"slurm_{k}": v for k, v in opts.extra.items()})
    ex.update_parameters(**params)
    return ex


def submit_slurm(sweep_dir: Path, workers: int, opts: SlurmOptions, cluster: str | None = None) -> list:
    """A job array of K tasks, each one worker; returns submitit jobs. cluster="local" runs them here (tests)."""
    ex = _executor(sweep_dir, opts, cluster, "sweep", workers)
    return ex.map_array(_worker_entry, [str(sweep_dir)] * workers, [opts.cpus_per_task] * workers)


def submit_final(sweep_dir: Path, opts: SlurmOptions, cluster: str | None = None):
    """One job on a GPU node for the final stage (missing seed runs, test evaluation with TTA)."""
    return _executor(sweep_dir, opts, cluster, "sweep-final").submit(_final_entry, str(sweep_dir))
