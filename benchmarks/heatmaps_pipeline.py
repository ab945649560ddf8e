"""`mvmammo heatmaps` end to end: full-size images/s through the command's stages, one image at a time vs the
overlapped pipeline (host threads read, prepare and write while the device runs the network).

  python benchmarks/heatmaps_pipeline.py --breasts 8 --network none              # host stages only (this CPU)
  python benchmarks/heatmaps_pipeline.py --device cuda --breasts 32 --network densenet --mode both

Images: full-size synthetic `paper` breasts (CC 2677x1942, MLO 2974x1748 16-bit PNGs), both views.
``--network none``: the device stage is replaced by a stand-in that returns the grid's shape of probabilities
without any computation, so the rate is the host's ceiling (what the stages around the network allow).
``--network densenet``: DenseNet-121 (random weights; speed does not depend on them) through
:func:`mvmammo.heatmaps.table.make_heatmaps`, the command's own code path, after a warm-up on one breast.
Both run with ``--workers 0`` (the baseline, same invocation) and with the pipeline's workers. Also reported:
the host stages timed one after the other on one thread (read, prepare, render, write; ms per image).
Writes <out>/heatmaps_pipeline[_<tag>].json.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402

from mvmammo.data import exams, images  # noqa: E402
from mvmammo.heatmaps import pipeline  # noqa: E402
from mvmammo.heatmaps.grid import grid  # noqa: E402
from mvmammo.heatmaps.infer import Grid, render  # noqa: E402
from mvmammo.heatmaps.table import Job, default_workers, make_heatmaps, stages  # noqa: E402

FULL_CC, FULL_MLO = (2677, 1942), (2974, 1748)
SMALL_CC, SMALL_MLO = (640, 480), (700, 440)


def cohort(folder: Path, breasts: int, size: str) -> Path:
    from mvmammo.data.synthetic import generate_cohort

    cc, mlo = (FULL_CC, FULL_MLO) if size == "full" else (SMALL_CC, SMALL_MLO)
    generate_cohort(folder, preset="paper", breasts=breasts, size_cc=cc, size_mlo=mlo, seed=0, heatmaps=False,
                    workers=min(8, default_workers()), progress=False)
    return folder / "exams.csv"


def jobs_of(table: Path, out: Path) -> list[Job]:
    df = exams.read_table(table)
    out.mkdir(parents=True, exist_ok=True)
    return [Job(k, v, exams.resolve_path(df, row[f"{v}_path"]),
                *(out / f"{k}_{v}{s}" for s in ("_benign.png", "_malignant.png", "_grid.npz")))
            for k, (_, row) in enumerate(df.iterrows()) for v in ("cc", "mlo")]


def stand_in(patch: int, stride: int):
    """The device stage without a device: the grid's probabilities, uniform, no network."""
    def infer(job, prep):
        rows, cols = grid(prep.image.shape, patch, stride)
        probs = np.full((len(rows), len(cols), 4), 0.25, np.float32)
        return Grid(probs, rows, cols, tuple(prep.image.shape), prep.box, prep.shape, 0, "patches")
    return infer


def host_stages(jobs: list[Job], patch: int, stride: int) -> dict:
    """ms per image of each host stage, one after the other on this thread (on at most 8 images)."""
    jobs = jobs[:8]
    load, _, write = stages(None, patch, stride, 1, "cpu", "patches")
    infer = stand_in(patch, stride)
    t = {"read": 0.0, "prepare": 0.0, "render": 0.0, "write_files": 0.0}
    from mvmammo.patches.image import prepare
    for job in jobs:
        t0 = time.perf_counter()
        img = images.read_image(job.image)
        t1 = time.perf_counter()
        prep = prepare(img, patch)
        t2 = time.perf_counter()
        g = infer(job, prep)
        t3 = time.perf_counter()
        render(g, patch)
        t4 = time.perf_counter()
        write(job, g)   # renders again, then the three files
        t5 = time.perf_counter()
        t["read"] += t1 - t0
        t["prepare"] += t2 - t1
        t["render"] += t4 - t3
        t["write_files"] += (t5 - t4) - (t4 - t3)
    return {k: 1000 * v / len(jobs) for k, v in t.items()}


