"""The window cache: every breast's CC and MLO windows decoded once into uint16 arrays, memory-mapped to read.

Layout of a cache folder:
  meta.json            the geometry (:class:`CacheSpec`: sizes, margins, channels, keep_aspect, resize rule,
                       format version), the index checksum and when the file fingerprints were taken
  index.csv            row -> breast_id, patient_id, exam_id, side, split, benign, malignant (-1 = unknown),
                       has_cc, has_mlo, key / content (what the row's windows were made from, see cache_key.py)
  cc.npy, mlo.npy      uint16 (N, C, H + 2m, W + 2m): channel 0 the image (raw detector units, 12-16 bit),
                       channels 1-2 the benign / malignant heatmaps scaled to 0..65535; an absent view is zeros
  done.npy             bool (N,): rows written so far (a killed build resumes where it stopped)
  checksums.npy        uint32 (N, 2): crc32 of each stored cc / mlo window (verify with `verify()`)

The margin m (pixels at the cached resolution) is the room that augmentation's random window position and
size noise needs: ``noise_px`` (100 px) at full resolution, scaled by each view's own window height (CC 2677,
MLO 2974 px: the paper's windows). It holds the source image where the source has context, else zeros.

When is a cache rebuilt? :func:`build_cache` compares the geometry and each row's fingerprint (its files'
path, size and mtime; see :mod:`mvmammo.data.cache_key`) with what the folder holds, and prints one line
saying why it rebuilds: a new geometry or a changed row count rebuilds all rows in ``.building/`` next to
the old files (which stay readable until the new set is complete; rows whose inputs did not change are
copied, not decoded again); changed rows with the same geometry and row count are re-decoded in place;
changed labels or splits only rewrite index.csv.
"""
from __future__ import annotations

# The pieces live in their own files; this module is the cache's one name for callers.
from mvmammo.data.cache_build import build_cache  # noqa: F401
from mvmammo.data.cache_files import CacheError  # noqa: F401
from mvmammo.data.cache_read import WindowCache  # noqa: F401
from mvmammo.data.cache_spec import (CACHE_VERSION, FULL_HEIGHT_CC, FULL_HEIGHT_MLO, HEATMAP_SCALE,  # noqa: F401
                                     CacheSpec, read_view, make_spec, margin_for, margins)

__all__ = ["CacheError", "CacheSpec", "WindowCache", "build_cache", "make_spec", "margin_for", "margins",
           "HEATMAP_SCALE"]
