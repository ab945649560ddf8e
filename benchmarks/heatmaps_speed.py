"""Heatmap stage speed: full-size images/s in both modes, patches/s, and the cost per image in patches and FLOPs.

  python benchmarks/heatmaps_speed.py --mode both --seconds 10 --dense-rows 512     # this CPU (fp32), short
  python benchmarks/heatmaps_speed.py --device cuda --batch 512 --bf16 --channels-last --mode both --full-image
  (add --compile to try torch.compile of the network's convolutional part; eager with a warning if it fails)

Patches mode (NYU-exact): (1) the patch classifier alone on resident random batches (patches/s); (2) the rest
of one full-size CC image's pipeline (standardised crop, constant-patch detection, patch gathering, per-pixel
averaging) with a zero-cost model, i.e. the overhead outside the network; (3) the share of constant patches
(computed once each) on full-size synthetic CC crops (the `paper` cohort at 2677x1942, ``--cohort`` images);
images/s = network patches / patches/s + overhead, or measured end to end on one whole image with
``--full-image``. Dense mode: the whole path (features once over the crop, footprint pooling, classifier,
averaging) timed end to end on the full-size crop, or on its first ``--dense-rows`` rows (at full width) and
scaled by the crop's rows / those rows when given (the cost is proportional to the area), said in the output.
FLOPs (torch.utils.flop_counter, a multiply-add = 2 FLOPs): per patch, and per full-size CC image in each mode
(the dense count on the meta device: shapes only, no arithmetic). Writes <out>/heatmaps_speed[_<tag>].json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mvmammo.heatmaps.constant import constant_patches
from mvmammo.heatmaps.dense import dense_grid_probs
from mvmammo.heatmaps.grid import grid
from mvmammo.heatmaps.infer import image_heatmaps
from mvmammo.models.densenet import DenseNet, DenseNetConfig
from mvmammo.patches.image import prepare

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


def cohort_cc_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` full-size CC images of the synthetic `paper` cohort (generated into a temporary folder)."""
    from mvmammo.data import exams, images
    from mvmammo.data.synthetic import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(tmp, preset="paper", breasts=n, size_cc=FULL_CC, size_mlo=FULL_MLO, seed=seed,
                        heatmaps=False, workers=1, progress=False)
        df = exams.read_table(Path(tmp) / "exams.csv")
        return [images.read_image(exams.resolve_path(df, p)) for p in df["cc_path"]]


def constant_share(img: np.ndarray, patch: int, stride: int) -> dict:
    """Grid patches of the image's crop, how many are constant, and how many go through the network."""
    prep = prepare(img, patch)
    rows, cols = grid(prep.image.shape, patch, stride)
    const, value = constant_patches(torch.from_numpy(prep.image), rows, cols, patch)
    n, c = len(rows) * len(cols), int(const.sum())
    distinct = len(torch.unique(value[const])) if c else 0
    return {"crop": list(prep.image.shape), "patches": n, "constant": c, "network": n - c + distinct}