def host_ceiling(jobs: list[Job], patch: int, stride: int, workers: int, out: Path) -> dict:
    res = {}
    for w in (0, workers):
        dest = out / f"host_w{w}"
        js = jobs_of_into(jobs, dest)
        load, _, write = stages(None, patch, stride, 1, "cpu", "patches")
        t0 = time.perf_counter()
        pipeline.run(js, load, stand_in(patch, stride), write, workers=w)
        res[f"workers_{w}"] = len(js) / (time.perf_counter() - t0)
    res["speedup"] = res[f"workers_{workers}"] / res["workers_0"]
    return res


def jobs_of_into(jobs: list[Job], dest: Path) -> list[Job]:
    dest.mkdir(parents=True, exist_ok=True)
    return [Job(j.k, j.view, j.image, dest / j.benign.name, dest / j.malignant.name, dest / j.grid.name)
            for j in jobs]


def network_runs(table: Path, tmp: Path, modes: list[str], workers: int, device: str, batch: int,
                 patch: int, stride: int) -> dict:
    from mvmammo.models.densenet import DenseNet, DenseNetConfig
    from mvmammo.patches.runs import write_model

    torch.manual_seed(0)
    run = tmp / "patch_run"
    write_model(run, DenseNet(DenseNetConfig()).eval(), patch=patch)
    res = {}
    for mode in modes:
        # Warm-up (cuDNN's algorithm choice, allocator): one breast, not timed.
        make_heatmaps(table, run, tmp / f"warm_{mode}", stride=stride, batch_size=batch, device=device,
                      progress=False, limit=1, mode=mode, workers=workers)
        for w in (0, workers):
            s = make_heatmaps(table, run, tmp / f"{mode}_w{w}", stride=stride, batch_size=batch, device=device,
                              progress=False, mode=mode, workers=w)
            res[f"{mode}_workers_{w}"] = {"images": s["images"], "seconds": s["seconds"],
                                         "images_per_s": s["images"] / s["seconds"], "patches": s["patches"],
                                         "computed": s["computed"]}
            print(f"{mode} workers={w}: {s['images'] / s['seconds']:.2f} images/s", flush=True)
        res[f"{mode}_speedup"] = (res[f"{mode}_workers_{workers}"]["images_per_s"]
                                  / res[f"{mode}_workers_0"]["images_per_s"])
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--breasts", type=int, default=8, help="synthetic breasts (two images each)")
    ap.add_argument("--size", choices=("full", "small"), default="full")
    ap.add_argument("--network", choices=("none", "densenet"), default="none")
    ap.add_argument("--mode", choices=("patches", "dense", "both"), default="both")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="pipeline threads (default: usable cores, <= 16)")
    ap.add_argument("--batch", type=int, default=512, help="patches per forward (patches mode)")
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--stride", type=int, default=70)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    workers = default_workers() if args.workers is None else args.workers
    workers = max(workers, 1)
    tmp = Path(tempfile.mkdtemp(prefix="hm_pipeline_"))
    try:
        t0 = time.perf_counter()
        table = cohort(tmp / "cohort", args.breasts, args.size)
        gen_s = time.perf_counter() - t0
        jobs = jobs_of(table, tmp / "stages")
        dev = torch.device(args.device)
        result = {"device": str(dev), "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                                                      else platform.processor() or platform.machine()),
                  "cpu_count": os.cpu_count(), "usable_cores": default_workers(), "workers": workers,
                  "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "load_avg_before": os.getloadavg(), "size": args.size, "images": len(jobs),
                  "patch": args.patch, "stride": args.stride, "cohort_seconds": gen_s,
                  "command": "python benchmarks/heatmaps_pipeline.py " + " ".join(sys.argv[1:] if argv is None
                                                                                   else argv)}
        result["host_ms_per_image"] = host_stages(jobs, args.patch, args.stride)
        result["host_ceiling_images_per_s"] = host_ceiling(jobs, args.patch, args.stride, workers, tmp)
        h = result["host_ceiling_images_per_s"]
        print(f"host stages ms/image: {result['host_ms_per_image']}; host ceiling: {h['workers_0']:.2f} images/s "
              f"one at a time, {h[f'workers_{workers}']:.2f} with {workers} workers ({h['speedup']:.2f}x)",
              flush=True)
        if args.network == "densenet":
            modes = ["patches", "dense"] if args.mode == "both" else [args.mode]
            result["network"] = network_runs(table, tmp, modes, workers, args.device, args.batch, args.patch,
                                             args.stride)
        result["load_avg_after"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    name = "heatmaps_pipeline" + (f"_{args.tag}" if args.tag else "") + ".json"
    return save_result(result, name, args.out)


if __name__ == "__main__":
    main()
