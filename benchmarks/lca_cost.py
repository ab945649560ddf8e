"""Cost of Loss Change Allocation during training: the same run (same cohort, config and seed) trained once
with run.lca off and once on; reports both wall times, their ratio, and the time spent inside the LCA hook
(the sum of time_s over lca.jsonl), which is less sensitive to other processes on a shared machine.

The paper's setting: a chord every 60 iterations on 970 exams, which is 10% of the breasts of one training
epoch. Scaled here: --every 60 and --subsample 0 (= 10% of one epoch's breasts, computed from the cohort).

    python benchmarks/lca_cost.py --out /tmp/lca_bench            # CPU: paper preset, 64x48, width 8, 120 steps
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from mvmammo.config import resolve


def _train(out: Path, overrides: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training run from scratch."""
    from mvmammo.training.loop import train

    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    train(resolve("default", overrides + [f"run.out={out}"]))
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/lca_bench")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--breasts", type=int, default=400)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 48))
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps per run (run.max_steps)")
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--subsample", type=int, default=0, help="0 = 10%% of one epoch's breasts (the paper's ratio)")
    ap.add_argument("--tol", type=float, default=0.05)
    args = ap.parse_args()
    out = Path(args.out)
    h, w = args.size
    base = [f"data.synth_preset={args.preset}", f"data.synth_breasts={args.breasts}", f"data.size_cc=({h}, {w})",
            f"data.size_mlo=({h}, {w})", f"data.cache_dir={out / '_cache'}", f"model.width={args.width}",
            f"optim.batch_size={args.batch}", "optim.lr=1e-3", "optim.epochs=1000", f"run.max_steps={args.steps}",
            "run.progress=false", "run.grad_norms=true"]
    _train(out / "warmup", base + ["run.max_steps=2"])  # cohort, window cache, imports: not timed
    plain_s, plain_cpu = _train(out / "plain", base)
    epoch = [json.loads(x) for x in (out / "plain" / "metrics.jsonl").read_text().splitlines()
             if '"kind": "epoch"' in x]
    sub = args.subsample or max(1, round(0.1 * epoch[0]["breasts"]))
    lca_s, lca_cpu = _train(out / "lca", base + ["run.lca=true", f"run.lca_every={args.every}",
                                        f"run.lca_subsample={sub}", f"run.lca_tol={args.tol}"])
    chords = [json.loads(x) for x in (out / "lca" / "lca.jsonl").read_text().splitlines()]
    inside = sum(c["time_s"] for c in chords)
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}")
    print(f"setting: {args.preset} preset, {args.breasts} breasts, {h}x{w} px, Joint width {args.width}, batch "
          f"{args.batch}, {args.steps} steps ({epoch[0]['breasts']} breasts per epoch, "
          f"{len(epoch)} epoch(s)); LCA every {args.every} steps on {sub} breasts, tol {args.tol}")
    print(f"chords: {len(chords)}, n = {[c['n'] for c in chords]}, gradient evaluations "
          f"{sum(c['evals'] for c in chords)}, |err|/|dL| = {[round(c['err_ratio'], 4) for c in chords]}")
    print(f"wall: plain {plain_s:.1f} s, with LCA {lca_s:.1f} s, ratio {lca_s / plain_s:.3f}")
    print(f"CPU time (robust to other processes): plain {plain_cpu:.1f} s, with LCA {lca_cpu:.1f} s, "
          f"ratio {lca_cpu / plain_cpu:.3f}")
    print(f"inside the LCA hook: {inside:.1f} s = {inside / plain_s:.3f} of the plain run "
          f"(ratio by this measure {1 + inside / plain_s:.3f})")


if __name__ == "__main__":
    main()
