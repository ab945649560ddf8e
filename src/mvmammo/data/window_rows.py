"""The row side shared by every window source (the memory-mapped cache and the window store): which rows exist,
their split, labels and views. A source sets ``index`` (a table with split, benign, malignant), ``_present``
(bool (N, 2) [cc, mlo]) and ``usable`` (bool (N,)) and inherits the rest."""
from __future__ import annotations

import numpy as np


class WindowRows:
    index: "object"
    _present: np.ndarray
    usable: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def exclude(self, mask: np.ndarray) -> None:
        """Leave the rows where mask is true out of :meth:`rows` (e.g. one-view breasts, data.missing_view=drop)."""
        self.usable &= ~np.asarray(mask, dtype=bool)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero((self.index["split"].to_numpy() == split) & self.usable)

    def labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, 2) int64 labels (benign, malignant) as stored: 0/1, or -1 where unknown (predict-only tables)."""
        lab = self.index[["benign", "malignant"]].to_numpy(dtype=np.int64)
        return lab if rows is None else lab[rows]

    def present(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, 2) bool [cc, mlo]: the view exists (an absent view is stored as zeros)."""
        return self._present if rows is None else self._present[np.asarray(rows)]
