"""Heatmap stage speed: DenseNet-121 patches/s, full-size images/s, and the cost per image in patches and FLOPs.

  python benchmarks/heatmaps_speed.py                       # this CPU (fp32), a few batches
  python benchmarks/heatmaps_speed.py --device cuda --batch 512 --bf16 --channels-last --compile

Measures (1) the patch classifier alone on resident random batches (patches/s, fp32 or bf16 autocast),
(2) the rest of one full-size image's pipeline (standardised crop, patch gathering, per-pixel averaging) with a
zero-cost model, so its time is the overhead outside the network, and (3) one whole full-size CC image
end-to-end when ``--full-image`` is given (minutes on a CPU). Images/s is patches/s / patches per image plus
the overhead, unless (3) measured it directly. FLOPs per patch come from torch.utils.flop_counter (a
multiply-add counts as 2 FLOPs). Writes <out>/heatmaps_speed[_<tag>].json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mvmammo.heatmaps.grid import grid
from mvmammo.heatmaps.infer import image_heatmaps
from mvmammo.models.densenet import DenseNet, DenseNetConfig

FULL_CC, FULL_MLO = (2677, 1942), (2974, 1748)


class ZeroCost(torch.nn.Module):
    """Stands in for the network: constant logits, so the timed work is everything around the model."""

    cfg = DenseNetConfig()

    def forward(self, x):
        return x.new_zeros(x.shape[0], 4)


def flops_per_patch(model, patch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, patch, patch))
    return float(fc.get_total_flops())


def time_model(model, batch: int, patch: int, device, bf16: bool, channels_last: bool, seconds: float) -> dict:
    x = torch.randn(batch, 1, patch, patch, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (and compilation)
    step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if time.perf_counter() - t0 >= seconds and n >= 2:
            break
    dt = time.perf_counter() - t0
    return {"batches": n, "seconds": dt, "patches_per_s": n * batch / dt}


def synthetic_breast(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (0.48 * h)) ** 2 + (xx / (0.97 * w)) ** 2 < 1
    return np.where(inside, 1500 + rng.integers(0, 400, size=shape), 0).astype(np.uint16)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--stride", type=int, default=70)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--seconds", type=float, default=20.0, help="timing length of the model loop")
    ap.add_argument("--full-image", action="store_true", help="also time one whole full-size CC image")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = DenseNet(DenseNetConfig()).eval()
    flops = flops_per_patch(model, args.patch)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if args.compile else model
    speed = time_model(run_model, args.batch, args.patch, device, args.bf16, args.channels_last, args.seconds)

    per_image = {}
    for name, shape in (("cc", FULL_CC), ("mlo", FULL_MLO)):
        rows, cols = grid(shape, args.patch, args.stride)
        per_image[name] = {"shape": list(shape), "grid": [len(rows), len(cols)], "patches": len(rows) * len(cols)}
    # Overhead outside the network for one full-size CC image (crop, gather, average), zero-cost model.
    img = synthetic_breast(FULL_CC)
    t0 = time.perf_counter()
    res = image_heatmaps(ZeroCost().to(device), img, args.patch, args.stride, batch_size=max(args.batch, 256),
                         device=device)
    overhead = time.perf_counter() - t0
    patches_cc = res.patches  # the breast's crop, not the whole image
    model_s = patches_cc / speed["patches_per_s"]
    out = {"device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                                  else platform.processor() or platform.machine()),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
           "torch": torch.__version__, "batch": args.batch, "bf16": args.bf16, "channels_last": args.channels_last,
           "compile": args.compile, "patch": args.patch, "stride": args.stride,
           "gflops_per_patch": flops / 1e9, "model": speed, "full_size_grids": per_image,
           "cc_image": {"crop_patches": patches_cc, "overhead_s": overhead, "model_s_derived": model_s,
                        "images_per_s_derived": 1.0 / (model_s + overhead),
                        "tflops_per_image": patches_cc * flops / 1e12}}
    if args.full_image:
        t0 = time.perf_counter()
        image_heatmaps(run_model, img, args.patch, args.stride, batch_size=args.batch, device=device, amp=args.bf16)
        out["cc_image"]["measured_s"] = time.perf_counter() - t0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"heatmaps_speed{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    print(f"{out['device_name']}: {speed['patches_per_s']:.1f} patches/s (batch {args.batch}); "
          f"{out['gflops_per_patch']:.2f} GFLOPs/patch; full-size CC crop {patches_cc} patches = "
          f"{out['cc_image']['tflops_per_image']:.2f} TFLOPs; overhead {overhead:.2f} s; "
          f"{out['cc_image']['images_per_s_derived']:.4f} images/s -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
