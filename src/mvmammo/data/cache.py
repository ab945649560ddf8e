"""The window cache: every breast's CC and MLO windows decoded once into uint16 memory-mapped arrays.

Layout of a cache folder:
  meta.json            sizes, margins, channels, the table's checksum (a changed table rebuilds the cache)
  index.csv            row -> breast_id, patient_id, split, benign, malignant
  cc.npy, mlo.npy      uint16 (N, C, H + 2m, W + 2m): channel 0 the image (raw detector units, 12-16 bit),
                       channels 1-2 the benign / malignant heatmaps scaled to 0..65535
  done.npy             bool (N,): rows written so far (a killed build resumes where it stopped)
  checksums.npy        uint32 (N, 2): crc32 of each stored cc / mlo window (verify with `verify()`)

The margin m (pixels at the cached resolution) is the room that augmentation's random window position and
size noise needs; it is filled with the source image where the source has it, else zeros.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mvmammo import VIEWS
from mvmammo.data import exams, images

CACHE_VERSION = 1
HEATMAP_SCALE = 65535.0


class CacheError(RuntimeError):
    """The cache cannot be built or read; the message names the row/file and what to do."""


@dataclass(frozen=True)
class CacheSpec:
    size_cc: tuple[int, int]  # (H, W) of the training window, cached resolution
    size_mlo: tuple[int, int]
    margin_cc: int  # px at cached resolution on every side
    margin_mlo: int
    channels: int  # 1 (image) or 3 (image + benign + malignant heatmaps)
    table_sha: str
    version: int = CACHE_VERSION

    def size(self, view: str) -> tuple[int, int]:
        return self.size_cc if view == "cc" else self.size_mlo

    def margin(self, view: str) -> int:
        return self.margin_cc if view == "cc" else self.margin_mlo

    def stored_shape(self, view: str) -> tuple[int, int, int]:
        h, w = self.size(view)
        m = self.margin(view)
        return (self.channels, h + 2 * m, w + 2 * m)


def margin_for(size: tuple[int, int], noise_px: float, full_height: int) -> int:
    """Augmentation noise in cached pixels: noise_px is given at full resolution (paper: 100 px of 2677)."""
    return int(round(noise_px * size[0] / full_height))


def table_checksum(df: pd.DataFrame) -> str:
    cols = [c for c in ("breast_id", "cc_path", "mlo_path", *exams.HEATMAP_COLUMNS, "benign", "malignant", "split")
            if c in df.columns]
    text = df[cols].astype(str).to_csv(index=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _fit_window(src: np.ndarray, src_margin: int, size: tuple[int, int], margin: int) -> np.ndarray:
    """Resize a source window (with src_margin px of context on each side) to size + 2*margin.

    src: (C, Hs, Ws) float32. The window proper is src[:, M:Hs-M, M:Ws-M]; it maps onto the central
    (H, W) of the output, and the output margin m takes the corresponding source context (zeros beyond).
    """
    c, hs, ws = src.shape
    h, w = size
    win_h, win_w = hs - 2 * src_margin, ws - 2 * src_margin
    sy, sx = h / win_h, w / win_w  # cached px per source px
    need_y, need_x = margin / sy, margin / sx  # source context needed on each side (px)
    pad_y = int(np.ceil(max(0.0, need_y - src_margin))) + 1
    pad_x = int(np.ceil(max(0.0, need_x - src_margin))) + 1
    t = torch.from_numpy(src)[None]
    t = F.pad(t, (pad_x, pad_x, pad_y, pad_y))
    y0 = pad_y + src_margin - need_y
    x0 = pad_x + src_margin - need_x
    y1 = pad_y + hs - src_margin + need_y
    x1 = pad_x + ws - src_margin + need_x
    iy0, ix0 = int(np.floor(y0)), int(np.floor(x0))
    iy1, ix1 = int(np.ceil(y1)), int(np.ceil(x1))
    t = t[:, :, iy0:iy1, ix0:ix1]
    out_h, out_w = h + 2 * margin, w + 2 * margin
    if t.shape[-2:] != (out_h, out_w):
        t = F.interpolate(t, size=(out_h, out_w), mode="bilinear", align_corners=False,
                          antialias=t.shape[-2] > out_h)
    return t[0].numpy()


def _read_view(df: pd.DataFrame, row: pd.Series, view: str, spec: CacheSpec) -> np.ndarray:
    path = exams.resolve_path(df, row[f"{view}_path"])
    img = images.read_image(path).astype(np.float32)
    chans = [img]
    if spec.channels == 3:
        for label in ("benign", "malignant"):
            col = f"{view}_heatmap_{label}"
            hp = exams.resolve_path(df, row[col])
            hm = images.read_image(hp).astype(np.float32)
            if hm.shape != img.shape:
                raise CacheError(f"{hp}: heatmap shape {hm.shape} differs from its image {path} {img.shape}")
            chans.append(hm)
    src = np.stack(chans)
    src_margin = int(row.get(f"{view}_window_margin", 0) or 0)
    out = _fit_window(src, src_margin, spec.size(view), spec.margin(view))
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)


class WindowCache:
    """Read side of a built cache: memory-mapped arrays plus the index table."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta = json.loads((self.root / "meta.json").read_text())
        self.spec = CacheSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["spec"].items()})
        self.index = pd.read_csv(self.root / "index.csv", dtype={"breast_id": str, "patient_id": str})
        self.arrays = {v: np.load(self.root / f"{v}.npy", mmap_mode="r") for v in VIEWS}
        done = np.load(self.root / "done.npy")
        if not done.all():
            raise CacheError(f"{self.root}: cache incomplete ({int(done.sum())}/{len(done)} rows); "
                             "run `mvmammo cache TABLE` again to finish it")

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    def labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, 2) int64 labels (benign, malignant)."""
        lab = self.index[["benign", "malignant"]].to_numpy(dtype=np.int64)
        return lab if rows is None else lab[rows]

    def load(self, rows: np.ndarray, view: str) -> np.ndarray:
        """uint16 (B, C, H + 2m, W + 2m) for the given rows (copied out of the memory map)."""
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")  # sorted reads are sequential on disk
        out = np.empty((len(rows),) + self.arrays[view].shape[1:], dtype=np.uint16)
        out[order] = self.arrays[view][rows[order]]
        return out

    def verify(self) -> list[str]:
        """Rows whose stored bytes no longer match their checksum."""
        sums = np.load(self.root / "checksums.npy")
        bad = []
        for i in range(len(self)):
            for j, v in enumerate(VIEWS):
                if zlib.crc32(np.ascontiguousarray(self.arrays[v][i]).tobytes()) != sums[i, j]:
                    bad.append(f"row {i} ({self.index.breast_id[i]}), {v}: checksum mismatch")
        return bad


def build_cache(df: pd.DataFrame, root: str | Path, size_cc: tuple[int, int], size_mlo: tuple[int, int],
                heatmaps: bool, noise_px: float = 100.0, full_height: int = 2677,
                progress: bool = True) -> WindowCache:
    """Decode every row's windows once into ``root``; resumes an interrupted build; reuses a complete one.

    df: a validated exam table (see :func:`mvmammo.data.exams.load_valid`).
    """
    root = Path(root)
    channels = 3 if heatmaps else 1
    if heatmaps:
        missing = [c for c in exams.HEATMAP_COLUMNS if c not in df.columns]
        if missing:
            raise CacheError(f"data.heatmaps=true but the exam table has no {', '.join(missing)} column(s); "
                             "set data.heatmaps=false to train on the image channel only")
    size_cc, size_mlo = tuple(size_cc), tuple(size_mlo)
    spec = CacheSpec(size_cc=size_cc, size_mlo=size_mlo,
                     margin_cc=margin_for(size_cc, noise_px, full_height),
                     margin_mlo=margin_for(size_mlo, noise_px, full_height),
                     channels=channels, table_sha=table_checksum(df))
    meta_path = root / "meta.json"
    fresh = True
    if meta_path.exists():
        old = json.loads(meta_path.read_text())["spec"]
        old = {k: tuple(v) if isinstance(v, list) else v for k, v in old.items()}
        fresh = old != asdict(spec)
    root.mkdir(parents=True, exist_ok=True)
    n = len(df)
    if fresh:
        for v in VIEWS:
            np.lib.format.open_memmap(root / f"{v}.npy", mode="w+", dtype=np.uint16,
                                      shape=(n,) + spec.stored_shape(v)).flush()
        np.save(root / "done.npy", np.zeros(n, dtype=bool))
        np.save(root / "checksums.npy", np.zeros((n, 2), dtype=np.uint32))
        cols = [c for c in ("breast_id", "patient_id", "exam_id", "side", "split", "benign", "malignant")
                if c in df.columns]
        df[cols].to_csv(root / "index.csv", index=False)
        meta_path.write_text(json.dumps({"spec": asdict(spec)}, indent=2))
    done = np.load(root / "done.npy")
    todo = np.flatnonzero(~done)
    if len(todo):
        arrays = {v: np.load(root / f"{v}.npy", mmap_mode="r+") for v in VIEWS}
        sums = np.load(root / "checksums.npy")
        bar = _progress(todo, progress, f"caching {len(todo)} breasts -> {root}")
        for k, i in enumerate(bar):
            row = df.iloc[i]
            for j, v in enumerate(VIEWS):
                try:
                    win = _read_view(df, row, v, spec)
                except images.ImageReadError as exc:
                    raise CacheError(f"exam table row {i + 2} (breast {row['breast_id']}), {v}: {exc}") from exc
                arrays[v][i] = win
                sums[i, j] = zlib.crc32(win.tobytes())
            done[i] = True
            if k % 256 == 255 or k == len(todo) - 1:  # checkpoint progress so a kill loses little
                for a in arrays.values():
                    a.flush()
                np.save(root / "checksums.npy", sums)
                np.save(root / "done.npy", done)
        del arrays
    return WindowCache(root)


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="breast", leave=False, disable=None)
