"""EMBED (Emory Breast Imaging Dataset): clinical table (one row per finding) + metadata (one per image).

Images: metadata rows with FinalImageType '2D' (C-view only with ``include_cview``) and spot_mag not 1
(spot / magnification views are dropped and counted). ``anon_dicom_path`` is tried as written, then under
the images root with leading folders removed one at a time (the released paths start with a site mount).
Labels join on patient (empi_anon), exam (acc_anon) **and side**: a finding's side is ``bside`` (pathology
side) where filled, else ``side``; side B applies to both breasts. malignant = a finding with
path_severity in ``malignant_severity`` (default 0 invasive, 1 non-invasive); benign = in
``benign_severity`` (default 4 benign; add 2 high-risk / 3 borderline if wanted). A breast of an exam
present in the clinical table without such findings is (0, 0); an exam missing from it is dropped.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mvmammo.data.sources.common import SourceError, SplitOptions, build_table, read_source_csv, require_columns
from mvmammo.data.sources.report import ImportReport
from mvmammo.data.sources.vocab import VocabError, normalise_side


def _locate(raw: str, root: Path) -> Path:
    p = Path(str(raw))
    if p.is_absolute() and p.exists():
        return p
    parts = [x for x in Path(str(raw)).parts if x not in ("/", "")]
    for i in range(len(parts)):
        c = root.joinpath(*parts[i:])
        if c.exists():
            return c
    return root.joinpath(*parts) if parts else root


def _finding_sides(row) -> list[str]:
    raw = row.get("bside") if pd.notna(row.get("bside")) and str(row.get("bside")).strip() else row.get("side")
    if raw is None or (isinstance(raw, float) and pd.isna(raw)) or not str(raw).strip():
        return []
    s = normalise_side(raw, allow_both=True)
    return ["L", "R"] if s == "B" else [s]


def import_embed(clinical: str | Path, metadata: str | Path, images: str | Path, benign_severity=(4,),
                 malignant_severity=(0, 1), include_cview: bool = False,
                 split: SplitOptions | None = None,
                 allow_missing_view: bool = False) -> tuple[pd.DataFrame, ImportReport]:
    root = Path(images)
    clin = read_source_csv(clinical, dtype=str, low_memory=False)
    meta = read_source_csv(metadata, dtype=str, low_memory=False)
    require_columns(clin, ["empi_anon", "acc_anon", "side", "path_severity"], str(clinical))
    require_columns(meta, ["empi_anon", "acc_anon", "anon_dicom_path", "ImageLateralityFinal", "ViewPosition"],
                    str(metadata))
    bset, mset = {int(x) for x in benign_severity}, {int(x) for x in malignant_severity}
    report = ImportReport("embed", inputs={"clinical": str(clinical), "metadata": str(metadata), "images": str(root)},
                          label_rule=f"per (patient, exam, side): malignant = path_severity in {sorted(mset)}, "
                                     f"benign = path_severity in {sorted(bset)}; side B -> both breasts",
                          order_rule="metadata row order")
    keep = pd.Series(True, index=meta.index)
    if "FinalImageType" in meta.columns:
        types = meta["FinalImageType"].astype(str).str.strip().str.lower()
        keep &= types.isin({"2d"} | ({"cview", "c-view"} if include_cview else set()))
    if "spot_mag" in meta.columns:
        spot = pd.to_numeric(meta["spot_mag"], errors="coerce").fillna(0) == 1
        report.notes.append(f"{int((spot & keep).sum())} spot/magnification images excluded (spot_mag == 1)")
        keep &= ~spot
    report.notes.append(f"{int((~keep).sum())} metadata rows excluded by image type / spot_mag")
    meta = meta[keep].reset_index(drop=True)
    img_rows = [{"patient_id": r["empi_anon"], "exam_id": r["acc_anon"], "side": r["ImageLateralityFinal"],
                 "view": r["ViewPosition"], "path": str(_locate(r["anon_dicom_path"], root).resolve()), "order": k}
                for k, r in meta.iterrows()]
    exams_in_clinical = set(zip(clin["empi_anon"], clin["acc_anon"]))
    labels = {}
    for r in img_rows:  # every imaged breast of a clinically recorded exam starts as (0, 0)
        try:
            side = normalise_side(r["side"])
        except VocabError:
            continue  # reported by the builder as an image problem
        if (r["patient_id"], r["exam_id"]) in exams_in_clinical:
            labels.setdefault((r["patient_id"], r["exam_id"], side), [0, 0])
    for _, f in clin.iterrows():
        sev = pd.to_numeric(f["path_severity"], errors="coerce")
        if pd.isna(sev):
            continue
        try:
            sides = _finding_sides(f)
        except VocabError as exc:
            raise SourceError(f"{clinical}: empi {f['empi_anon']} acc {f['acc_anon']}: {exc}") from None
        for side in sides:
            lab = labels.setdefault((f["empi_anon"], f["acc_anon"], side), [0, 0])
            lab[0] |= int(sev) in bset
            lab[1] |= int(sev) in mset
    lab_df = pd.DataFrame([{"patient_id": k[0], "exam_id": k[1], "side": k[2], "benign": int(v[0]),
                            "malignant": int(v[1])} for k, v in labels.items()],
                          columns=["patient_id", "exam_id", "side", "benign", "malignant"])
    if not img_rows:
        raise SourceError(f"{metadata}: no 2D image rows left after filtering")
    table = build_table(pd.DataFrame(img_rows), lab_df, report, split or SplitOptions(),
                        allow_missing_view=allow_missing_view)
    for d in report.dropped:
        if d["reason"] == "no label":
            d["reason"], d["detail"] = "exam not in the clinical table", "no clinical row for this exam"
    return table, report
