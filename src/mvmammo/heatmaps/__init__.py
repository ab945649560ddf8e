"""Heatmaps from a patch classifier: grid.py (the patch grid and per-pixel averaging), infer.py (one image,
batched), table.py (a whole exam table, resumable, and the new exam table with the heatmap columns)."""
