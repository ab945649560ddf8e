"""`mvmammo weights import-nyu FILE --out RUN`: NYU's released weights as one of our run folders."""
from __future__ import annotations

import json
import os
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("weights", help="import weights released by others into a run folder")
    s = p.add_subparsers(dest="weights_command", metavar="SUBCOMMAND", required=True)
    n = s.add_parser("import-nyu", help="convert an NYU breast_cancer_classifier weight file (.p)",
                     description="Convert one of NYU's weight files (ResNet-22 image-wise or view-wise model, or "
                                 "the DenseNet-121 patch model) into a run folder: predict / pretraining read a "
                                 "ResNet run, `mvmammo heatmaps --patch-model` reads a patch run. Nothing is "
                                 "downloaded; the file is read as plain tensors.")
    n.add_argument("file", help="NYU's released weights file (a PyTorch state dict; loaded weights-only)")
    n.add_argument("--out", required=True, help="run folder to create")
    n.add_argument("--family", default="joint", choices=("uni_cc", "uni_mlo", "joint", "shared", "split"),
                   help="our model family for a ResNet-22 file (default joint)")
    n.add_argument("--side", default="L", choices=("L", "R"),
                   help="image-wise files hold per-side FC/output layers: which side's to take (default L)")
    n.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in the run folder")
    n.set_defaults(func=run_import)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def import_nyu(file: str | Path, out: str | Path, family: str = "joint", side: str = "L",
               overwrite: bool = False) -> dict:
    from mvmammo import config as config_mod
    from mvmammo.errors import MvError
    from mvmammo.models import nyu_import as nyu
    from mvmammo.runlock import hold_run
    from mvmammo.training.checkpoint import save_atomic

    out = Path(out)
    if (out / "best.pt").exists() and not overwrite:
        raise MvError(f"{out}: already holds best.pt; choose another --out or pass --overwrite")
    state = nyu.read_state(file)
    kind = nyu.kind_of(state)
    with hold_run(out, "weights import-nyu"):
        info = {"source": str(Path(file).resolve()), "kind": kind}
        if kind == "patch":
            from mvmammo.models.densenet import DenseNet, DenseNetConfig
            from mvmammo.patches.runs import write_model

            arch = nyu.patch_arch(state)
            model = DenseNet(DenseNetConfig.from_dict(arch))
            model.load_state_dict(nyu.patch_state(state))
            write_model(out, model, patch=256)
            info.update(arch=arch, patch=256, note="TensorFlow SAME padding; classes malignant, benign, outside, "
                                                   "negative")
        else:
            from mvmammo.models.registry import build_model

            ours, fresh = nyu.resnet_state(state, family, side)
            in_ch = int(ours[next(k for k in ours if k.endswith("column.stem.weight"))].shape[1])
            fc_dim = 256 if kind == "imagewise" else 512
            cfg = config_mod.resolve("default", [f"model.family={family}", "model.backbone=resnet22",
                                                 "model.width=16", f"model.fc_dim={fc_dim}",
                                                 f"data.heatmaps={'true' if in_ch == 3 else 'false'}",
                                                 f"run.out={out}"])
            model = build_model(cfg.model, in_channels=in_ch)
            target = model.state_dict()
            bad = [k for k, t in ours.items() if k not in target or target[k].shape != t.shape]
            if bad:
                raise MvError(f"{file}: {len(bad)} tensor(s) do not fit our {family} model (first: {bad[0]}); the "
                              "file's layout differs from NYU's published one")
            target.update(ours)
            model.load_state_dict(target)
            config_mod.save(cfg, out / "config.json")
            save_atomic({"model": model.state_dict()}, out / "best.pt")
            info.update(family=family, side=side, in_channels=in_ch, fc_dim=fc_dim, imported=len(ours),
                        fresh=fresh)
        _write_json(out / "import.json", info)
    return info


def run_import(args) -> int:
    info = import_nyu(args.file, args.out, args.family, args.side, args.overwrite)
    if info["kind"] == "patch":
        print(f"{args.out}: NYU patch model (DenseNet, TF SAME padding); use it with "
              f"`mvmammo heatmaps TABLE --patch-model {args.out} --out DIR`")
    else:
        extra = f"; fresh: {', '.join(info['fresh'])}" if info["fresh"] else ""
        print(f"{args.out}: NYU {info['kind']} ResNet-22 as {info['family']} ({info['in_channels']} channels, "
              f"{info['imported']} tensors imported{extra})")
    return 0
