"""End-to-end throughput: training breasts/s (cache -> augmentation -> step) and TTA inference
breast-windows/s, with peak memory, and the same run's anchor (../shared/bench/gpu_anchor.py) as ratios.

  python benchmarks/throughput.py --size full --device cuda --anchor PATH/gpu_anchor.py
  python benchmarks/throughput.py --size small --device cpu --no-anchor        # CI smoke, seconds

Configurations are names: "<fp32|bf16>[-cl]-<eager|compile>-b<batch>[-infer][-noprefetch]", e.g.
bf16-cl-compile-b16 (the anchor's best), bf16-cl-eager-b4 (the paper's batch). A training configuration
reports four rates, which place the time: e2e (cache, augmentation and step, as the loop runs them),
model (the step alone on a resident batch, what the anchor times), data (loading + augmentation alone) and aug
(the augmentation alone on a resident raw batch: the device's share of the data path).
Peak device memory is reported per phase: peak_mem_gib end to end (data path, prefetch and step, as the
loop runs them), peak_step_gib the step alone on a resident batch (what the anchor reports), peak_data_gib the
data path alone. Inference runs predict_rows with 10 random windows per breast (the paper's TTA), the draws of
a chunk stacked into forwards of up to --window-batch windows (recorded as window_batch); it also reports
the augmentation alone (aug_windows_per_s) and the forward alone (model_windows_per_s) on one resident chunk.
Writes <out>/throughput.json; prints one JSON line per configuration, then a table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_cache import write_cache  # noqa: E402

from mvmammo.config import ModelConfig  # noqa: E402
from mvmammo.evaluation.predict import WINDOW_BATCH, draw_groups, predict_rows  # noqa: E402
from mvmammo.models.registry import build_model  # noqa: E402
from mvmammo.training.accel import compile_or_eager  # noqa: E402
from mvmammo.training.inputs import BatchMaker  # noqa: E402
from mvmammo.training.tasks import standard  # noqa: E402

NAME = re.compile(r"^(fp32|bf16)(-cl)?-(eager|compile)-b(\d+)(-infer)?(-noprefetch)?$")
ANCHOR_BEST_TRAIN, ANCHOR_BEST_INFER = "bf16-cl-compile-b16", "bf16-cl-compile-infer-b16"


def parse(name: str) -> dict:
    m = NAME.match(name)
    if not m:
        raise SystemExit(f"bad configuration {name!r}: expected e.g. bf16-cl-compile-b16[-infer][-noprefetch]")
    return {"name": name, "precision": m[1], "channels_last": bool(m[2]), "compile": m[3] == "compile",
            "batch": int(m[4]), "infer": bool(m[5]), "prefetch": 0 if m[6] else 2}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def setup(cfg: dict, cache, device: torch.device, width: int):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="joint", width=width), in_channels=cache.spec.channels).to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    maker = BatchMaker(cache, device, channels_last=cfg["channels_last"],
                       dtype=torch.bfloat16 if cfg["precision"] == "bf16" else torch.float32,
                       prefetch=cfg["prefetch"], compile=cfg["compile"])
    return model, maker, compile_or_eager(model, cfg["compile"])


def epoch_chunks(n_rows: int, batch: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n_rows) for _ in range(steps * batch // n_rows + 1)])
    return [order[i * batch:(i + 1) * batch] for i in range(steps)]


def bench_train(cfg: dict, cache, device, width: int, steps: int, warmup: int) -> dict:
    model, maker, step_model = setup(cfg, cache, device, width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")  # noqa: E731
    gen = torch.Generator().manual_seed(0)

    def step(batch):
        with autocast():
            out = step_model(batch["cc"], batch["mlo"])
        loss = standard(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    model.train()
    t0 = time.perf_counter()
    for batch in maker.batches(epoch_chunks(len(cache), cfg["batch"], warmup), True, gen):
        step(batch)  # compiles (model and augmentation) on the first call
    sync(device)
    first = time.perf_counter() - t0
    reset_peak(device)
    t0 = time.perf_counter()
    for batch in maker.batches(epoch_chunks(len(cache), cfg["batch"], steps, 1), True, gen):
        loss = step(batch)
    sync(device)
    e2e = time.perf_counter() - t0
    peak = peak_gib(device)
    # The step alone on one resident batch (what the anchor times), then the data path alone; each phase
    # with its own peak (reset at its start: the peak then counts from what is allocated at that point).
    reset_peak(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(batch)
    sync(device)
    model_only = time.perf_counter() - t0
    peak_step = peak_gib(device)
    del batch
    reset_peak(device)
    t0 = time.perf_counter()
    for b in maker.batches(epoch_chunks(len(cache), cfg["batch"], steps, 2), True, gen):
        pass
    sync(device)
    data_only = time.perf_counter() - t0
    peak_data = peak_gib(device)
    # The augmentation alone on one resident raw batch (device work only, no loading): with data alone it
    # splits the data path into the host's loading and the device's augmentation, which shares the step's
    # stream end to end.
    rows = epoch_chunks(len(cache), cfg["batch"], 1, 3)[0]
    raw, labels = maker.load(rows)
    maker.assemble(rows, raw, labels, True, gen)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        maker.assemble(rows, raw, labels, True, gen)
    sync(device)
    aug_only = time.perf_counter() - t0
    del raw, labels
    n = steps * cfg["batch"]
    return dict(cfg, train=True, breasts_per_s=n / e2e, model_breasts_per_s=n / model_only,
                data_breasts_per_s=n / data_only, aug_breasts_per_s=n / aug_only, peak_mem_gib=peak,
                peak_step_gib=peak_step, peak_data_gib=peak_data, warmup_s=first, loss=float(loss.detach()))


def bench_infer(cfg: dict, cache, device, width: int, tta: int, window_batch: int) -> dict:
    model, maker, step_model = setup(cfg, cache, device, width)
    rows = np.arange(len(cache))
    run = lambda r: predict_rows(step_model, maker, r, tta=tta, batch_size=cfg["batch"],  # noqa: E731
                                 precision=cfg["precision"], window_batch=window_batch)
    t0 = time.perf_counter()
    run(rows)  # warm-up: compilation for every chunk size (a smaller last chunk recompiles)
    sync(device)
    first = time.perf_counter() - t0
    reset_peak(device)
    t0 = time.perf_counter()
    probs = run(rows)
    sync(device)
    dt = time.perf_counter() - t0
    assert np.isfinite(probs).all()
    peak = peak_gib(device)
    aug, fwd = infer_phases(model, step_model, maker, rows[: cfg["batch"]], tta, window_batch, cfg["precision"])
    return dict(cfg, train=False, tta=tta, window_batch=window_batch, breast_windows_per_s=len(rows) * tta / dt,
                breasts_per_s=len(rows) / dt, aug_windows_per_s=aug, model_windows_per_s=fwd,
                peak_mem_gib=peak, warmup_s=first)


@torch.no_grad()
def infer_phases(model, step_model, maker, rows: np.ndarray, tta: int, window_batch: int,
                 precision: str) -> tuple[float, float]:
    """Where inference time goes, on one resident chunk: windows/s of the augmentation alone (tta draws) and
    of the forward alone (the pass's first draw group stacked, run as often as the chunk's groups)."""
    device = maker.device
    model.eval()
    raw, labels = maker.load(rows)
    gens = [torch.Generator().manual_seed(t) for t in range(tta)]
    sync(device)
    t0 = time.perf_counter()
    for t in range(tta):
        b = maker.assemble(rows, raw, labels, train=True, generator=gens[t])
    sync(device)
    aug = len(rows) * tta / (time.perf_counter() - t0)
    del raw
    groups = draw_groups(tta, len(rows), window_batch)
    x = {v: torch.cat([b[v]] * len(groups[0])) for v in ("cc", "mlo")}  # the shape the pass compiled
    del b
    sync(device)
    t0 = time.perf_counter()
    for _ in groups:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            step_model(x["cc"], x["mlo"])
    sync(device)
    fwd = len(groups) * len(groups[0]) * len(rows) / (time.perf_counter() - t0)
    model.train()
    return aug, fwd


def run_anchor(path: str, out: Path, small: bool, timeout: float, extra: str = "") -> dict | None:
    """Run the anchor script as a subprocess (its own process, its own numbers) and read its anchor.json."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, path] + (["--small"] if small else []) + extra.split()
    env = dict(os.environ, OUT=str(out), PYTHONUNBUFFERED="1")
    try:
        subprocess.run(cmd, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(json.dumps({"anchor": "timed out; using the configurations it finished"}), flush=True)
    f = out / "anchor.json"
    return json.loads(f.read_text()) if f.exists() else None


def ratios(results: list[dict], anchor: dict | None) -> None:
    """Add ratio_anchor_best (to the anchor's best compiled configuration) and ratio_anchor_same."""
    runs = {r["name"]: r["breasts_per_s"] for r in (anchor or {}).get("runs", [])}
    for r in results:
        if "error" in r:
            continue
        same = r["name"].replace("-noprefetch", "")
        if not r["train"]:
            same = same.replace("-infer", "").replace(f"-b{r['batch']}", f"-infer-b{r['batch']}")
        best = ANCHOR_BEST_TRAIN if r["train"] else ANCHOR_BEST_INFER
        # Inference: the anchor's rate is breasts/s of one forward, i.e. breast-windows/s.
        ours = r["breasts_per_s"] if r["train"] else r["breast_windows_per_s"]
        r["ratio_anchor_best"] = ours / runs[best] if best in runs else None
        r["ratio_anchor_same"] = ours / runs[same] if same in runs else None
        if r["train"]:
            r["model_ratio_anchor_same"] = r["model_breasts_per_s"] / runs[same] if same in runs else None


def table(results: list[dict], anchor: dict | None) -> str:
    fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"device: {results[0].get('device') if results else '?'}; anchor: "
             f"{'none' if anchor is None else anchor.get('device')}",
             "config                         e2e/s    model/s   data/s    aug/s  peak GiB  step GiB  x anchor best  x anchor same"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['name']:28s} error: {r['error'][:80]}")
            continue
        rate = r["breasts_per_s"] if r["train"] else r["breast_windows_per_s"]
        # inference: model/s = the forward alone, data/s = the augmentation alone (windows/s)
        model_rate = r.get("model_breasts_per_s", r.get("model_windows_per_s"))
        data_rate = r.get("data_breasts_per_s", r.get("aug_windows_per_s"))
        lines.append(f"{r['name']:28s} {rate:8.1f} {fmt(model_rate):>9s} "
                     f"{fmt(data_rate):>8s} {fmt(r.get('aug_breasts_per_s')):>8s} {fmt(r.get('peak_mem_gib'), 2):>9s} "
                     f"{fmt(r.get('peak_step_gib'), 2):>9s} "
                     f"{fmt(r.get('ratio_anchor_best'), 2):>14s} {fmt(r.get('ratio_anchor_same'), 2):>14s}")
    for a in (anchor or {}).get("runs", []):
        lines.append(f"  anchor {a['name']:26s} {a['breasts_per_s']:8.1f} breasts/s, peak {fmt(a.get('peak_mem_gib'), 2)} GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["full", "small"], default="full")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", default="")
    ap.add_argument("--breasts", type=int, default=0, help="rows in the synthetic cache (default 32 full, 8 small)")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tta", type=int, default=10)
    ap.add_argument("--window-batch", type=int, default=WINDOW_BATCH,
                    help=f"inference: windows per forward, TTA draws stacked (default {WINDOW_BATCH})")
    ap.add_argument("--width", type=int, default=0, help="column width (default 16 full, 8 small)")
    ap.add_argument("--anchor", default=os.environ.get("MVMAMMO_ANCHOR", "../shared/bench/gpu_anchor.py"))
    ap.add_argument("--anchor-json", default="", help="read an existing anchor.json instead of running it")
    ap.add_argument("--anchor-timeout", type=float, default=300.0)
    ap.add_argument("--anchor-args", default="", help="extra arguments for the anchor, e.g. --no-compile")
    ap.add_argument("--no-anchor", action="store_true")
    ap.add_argument("--cache", default="", help="cache folder (default: a temporary one)")
    ap.add_argument("--store", default="", help="read this window store (benchmarks/store.py --out DIR/store) "
                                                "instead of a synthetic memory-mapped cache")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args(argv)
    small = a.size == "small"
    device = torch.device(a.device)
    breasts = a.breasts or (8 if small else 32)
    steps = a.steps or (3 if small else 12)
    width = a.width or (8 if small else 16)
    names = a.configs or ("fp32-eager-b4,fp32-eager-b4-infer" if small else
                          "bf16-cl-eager-b4,bf16-cl-compile-b16,bf16-cl-compile-b16-infer,bf16-cl-compile-b4")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif small:
        torch.set_num_threads(1)  # a smoke test on shared CI cores: OpenMP spinning across busy cores is slower
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="mvmammo-bench-")
    t0 = time.perf_counter()
    if a.store:
        from mvmammo.data.store import WindowStore

        cache = WindowStore(a.store)
    else:
        cache = write_cache(a.cache or tmp.name, breasts, a.size)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "size": a.size, "breasts": len(cache.index) if a.store else breasts,
            "source": f"store {a.store}" if a.store else "memmap cache", "steps": steps, "width": width,
            "cache_write_s": round(time.perf_counter() - t0, 2), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(info), flush=True)
    results = []
    for name in [n for n in names.split(",") if n]:
        cfg = parse(name)
        try:
            r = (bench_infer(cfg, cache, device, width, a.tta, a.window_batch) if cfg["infer"]
                 else bench_train(cfg, cache, device, width, steps, a.warmup))
        except Exception as exc:  # keep going: later configurations still say something
            r = dict(cfg, error=f"{type(exc).__name__}: {exc}"[:400])
        r["device"] = info["device"]
        results.append(r)
        print(json.dumps(r), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    anchor = None
    if a.anchor_json:
        anchor = json.loads(Path(a.anchor_json).read_text())
    elif not a.no_anchor:
        anchor = run_anchor(a.anchor, out / "anchor", small, a.anchor_timeout, a.anchor_args)
    ratios(results, anchor)
    report = {"info": info, "results": results, "anchor": anchor}
    (out / "throughput.json").write_text(json.dumps(report, indent=1))
    print(table(results, anchor), flush=True)
    tmp.cleanup()
    return report


if __name__ == "__main__":
    main()
