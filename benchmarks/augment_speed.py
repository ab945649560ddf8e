"""The augmentation of a window-store batch at full resolution: the heatmap channels upsampled to full
resolution and resampled with the image (the two-step path, before 2026-11-27) against the heatmaps sampled
straight from the store's 1/8 grid (augment.crop_resize_coarse, what training/inputs.windows does now).

Both paths run in the same invocation on the same random batch: CC windows 2677x1942 cut from cached
2877x2142 windows (100 px margins), image uint16 bits + heatmap grid (2, 360, 268) float16, random boxes,
bicubic for the image. Reported: windows/s of each, their ratio, and the heatmap channels' difference.

  python benchmarks/augment_speed.py                      (CPU, about a minute on 2 cores)
  python benchmarks/augment_speed.py --device cuda        (on a GPU host; benchmarks/gpu_check.sh runs it)

Writes benchmarks/results/augment_speed-<device>-<date>.json (or under --out).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402


def two_step(raw, heat, boxes, size, mode):
    """The path as it was: upsample the grid, join it to the image, resample all three channels."""
    from mvmammo.data import augment
    from mvmammo.data.cache_spec import HEATMAP_SCALE
    from mvmammo.data.store.reader import upsample_heat
    from mvmammo.training.inputs import raw_to_float

    x = raw_to_float(raw)
    x = torch.cat([x, upsample_heat(heat.float(), x.shape[-2:]) * HEATMAP_SCALE], dim=1)
    return augment.normalise(augment.crop_resize(x, size, boxes, mode))


def direct(raw, heat, boxes, size, mode):
    from mvmammo.training.inputs import windows

    return windows(raw, boxes, size, mode, heat=heat)


def _time(fn, args, device, repeats):
    fn(*args)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats, out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2, help="windows per call (16 on a GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", choices=["full", "small"], default="full")
    p.add_argument("--out", default=None, help="folder for the JSON (default benchmarks/results)")
    a = p.parse_args(argv)

    from mvmammo.data import augment
    from mvmammo.data.store import format as fmt

    device = torch.device(a.device)
    size = (2677, 1942) if a.size == "full" else (256, 192)
    margin = 100 if a.size == "full" else 10
    hp, wp = size[0] + 2 * margin, size[1] + 2 * margin
    gh, gw = fmt.heat_shape(hp, wp, 8)
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 4096, (a.batch, 1, hp, wp), generator=g, dtype=torch.int32).to(torch.int16).to(device)
    # A smooth heat field: a few blobs on the grid, values in [0, 1].
    yy, xx = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
    blobs = torch.zeros(a.batch, 2, gh, gw)
    for k in range(6):
        cy, cx, r = torch.rand(3, generator=g) * torch.tensor([gh, gw, gh / 6])
        blobs[:, k % 2] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r + 2) ** 2))
    heat = blobs.clamp(0, 1).half().to(device)
    boxes = augment.sample_boxes(a.batch, margin, g).to(device)
    args = (raw, heat, boxes, size, augment.RESIZE_MODE)
    t_old, old = _time(two_step, args, device, a.repeats)
    t_new, new = _time(direct, args, device, a.repeats)
    d_heat = (old[:, 1:] - new[:, 1:].float()).abs()
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": "python benchmarks/augment_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "window": list(size), "cached": [hp, wp], "heat_grid": [gh, gw], "batch": a.batch,
        "two_step_windows_per_s": a.batch / t_old, "direct_windows_per_s": a.batch / t_new,
        "speedup": t_old / t_new,
        "image_channel_max_abs_diff": float((old[:, :1] - new[:, :1].float()).abs().max()),
        "heat_max_abs_diff": float(d_heat.max()), "heat_mean_abs_diff": float(d_heat.mean()),
    }
    return save_result(result, f"augment_speed-{device.type}-{result['date']}.json", a.out)


if __name__ == "__main__":
    main()
