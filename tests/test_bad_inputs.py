"""The bad-input suite: each case is a command a user might type with something wrong. Every one must end with
the right exit code and exactly one `error:` line naming the offender, print no traceback, and leave every input
and earlier output as it was."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from mvmammo.cli import main
from mvmammo.config import resolve
from mvmammo.training.loop import train

from conftest import tiny_overrides


@pytest.fixture(scope="module")
def world(tiny_cohort, tmp_path_factory):
    """Inputs shared by the cases: the tiny cohort, a trained + evaluated run, an untrained folder, a file."""
    root = tmp_path_factory.mktemp("world")
    run = root / "runs" / "joint-s0"
    train(resolve("default", tiny_overrides(tiny_cohort, run, **{"optim.epochs": 1})))
    assert main(["evaluate", str(run), "--tta", "0"]) == 0
    raw = tiny_overrides(tiny_cohort, root / "runs" / "x")
    (root / "a_file").write_text("not a folder\n")
    (root / "empty.csv").write_text("")
    (root / "latin1.csv").write_bytes("patient_id,exam_id\n\xe9\xe8,1\n".encode("latin-1"))
    (root / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (root / "no_config").mkdir()
    bad_cfg = root / "bad_config"
    bad_cfg.mkdir()
    (bad_cfg / "config.json").write_text("{not json")
    unevaluated = root / "runs" / "unevaluated-s0"
    shutil.copytree(run, unevaluated)
    for p in unevaluated.glob("predictions_*.csv"):
        p.unlink()
    for p in unevaluated.glob("metrics_*.json"):
        p.unlink()
    no_ckpt = root / "runs" / "nockpt-s0"
    shutil.copytree(unevaluated, no_ckpt)
    (no_ckpt / "best.pt").unlink()
    cut = root / "runs" / "cut-s0"
    shutil.copytree(unevaluated, cut)
    (cut / "best.pt").write_bytes((run / "best.pt").read_bytes()[:200])
    df = json.loads((run / "config.json").read_text())
    table = Path(df["data"]["table"])
    missing_img = root / "missing_image.csv"
    text = table.read_text().splitlines()
    first = text[1].split(",")
    header = text[0].split(",")
    first[header.index("cc_path")] = "images/does_not_exist.png"
    missing_img.write_text("\n".join([text[0], ",".join(first)] + text[2:]) + "\n")
    no_val = root / "no_val.csv"
    no_val.write_text("\n".join([text[0]] + [ln.replace(",val,", ",train,") for ln in text[1:]]) + "\n")
    # Relative image paths resolve against the table's folder: keep the copies next to the cohort's images.
    for name in ("missing_image.csv", "no_val.csv"):
        shutil.copy(root / name, table.parent / name)
    return {"root": root, "run": run, "raw": raw, "table": table, "unevaluated": unevaluated, "no_ckpt": no_ckpt,
            "cut": cut, "missing_img": table.parent / "missing_image.csv", "no_val": table.parent / "no_val.csv"}


def _digest(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".lock" and "_cache" not in p.parts:
            out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


# (id, argv template, exit code, text the error line must contain). Templates use {root}, {run}, {table}, ...
CASES = [
    # outputs that cannot be written
    ("train-out-under-file", ["train", "{raw}", "run.out={root}/a_file/run"], 1, "a_file"),
    ("train-out-proc", ["train", "{raw}", "run.out=/proc/mvmammo/run"], 1, "/proc/mvmammo"),
    ("cache-out-under-file", ["cache", "{table}", "--out", "{root}/a_file/c", "--size-cc", "32", "24",
                              "--size-mlo", "32", "24"], 1, "a_file"),
    ("preprocess-out-under-file", ["preprocess", "{table}", "--out", "{root}/a_file/p"], 1, "a_file"),
    ("synth-out-under-file", ["synth", "--breasts", "8", "--size", "64", "48", "--out", "{root}/a_file/s",
                              "--quiet"], 1, "a_file"),
    ("import-out-under-file", ["import", "csv", "{table}", "--out", "{root}/a_file/t.csv"], 1, "a_file"),
    ("plot-out-under-file", ["plot", "{run}", "--out", "{root}/a_file/figs"], 1, "a_file"),
    # run folders that are missing, broken, or not ready
    ("evaluate-missing-run", ["evaluate", "{root}/nosuch"], 1, "nosuch"),
    ("evaluate-no-config", ["evaluate", "{root}/no_config"], 1, "no_config"),
    ("evaluate-corrupt-config", ["evaluate", "{root}/bad_config"], 1, "bad_config"),
    ("evaluate-no-checkpoint", ["evaluate", "{no_ckpt}"], 1, "best.pt"),
    ("evaluate-truncated-checkpoint", ["evaluate", "{cut}"], 1, "best.pt"),
    ("evaluate-unknown-split", ["evaluate", "{run}", "--split", "nosuch"], 1, "nosuch"),
    ("evaluate-negative-tta", ["evaluate", "{run}", "--tta", "-1"], 2, "tta"),
    ("table-missing-run", ["table", "{root}/nosuch"], 1, "nosuch"),
    ("table-unevaluated", ["table", "{unevaluated}"], 1, "unevaluated-s0"),
    ("table-corrupt-config", ["table", "{root}/bad_config"], 1, "bad_config"),
    ("compare-unevaluated", ["compare", "{run}", "{unevaluated}"], 1, "unevaluated-s0"),
    ("compare-missing", ["compare", "{root}/nosuch", "{run}"], 1, "nosuch"),
    ("plot-missing-run", ["plot", "{root}/nosuch", "--out", "{root}/figs"], 1, "nosuch"),
    ("analyze-missing-run", ["analyze", "utilization", "{root}/nosuch"], 1, "nosuch"),
    ("analyze-no-checkpoint", ["analyze", "utilization", "{no_ckpt}", "--no-probes"], 1, "best.pt"),
    # tables that are missing or unreadable
    ("validate-missing", ["validate", "{root}/nosuch.csv"], 1, "nosuch.csv"),
    ("validate-empty", ["validate", "{root}/empty.csv"], 1, "empty.csv"),
    ("validate-latin1", ["validate", "{root}/latin1.csv"], 1, "latin1.csv"),
    ("validate-binary", ["validate", "{root}/binary.csv"], 1, "binary.csv"),
    ("validate-folder", ["validate", "{root}"], 1, "{root}"),
    ("train-missing-table", ["train", "{raw}", "data.table={root}/nosuch.csv", "run.out={root}/runs/t1"], 1,
     "nosuch.csv"),
    ("train-empty-table", ["train", "{raw}", "data.table={root}/empty.csv", "run.out={root}/runs/t2"], 1,
     "empty.csv"),
    ("train-no-val", ["train", "{raw}", "data.table={no_val}", "run.out={root}/runs/t3"], 1, "val"),
    ("cache-missing-image", ["cache", "{missing_img}", "--out", "{root}/c2", "--size-cc", "32", "24",
                             "--size-mlo", "32", "24"], 1, "does_not_exist.png"),
    ("preprocess-missing-table", ["preprocess", "{root}/nosuch.csv", "--out", "{root}/p2"], 1, "nosuch.csv"),
    ("import-nyu-missing", ["import", "nyu", "{root}/nosuch.pkl", "--out", "{root}/t.csv"], 1, "nosuch.pkl"),
    ("import-nyu-not-pickle", ["import", "nyu", "{root}/binary.csv", "--out", "{root}/t.csv"], 1, "binary.csv"),
    ("import-csv-empty", ["import", "csv", "{root}/empty.csv", "--out", "{root}/t.csv"], 1, "empty.csv"),
    # usage and configuration
    ("train-unknown-key", ["train", "{raw}", "optim.nosuch=1"], 2, "optim.nosuch"),
    ("train-bad-type", ["train", "{raw}", "optim.lr=fast"], 2, "optim.lr"),
    ("train-unknown-preset", ["train", "--preset", "nosuch", "{raw}"], 2, "nosuch"),
    ("train-bad-override-syntax", ["train", "{raw}", "optim.lr"], 2, "optim.lr"),
    ("train-lr-zero", ["train", "{raw}", "optim.lr=0", "run.out={root}/runs/t4"], 2, "optim.lr"),
    ("train-batch-zero", ["train", "{raw}", "optim.batch_size=0", "run.out={root}/runs/t5"], 2, "optim.batch_size"),
    ("unknown-command", ["fly"], 2, "fly"),
    ("evaluate-no-args", ["evaluate"], 2, "runs"),
    ("synth-bad-int", ["synth", "--breasts", "many", "--out", "{root}/s2"], 2, "many"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, world, capsys):
    name, argv, code, needle = case
    fill = {k: (" ".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in world.items()}
    args = []
    for a in argv:
        if a == "{raw}":
            args += [x for x in world["raw"]]
        else:
            args.append(a.format(**fill))
    before = _digest(world["root"])
    try:
        got = main(args)
    except SystemExit as exc:  # argparse exits itself
        got = exc.code
    err = capsys.readouterr().err
    assert got == code, f"{name}: exit {got}, stderr:\n{err}"
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, f"{name}: expected one error line, got:\n{err}"
    assert needle.format(**fill) in errors[0], f"{name}: {needle!r} not named in {errors[0]!r}"
    after = _digest(world["root"])
    changed = [p for p in before if before[p] != after.get(p)]
    assert not changed, f"{name}: changed or removed {changed}"
