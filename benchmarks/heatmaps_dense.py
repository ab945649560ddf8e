"""Dense vs exact heatmaps on the synthetic cohort: how far the dense mode is from NYU's patch mode, and how both
score against the true lesion masks.

  python benchmarks/heatmaps_dense.py --chain /tmp/chain/full      # reuse `mvmammo experiment heatmaps` output
  python benchmarks/heatmaps_dense.py                               # no chain given: runs the --quick chain first
  python benchmarks/heatmaps_dense.py --geometry cells8 --work /tmp/cells8   # NYU's 8 x 8 cells per patch

With a chain folder (OUT of `mvmammo experiment heatmaps`: OUT/chain/synth is the cohort, OUT/chain/patch_run
the trained patch classifier, and its settings in OUT/chain/pixel_auc.json), the images of one split (default
test) get heatmaps twice with the same classifier, patch and stride: ``--mode patches`` and ``--mode dense``.
Reported: the per-pixel difference of the two modes' maps (max and mean absolute, over the breast's pixels and
over the crop box; from the stored 16-bit maps, so to within 1/65535), the pixel-level AUC of each mode's maps
against the true lesion disks (the chain experiment's :func:`pixel_aucs`), wall time of each run and the FLOPs
per image of each mode for this classifier at this image size (torch.utils.flop_counter). Writes
<out>/heatmaps_dense.json (default benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _split_table(table: Path, split: str, dest: Path) -> Path:
    """The rows of one split, image paths made absolute so the copy reads from anywhere."""
    from mvmammo.data import exams

    df = exams.read_table(table)
    df = df[df["split"] == split].copy()
    for col in ("cc_path", "mlo_path"):
        df[col] = [str(exams.resolve_path(df, v).resolve()) for v in df[col]]
    df = df.drop(columns=[c for c in exams.HEATMAP_COLUMNS if c in df.columns])
    dest.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest, index=False)
    return dest


# NYU's geometry at half the linear size: a full-size crop (2677 x 1942) with 256-px patches at stride 70 through
# DenseNet-121 (feature stride 32) gives 8 x 8 feature cells per patch and a stride of 2.19 cells; here the images
# are 1338 x 971, the patches 128 px at stride 35, and a 3-block DenseNet has feature stride 16: the same 8 x 8
# cells and 2.19-cell stride, at a CPU's cost. The `mvmammo experiment heatmaps` chain has 2 x 2 cells per patch.
CELLS8 = {"breasts": 240, "size": (1338, 971), "patch": 128, "stride": 35, "per_lesion": 4, "per_image": 2,
          "epochs": 8, "growth": 12, "blocks": (2, 2, 2), "init_features": 16}


def build_chain(out: Path, c: dict) -> Path:
    """Cohort, patch set and classifier at the geometry ``c`` into OUT/chain (the layout the chain experiment
    writes, without its full-cohort heatmaps); each step skips what is already there."""
    from mvmammo.atomic import write_text
    from mvmammo.data.synthetic import generate_cohort
    from mvmammo.patches.extract import PatchConfig
    from mvmammo.patches.store import extract_patches
    from mvmammo.patches.train import PatchTrainConfig, train_patches

    root = out / "chain"
    synth = root / "synth"
    if not (synth / "exams.csv").exists():
        generate_cohort(synth, preset="paper", breasts=c["breasts"], size_cc=c["size"], size_mlo=c["size"], seed=0,
                        workers=2, progress=True)
    extract_patches(synth / "exams.csv", root / "patches", cfg=PatchConfig(patch=c["patch"], per_lesion=c["per_lesion"],
                                                                          per_image=c["per_image"]))
    train_patches(PatchTrainConfig(patches=str(root / "patches"), out=str(root / "patch_run"), growth=c["growth"],
                                   blocks=tuple(c["blocks"]), init_features=c["init_features"], bn_size=4,
                                   epochs=c["epochs"], batch_size=64, lr=2e-3))
    write_text(root / "pixel_auc.json", json.dumps({"chain": c}, default=list) + "\n")
    return out


def _map_diffs(a_table: Path, b_table: Path) -> dict:
    """Max / mean |a - b| of the heatmaps of two tables with the same rows, on breast pixels and crop boxes."""
    from mvmammo.data import exams, images

    a, b = exams.read_table(a_table), exams.read_table(b_table)
    out = {}
    for cls in ("benign", "malignant"):
        mx = mx_box = 0.0
        s = n = s_box = n_box = 0
        for k in range(len(a)):
            for view in ("cc", "mlo"):
                col = f"{view}_heatmap_{cls}"
                ha = images.read_heatmap(exams.resolve_path(a, a.iloc[k][col]))
                hb = images.read_heatmap(exams.resolve_path(b, b.iloc[k][col]))
                img = images.read_image(exams.resolve_path(a, a.iloc[k][f"{view}_path"]))
                d = np.abs(ha.astype(np.float64) - hb)
                breast = d[img > 0]
                box = d[(ha > 0) | (hb > 0)]     # both modes write 0 outside the crop box
                mx, s, n = max(mx, float(breast.max())), s + float(breast.sum()), n + breast.size
                mx_box, s_box, n_box = max(mx_box, float(box.max())), s_box + float(box.sum()), n_box + box.size
        out[cls] = {"max_abs_breast": mx, "mean_abs_breast": s / n, "max_abs_box": mx_box,
                    "mean_abs_box": s_box / n_box}
    return out


def _flops(run: Path, shape: tuple, stride: int) -> dict:
    """FLOPs per image of each mode for the run's classifier on a crop of ``shape`` (counted, not estimated)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mvmammo.heatmaps.dense import dense_grid_probs
    from mvmammo.heatmaps.grid import grid
    from mvmammo.heatmaps.infer import load_patch_model
    from mvmammo.patches.image import Prepared

    model, info = load_patch_model(run)
    patch = info["patch"]
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, model.cfg.in_channels, patch, patch))
    per_patch = float(fc.get_total_flops())
    rows, cols = grid(shape, patch, stride)
    prep = Prepared(np.zeros(shape, np.float32), (0, 0) + tuple(shape), tuple(shape))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        dense_grid_probs(model, prep, patch, stride, amp=False)
    return {"crop": list(shape), "patches": len(rows) * len(cols),
            "patches_mode_mflops": per_patch * len(rows) * len(cols) / 1e6,
            "dense_mode_mflops": float(fc.get_total_flops()) / 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", default=None, help="output folder of `mvmammo experiment heatmaps` (reused)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: see docs/heatmaps.md)")
    ap.add_argument("--work", default=None, help="folder for the two heatmap runs (default: a temporary one)")
    ap.add_argument("--geometry", choices=("chain", "cells8"), default="chain",
                    help="without --chain: chain = the --quick chain experiment (2 x 2 feature cells per patch); "
                         "cells8 = NYU's 8 x 8 cells per patch at half the full size (CELLS8, ~10 min on 2 cores)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mvmammo.experiments.heatmaps import QUICK_CHAIN, pixel_aucs, prepare
    from mvmammo.heatmaps.table import make_heatmaps

    tmp = tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    if args.chain is None and args.geometry == "cells8":
        args.chain = str(build_chain(work / "cells8", CELLS8))
    elif args.chain is None:
        args.chain = str(work / "quick")
        prepare(Path(args.chain), quick=True)
    chain = Path(args.chain) / "chain"
    saved = chain / "pixel_auc.json"
    settings = json.loads(saved.read_text())["chain"] if saved.exists() else QUICK_CHAIN
    stride = int(settings["stride"])
    table = _split_table(chain / "synth" / "exams.csv", args.split, work / "split.csv")
    res = {"chain": str(chain), "split": args.split, "settings": settings, "threads": torch.get_num_threads(),
           "load_avg_before": os.getloadavg()}
    for mode in ("patches", "dense"):
        s = make_heatmaps(table, chain / "patch_run", work / mode, stride=stride, batch_size=512, device="cpu",
                          overwrite=True, progress=False, mode=mode)
        res[mode] = {"images": s["images"], "seconds": s["seconds"], "images_per_s": s["images"] / s["seconds"],
                     "patches": s["patches"], "network_patches": s["computed"] if mode == "patches" else None,
                     "pixel_auc": pixel_aucs(work / mode / "split.csv", chain / "synth" / "lesions.csv",
                                             split=args.split)}
    res["difference"] = _map_diffs(work / "patches" / "split.csv", work / "dense" / "split.csv")
    size = tuple(settings["size"])
    res["flops_full_image"] = _flops(chain / "patch_run", size, stride)
    res["load_avg_after"] = os.getloadavg()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / ("heatmaps_dense.json" if args.geometry == "chain" else f"heatmaps_dense_{args.geometry}.json")
    tmp_file = path.with_name(f".{path.name}.tmp")
    tmp_file.write_text(json.dumps(res, indent=2, default=list) + "\n")
    os.replace(tmp_file, path)
    p, d = res["patches"]["pixel_auc"], res["dense"]["pixel_auc"]
    m = res["difference"]["malignant"]
    print(f"{args.split}: pixel AUC benign/malignant patches {p['benign']:.3f}/{p['malignant']:.3f}, dense "
          f"{d['benign']:.3f}/{d['malignant']:.3f}; malignant |dense - patches| max {m['max_abs_breast']:.3f} "
          f"mean {m['mean_abs_breast']:.4f} (breast pixels); {res['patches']['images_per_s']:.1f} vs "
          f"{res['dense']['images_per_s']:.1f} images/s -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
