"""The import report: what an importer kept, what it dropped and why; printed and written as JSON."""
from __future__ import annotations

import copy
import json
import os
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

VIEW_RULE = ("Exactly one CC and one MLO image per breast. The CC slot takes view CC, else XCCL; the MLO slot "
             "takes MLO, else ML. Within a view the first image in the source's stated order is kept and the "
             "others are listed under extra_images. Other views (LM, LMO, AT, XCCM, FB, SIO, CV) are listed "
             "and not used. Laterality and view come from the DICOM tags when the file is a DICOM "
             "(ImageLaterality/Laterality, ViewPosition/ViewCodeSequence), else from the source's metadata; "
             "where both exist and disagree the tag wins and the disagreement is listed under conflicts.")


@dataclass
class ImportReport:
    source: str
    inputs: dict = field(default_factory=dict)
    label_rule: str = ""
    order_rule: str = "row order of the source table"
    split_rule: str = ""
    view_rule: str = VIEW_RULE
    kept: int = 0
    patients: int = 0
    exams: int = 0
    benign: int = 0
    malignant: int = 0
    both: int = 0
    unlabelled: int = 0                                  # breasts with an unknown (-1) label
    by_split: dict = field(default_factory=dict)
    duplicate_rows: int = 0
    dropped: list = field(default_factory=list)          # {breast, reason, detail}
    image_problems: list = field(default_factory=list)   # {path, reason, detail}
    extra_images: list = field(default_factory=list)     # {breast, view, path, reason}
    conflicts: list = field(default_factory=list)        # {path, field, tag, metadata}
    one_view: list = field(default_factory=list)         # {breast, missing, reason, detail} (--allow-missing-view)
    notes: list = field(default_factory=list)
    # Lesion outlines for the annotation table (mvmammo.data.annotations), written beside the exam table by
    # write_outputs; a DataFrame or None, not part of the JSON report (its path and count are).
    annotations: object = field(default=None, repr=False, compare=False)

    def drop(self, breast: str, reason: str, detail: str = "") -> None:
        self.dropped.append({"breast": breast, "reason": reason, "detail": detail})

    def dropped_by_reason(self) -> dict:
        return dict(Counter(d["reason"] for d in self.dropped).most_common())

    def to_dict(self) -> dict:
        # Field by field (not asdict): the annotation frame is not JSON and not worth a deep copy.
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "annotations"}
        d["dropped_breasts"] = len(self.dropped)
        d["dropped_by_reason"] = self.dropped_by_reason()
        d["prevalence"] = {"benign": self.benign / self.kept if self.kept else 0.0,
                           "malignant": self.malignant / self.kept if self.kept else 0.0}
        return d

    def lines(self, max_items: int = 10) -> list[str]:
        k = max(self.kept, 1)
        out = [f"import {self.source}: kept {self.kept} breasts ({self.exams} exams, {self.patients} patients), "
               f"dropped {len(self.dropped)}",
               f"  benign {self.benign} ({self.benign / k:.2%}), malignant {self.malignant} "
               f"({self.malignant / k:.2%}), both {self.both}"
               + (f", unknown labels {self.unlabelled}" if self.unlabelled else ""),
               "  splits: " + ", ".join(f"{s} {n}" for s, n in self.by_split.items()),
               f"  labels: {self.label_rule}"]
        if self.split_rule:
            out.append(f"  split rule: {self.split_rule}")
        for reason, n in self.dropped_by_reason().items():
            out.append(f"  dropped {n}: {reason}")
        for d in self.dropped[:max_items]:
            out.append(f"    {d['breast']}: {d['reason']}" + (f" ({d['detail']})" if d["detail"] else ""))
        if len(self.dropped) > max_items:
            out.append(f"    ... {len(self.dropped) - max_items} more in the JSON report")
        if self.one_view:
            out.append(f"  kept with one view (--allow-missing-view): {len(self.one_view)}")
        if self.duplicate_rows:
            out.append(f"  duplicate rows removed: {self.duplicate_rows}")
        if self.image_problems:
            out.append(f"  unusable images: {len(self.image_problems)}")
        if self.extra_images:
            out.append(f"  extra images not used: {len(self.extra_images)}")
        if self.conflicts:
            out.append(f"  tag/metadata disagreements (tag used): {len(self.conflicts)}")
        out += [f"  note: {n}" for n in self.notes]
        return out

    def write(self, path: str | Path) -> None:
        """Atomically (temporary file in the same folder, then os.replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def report_path(table_path: str | Path) -> Path:
    """exams.csv -> exams_import_report.json, next to the table."""
    p = Path(table_path)
    return p.with_name(p.stem + "_import_report.json")
