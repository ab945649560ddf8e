"""Does storing the heatmap channels on a coarser grid change what a model learns? Joint ResNet trained on the
synthetic `paper` cohort at demo scale, once with the heatmaps stored as they are (factor 1) and once on a grid 8x
coarser than the window (factor 8, the full-resolution setting), same seeds; test malignant AUC with DeLong CIs.

  python benchmarks/store_heat_auc.py --seeds 0 --out /tmp/heat-auc

Writes benchmarks/results/store_heat_auc-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="/tmp/mvmammo-heat-auc")
    args = p.parse_args(argv)

    from mvmammo.config import resolve
    from mvmammo.evaluation.evaluate import evaluate_run
    from mvmammo.training.loop import train

    out = Path(args.out)
    rows = {}
    for factor in (1, 8):
        for seed in args.seeds:
            run = out / f"joint-h{factor}-s{seed}"
            cfg = resolve("cpu-demo", ["model.family=joint", "data.synth_breasts=800", "data.size_cc=(96, 64)",
                                       "data.size_mlo=(96, 64)", "optim.epochs=7", f"run.seed={seed}",
                                       f"data.heat_factor={factor}", f"run.out={run}", "run.progress=false",
                                       f"data.cache_dir={out / '_cache'}"])
            train(cfg)
            res = evaluate_run(run, split="test")
            rows[f"factor {factor}, seed {seed}"] = res["malignant"]
            print(f"heat factor {factor}, seed {seed}: test malignant AUC {res['malignant']['auc']:.3f} "
                  f"[{res['malignant']['delong_lo']:.3f}, {res['malignant']['delong_hi']:.3f}]", flush=True)
    result = {"date": datetime.date.today().isoformat(), "command": "python benchmarks/store_heat_auc.py "
              + " ".join(f"--seeds {' '.join(map(str, args.seeds))}".split()), "runs": rows}
    res_dir = Path(__file__).resolve().parent / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / f"store_heat_auc-{result['date']}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
