"""`mvmammo patches extract|train`: patch sets from lesion annotations, and the DenseNet patch classifier."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("patches", help="patch sets from annotations and the patch classifier (heatmap stage)")
    s = p.add_subparsers(dest="patches_command", metavar="SUBCOMMAND", required=True)

    e = s.add_parser("extract", help="cut malignant/benign/outside/negative patches from an annotated exam table")
    e.add_argument("table", help="exam table (its split column gives the patch splits)")
    e.add_argument("--out", required=True, help="patch set folder")
    e.add_argument("--annotations", default=None,
                   help="annotation file: our table, a synthetic lesions.csv, a CBIS case CSV or a VinDr "
                        "finding_annotations.csv (default: <table>_annotations.csv beside the table, as `mvmammo import "
                        "cbis|vindr` writes it, else a synthetic cohort's lesions.csv)")
    e.add_argument("--layout", default="auto", choices=("auto", "table", "synthetic", "cbis", "vindr"), help="annotation layout: our table, the synthetic lesions.csv, CBIS ROI masks, VinDr boxes (default auto)")
    e.add_argument("--mask-root", default=None, help="folder the CBIS ROI mask paths are relative to")
    e.add_argument("--patch", type=int, default=256, help="patch side, px (default 256)")
    e.add_argument("--per-lesion", type=int, default=4, help="positive patches per lesion (default 4)")
    e.add_argument("--jitter", type=float, default=0.25, help="max centre shift, share of the patch (default 0.25)")
    e.add_argument("--per-image", type=int, default=4, help="outside/negative patches per image (default 4)")
    e.add_argument("--min-tissue", type=float, default=0.5, help="min breast share of a patch (default 0.5)")
    e.add_argument("--seed", type=int, default=0, help="seed of the patch positions and jitter (default 0)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run_extract)

    t = s.add_parser("train", help="train the DenseNet-121 patch classifier on a patch set (resumable)")
    t.add_argument("patch_set", help="folder written by `mvmammo patches extract`")
    t.add_argument("--out", required=True, help="run folder (config.json, metrics.jsonl, best.pt, last.pt)")
    t.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    t.add_argument("--batch-size", type=int, default=32, help="patches per batch (default 32)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling (default 0)")
    t.add_argument("--growth", type=int, default=32, help="DenseNet growth rate (32 = DenseNet-121)")
    t.add_argument("--blocks", type=int, nargs="+", default=[6, 12, 24, 16], help="layers per dense block")
    t.add_argument("--init-features", type=int, default=64, help="channels of the first convolution (DenseNet-121: 64; smaller for tests)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: the GPU when present)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    t.add_argument("--init", default="", metavar="FILE",
                   help="start from these weights instead of from scratch: a patch run folder / checkpoint, or a "
                        "torchvision-layout DenseNet state dict such as ImageNet densenet121-*.pth; read as plain "
                        "tensors, nothing downloaded. Its architecture is taken where --growth/--blocks/"
                        "--init-features are left at their defaults; a classifier without our 4 classes is not "
                        "loaded (fresh). Applied on a fresh run only")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=run_train)


def run_extract(args) -> int:
    from mvmammo.errors import UsageError
    from mvmammo.patches.extract import PatchConfig
    from mvmammo.patches.store import extract_patches

    if args.patch < 8 or args.per_lesion < 0 or args.per_image < 0 or not 0 <= args.jitter <= 1 \
            or not 0 <= args.min_tissue <= 1:
        raise UsageError("patches extract: need --patch >= 8, --per-lesion/--per-image >= 0, --jitter and "
                         "--min-tissue in [0, 1]")
    cfg = PatchConfig(patch=args.patch, per_lesion=args.per_lesion, jitter=args.jitter, per_image=args.per_image,
                      min_tissue=args.min_tissue)
    s = extract_patches(args.table, args.out, args.annotations, args.layout, cfg, args.seed, args.mask_root,
                        progress=not args.quiet)
    print(f"{args.out}: {s['patches']} patches of {args.patch} px" + (" (already there)" if s["cached"] else ""))
    if s.get("unmatched_annotations"):
        print(f"  note: {s['unmatched_annotations']} annotation(s) name no image of the table (patient_id, exam_id, "
              "side, view must match); they were not used")
    for split, c in s["counts"].items():
        print(f"  {split:5s} " + "  ".join(f"{k} {v}" for k, v in c.items()))
    lesion = sum(c.get(k, 0) for c in s["counts"].values() for k in ("malignant", "benign"))
    if lesion == 0:
        print(f"  note: no malignant or benign patch: {s['settings']['annotations']} has no lesion outline on "
              "this table's images, so a classifier trained on this set cannot learn the lesion classes")
    return 0


def run_train(args) -> int:
    from mvmammo.patches.train import PatchTrainConfig, train_patches

    cfg = PatchTrainConfig(patches=args.patch_set, out=args.out, growth=args.growth, blocks=tuple(args.blocks),
                           init_features=args.init_features, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, device=args.device, compile=args.compile, init=args.init)
    res = train_patches(cfg, progress=not args.quiet, say=print)
    m = res["last"]
    if m:
        aucs = "  ".join(f"{c} {m.get(f'val_auc_{c}', float('nan')):.3f}"
                         for c in ("malignant", "benign", "outside", "negative"))
        print(f"{res['run']}: epoch {m['epoch']}, val AUC {aucs}")
    else:
        print(f"{res['run']}: already trained to --epochs {args.epochs}")
    return 0
