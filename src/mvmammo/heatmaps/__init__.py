"""Heatmaps from a patch classifier: grid.py (the patch grid and per-pixel averaging), infer.py (one image,
batched), constant.py (constant patches, computed once), dense.py (the approximate dense mode: features once per
crop), table.py (a whole exam table, resumable, and the new exam table with the heatmap columns)."""
