"""Device memory of one training step at full resolution, counted from shapes (no GPU, no arithmetic): what
autograd saves for the backward pass, for our Joint model and for the independent anchor's model, and what
our input path keeps on the device besides.

Both forwards run under torch's FakeTensorMode (tensors with shapes and dtypes but no data) in bf16 autocast
with channels_last, batch B, CC 2677x1942 + MLO 2974x1748, 3 channels; a saved_tensors_hooks pair records
every storage autograd keeps (each counted once). The anchor's inputs are fp32 (as it times them); ours are the
model dtype (bf16), so the input is the first convolution's saved tensor and not an extra copy. The input
path's resident bytes are the raw windows of the current batch and of at most one batch ahead (training/
prefetch.py), for the window store (image int16 + heatmap grid float16) and for the memory-mapped cache
(3 x int16). Together with the anchor's measured peak on a card (its README or anchor.json), this predicts our
peak there: anchor peak - anchor's fp32 inputs + our inputs' extra + the input path's resident bytes.

  python benchmarks/activation_memory.py [--batch 4] [--anchor ../shared/bench/gpu_anchor.py]
        [--anchor-peak-gib 2.86]     (the anchor's measured bf16 + channels_last eager batch-4 peak, H100)

Writes benchmarks/results/activation_memory-b<B>-<date>.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import sys
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402

GIB = 2 ** 30
FULL = {"cc": (2677, 1942), "mlo": (2974, 1748)}


def saved_bytes(model: torch.nn.Module, batch: int, dtype: torch.dtype) -> dict:
    """{"saved": bytes autograd keeps for backward, "inputs": bytes of the two input tensors, "tensors": count}."""
    model = model.to(memory_format=torch.channels_last)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = {v: torch.zeros(batch, 3, *FULL[v], dtype=dtype).contiguous(memory_format=torch.channels_last)
             for v in FULL}
        kept: dict[int, tuple[int, object]] = {}

        def pack(t):
            s = t.untyped_storage()
            kept[id(s)] = (s.nbytes(), s)  # the storage object is held so that its id stays unique
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            model(x["cc"], x["mlo"])
        inputs = sum(t.untyped_storage().nbytes() for t in x.values())
    return {"saved": sum(b for b, _ in kept.values()), "inputs": inputs, "tensors": len(kept)}


def input_path_bytes(batch: int, margin: int = 100, heat_factor: int = 8) -> dict:
    """Raw windows of one batch on the device: store (image int16 + 2 heatmap grids float16) and memmap."""
    from mvmammo.data.store import format as fmt

    store = memmap = 0
    for h, w in FULL.values():
        hp, wp = h + 2 * margin, w + 2 * margin
        gh, gw = fmt.heat_shape(hp, wp, heat_factor)
        store += batch * (hp * wp * 2 + 2 * gh * gw * 2)
        memmap += batch * 3 * hp * wp * 2
    return {"store": store, "memmap": memmap}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--anchor", default=str(Path(__file__).resolve().parents[2] / "shared/bench/gpu_anchor.py"))
    p.add_argument("--anchor-peak-gib", type=float, default=2.86,
                   help="the anchor's measured peak for bf16 + channels_last eager at this batch on the target card")
    p.add_argument("--out", default=None, help="folder for the JSON (default benchmarks/results)")
    a = p.parse_args(argv)

    from mvmammo.config import Config
    from mvmammo.models.registry import build_model

    ours = saved_bytes(build_model(dataclasses.replace(Config().model, family="joint", width=a.width), 3),
                       a.batch, torch.bfloat16)
    result = {"date": datetime.date.today().isoformat(), "batch": a.batch, "width": a.width,
              "command": "python benchmarks/activation_memory.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "ours_saved_gib": ours["saved"] / GIB, "ours_inputs_gib": ours["inputs"] / GIB}
    raw = input_path_bytes(a.batch)
    # The current batch's raw windows and at most one batch ahead are on the device during the step.
    result.update({"raw_batch_store_gib": raw["store"] / GIB, "raw_batch_memmap_gib": raw["memmap"] / GIB})
    if Path(a.anchor).exists():
        spec = importlib.util.spec_from_file_location("gpu_anchor", a.anchor)
        anchor = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(anchor)
        theirs = saved_bytes(anchor.JointResNet(), a.batch, torch.float32)
        result.update({"anchor_saved_gib": theirs["saved"] / GIB, "anchor_inputs_gib": theirs["inputs"] / GIB,
                       "saved_ratio_ours_over_anchor": ours["saved"] / theirs["saved"],
                       "anchor_peak_gib_measured": a.anchor_peak_gib})
        # Our inputs are the bf16 tensors the first convolutions save (already inside ours_saved); the anchor
        # holds its fp32 inputs on top of the bf16 copies its first convolutions save.
        step = a.anchor_peak_gib - theirs["inputs"] / GIB + (ours["saved"] - theirs["saved"]) / GIB
        result["predicted_step_peak_gib"] = step
        for src in ("store", "memmap"):
            result[f"predicted_e2e_peak_gib_{src}"] = step + 2 * raw[src] / GIB
    return save_result(result, f"activation_memory-b{a.batch}-{result['date']}.json", a.out)


if __name__ == "__main__":
    main()