def dense_flops(cfg: DenseNetConfig, shape: tuple, patch: int, stride: int) -> float:
    """FLOPs of the dense path's network part on a crop of ``shape``, counted on the meta device (no arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mvmammo.patches.image import Prepared

    with torch.device("meta"):
        model = DenseNet(cfg).eval()
    prep = Prepared(np.zeros(shape, np.float32), (0, 0) + tuple(shape), tuple(shape))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        dense_grid_probs(model, prep, patch, stride, device="meta", amp=False)
    return float(fc.get_total_flops())


def compile_features(model, example) -> bool:
    """torch.compile the network's convolutional part in place (both modes call it); on any failure (at the
    warm-up call, where compilation happens) put the eager module back and warn. Returns whether it compiled."""
    eager = model.features
    try:
        model.features = torch.compile(eager)
        with torch.no_grad():
            example(model)
        return True
    except Exception as exc:   # the benchmark goes on in eager mode: say so, in one line
        model.features = eager
        warnings.warn(f"--compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); timing eager")
        return False


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_dense(model, img: np.ndarray, args, device) -> dict:
    """The whole dense path on the full-size crop (or its first --dense-rows rows, then scaled by area)."""
    prep = prepare(img, args.patch)
    rows_total = prep.image.shape[0]
    part = img
    if args.dense_rows and args.dense_rows < rows_total:
        y0, x0, y1, x1 = prep.box
        part = np.zeros_like(img)     # the crop's first rows, in the same place (same crop box width)
        part[y0:y0 + args.dense_rows, x0:x1] = img[y0:y0 + args.dense_rows, x0:x1]
    run = lambda: image_heatmaps(model, part, args.patch, args.stride, device=device, amp=args.bf16, mode="dense")
    run()   # warm-up (and compilation for this shape)
    sync(device)
    times = []
    for _ in range(args.dense_repeats):
        t0 = time.perf_counter()
        res = run()
        sync(device)
        times.append(time.perf_counter() - t0)
    used_rows = res.box[2] - res.box[0]
    scale = rows_total / used_rows
    return {"timed_rows": int(used_rows), "crop_rows": int(rows_total), "scaled_by": scale,
            "seconds_timed": min(times), "seconds_per_image": min(times) * scale,
            "images_per_s": 1.0 / (min(times) * scale), "extrapolated": scale != 1.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mode", choices=("patches", "dense", "both"), default="both")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--stride", type=int, default=70)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (eager with a warning if "
                                                           "compilation fails)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--seconds", type=float, default=20.0, help="timing length of the patch model loop")
    ap.add_argument("--cohort", type=int, default=4, help="full-size synthetic CC images for the constant share")
    ap.add_argument("--dense-rows", type=int, default=0, help="time the dense path on this many crop rows and "
                                                              "scale (0 = the whole crop)")
    ap.add_argument("--dense-repeats", type=int, default=1)
    ap.add_argument("--full-image", action="store_true", help="also time one whole full-size CC image through "
                                                              "the patches mode")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = ("patches", "dense") if args.mode == "both" else (args.mode,)
    torch.manual_seed(0)
    model = DenseNet(DenseNetConfig()).eval()
    flops = flops_per_patch(model, args.patch)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    compiled = False
    if args.compile:
        x = torch.zeros(args.batch, 1, args.patch, args.patch, device=device)
        compiled = compile_features(model, lambda m: m(x))
    img = synthetic_breast(FULL_CC)
    prep_shape = prepare(img, args.patch).image.shape
    out = {"device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                                  else platform.processor() or platform.machine()),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_avg_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
           "torch": torch.__version__, "batch": args.batch, "bf16": args.bf16, "channels_last": args.channels_last,
           "compile": args.compile, "compiled": compiled, "patch": args.patch, "stride": args.stride,
           "gflops_per_patch": flops / 1e9, "modes": list(modes)}
    grids = {}
    for name, shape in (("cc", FULL_CC), ("mlo", FULL_MLO)):
        rows, cols = grid(shape, args.patch, args.stride)
        grids[name] = {"shape": list(shape), "grid": [len(rows), len(cols)], "patches": len(rows) * len(cols)}
    out["full_size_grids"] = grids
    bench_share = constant_share(img, args.patch, args.stride)
    out["cc_image"] = {"crop": list(prep_shape), "crop_patches": bench_share["patches"],
                       "constant": bench_share, "tflops_patches_mode_all": bench_share["patches"] * flops / 1e12,
                       "tflops_patches_mode_network": bench_share["network"] * flops / 1e12,
                       "tflops_dense_mode": dense_flops(DenseNetConfig(), prep_shape, args.patch, args.stride) / 1e12}
    if args.cohort:
        shares = [constant_share(im, args.patch, args.stride) for im in cohort_cc_images(args.cohort)]
        tot, const = sum(s["patches"] for s in shares), sum(s["constant"] for s in shares)
        out["cohort_cc"] = {"images": shares, "constant_share": const / tot,
                            "network_share": sum(s["network"] for s in shares) / tot}
    msg = [f"{out['device_name']}: {flops / 1e9:.2f} GFLOPs/patch; full-size CC crop {tuple(prep_shape)}: "
           f"{bench_share['patches']} patches ({bench_share['constant']} constant, {bench_share['network']} "
           f"through the network) = {out['cc_image']['tflops_patches_mode_network']:.2f} TFLOPs; dense "
           f"{out['cc_image']['tflops_dense_mode']:.3f} TFLOPs"]
    if "cohort_cc" in out:
        msg.append(f"cohort CC crops: {out['cohort_cc']['constant_share']:.1%} of patches constant")
    if "patches" in modes:
        speed = time_model(model, args.batch, args.patch, device, args.bf16, args.channels_last, args.seconds)
        t0 = time.perf_counter()
        image_heatmaps(ZeroCost().to(device), img, args.patch, args.stride, batch_size=max(args.batch, 256),
                       device=device)
        sync(device)
        overhead = time.perf_counter() - t0
        model_s = bench_share["network"] / speed["patches_per_s"]
        pm = {"model": speed, "overhead_s": overhead, "model_s_derived": model_s,
              "images_per_s_derived": 1.0 / (model_s + overhead)}
        if args.full_image:
            t0 = time.perf_counter()
            image_heatmaps(model, img, args.patch, args.stride, batch_size=args.batch, device=device, amp=args.bf16)
            sync(device)
            pm["measured_s"] = time.perf_counter() - t0
            pm["images_per_s_measured"] = 1.0 / pm["measured_s"]
        out["patches_mode"] = pm
        msg.append(f"patches mode: {speed['patches_per_s']:.1f} patches/s (batch {args.batch}), overhead "
                   f"{overhead:.2f} s, {pm['images_per_s_derived']:.4f} images/s derived"
                   + (f", {pm['images_per_s_measured']:.4f} measured" if args.full_image else ""))
    if "dense" in modes:
        out["dense_mode"] = time_dense(model, img, args, device)
        d = out["dense_mode"]
        msg.append(f"dense mode: {d['images_per_s']:.4f} images/s" + (
            f" (timed on {d['timed_rows']} of {d['crop_rows']} crop rows, scaled x{d['scaled_by']:.2f})"
            if d["extrapolated"] else " (whole crop)"))
    if len(modes) == 2:
        pm = out["patches_mode"]
        best = pm.get("images_per_s_measured", pm["images_per_s_derived"])
        out["dense_over_patches"] = out["dense_mode"]["images_per_s"] / best
        msg.append(f"dense / patches = {out['dense_over_patches']:.1f}x")
    out["load_avg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"heatmaps_speed{'_' + args.tag if args.tag else ''}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, path)
    print(json.dumps(out))
    print("; ".join(msg) + f" -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
