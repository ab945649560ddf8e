"""Cost of the per-step gradient-norm hook (analysis/grad_norms.py): time of a training step with and
without it, in the same process, on the same model and batch; blocks of steps alternate between the two so
that drift (other processes, clocks) hits both equally. Reports medians and their ratio, in wall time and in
CPU time of this process (on a shared CPU machine the CPU-time numbers are the trustworthy ones).

    python benchmarks/grad_norm_cost.py                        # table1's setting: Joint, 96x64, width 8, batch 16
    python benchmarks/grad_norm_cost.py --device cuda --size 2677 1942 --width 16 --batch 4   # the paper's
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mvmammo.analysis.grad_norms import group_norms
from mvmammo.config import ModelConfig
from mvmammo.models.registry import build_model
from mvmammo.training.tasks import bce_pair


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="joint")
    ap.add_argument("--size", type=int, nargs=2, default=(96, 64))
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=8, help="alternating blocks per variant")
    ap.add_argument("--steps", type=int, default=5, help="steps per block")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=args.family, width=args.width), in_channels=3).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = torch.randn(args.batch, 3, *args.size, device=dev)
    y = torch.randint(0, 2, (args.batch, 2), device=dev).float()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(hook: bool):
        out = model(x, x)
        loss = bce_pair(out["logits"], y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms = group_norms(model) if hook else None
        opt.step()
        return norms

    for _ in range(3):  # warm-up (allocator, cudnn autotune)
        step(True)
    sync()
    times = {False: [], True: []}
    cpu = {False: [], True: []}
    hook_only, hook_cpu = [], []
    for _ in range(args.blocks):
        for hook in (False, True):
            kept = []
            for _ in range(args.steps):
                t0, c0 = time.perf_counter(), time.process_time()
                kept.append(step(hook))
                sync()
                times[hook].append(time.perf_counter() - t0)
                cpu[hook].append(time.process_time() - c0)
        out = model(x, x)
        bce_pair(out["logits"], y)["loss"].backward()
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        n = group_norms(model)
        [float(v) for v in n.values()]  # include the (once per epoch in the loop) host sync, to be safe
        hook_only.append(time.perf_counter() - t0)
        hook_cpu.append(time.process_time() - c0)
    plain, with_hook = statistics.median(times[False]), statistics.median(times[True])
    hook = statistics.median(hook_only)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}")
    print(f"setting: {args.family}, {args.size[0]}x{args.size[1]} px, width {args.width}, batch {args.batch}, "
          f"{args.blocks}x{args.steps} steps per variant")
    print(f"median step without hook {plain * 1e3:.2f} ms, with hook {with_hook * 1e3:.2f} ms, "
          f"ratio {with_hook / plain:.4f}")
    print(f"hook alone (group_norms + sync): median {hook * 1e3:.3f} ms = {100 * hook / plain:.2f}% of a step")
    pc, hc, oc = (statistics.median(v) for v in (cpu[False], cpu[True], hook_cpu))
    print(f"CPU time: median step without hook {pc * 1e3:.2f} ms, with hook {hc * 1e3:.2f} ms, ratio {hc / pc:.4f}; "
          f"hook alone {oc * 1e3:.3f} ms = {100 * oc / pc:.2f}% of a step")


if __name__ == "__main__":
    main()
