"""Patch sets from lesion annotations and the patch classifier that makes the heatmap channels.

image.py (the per-image crop + standardisation shared with inference) . annotations.py (annotation tables:
synthetic lesions.csv, CBIS-style ROI masks, VinDr-style boxes) . extract.py (patches and class rules) .
store.py (the patch set on disk) . train.py (training the DenseNet patch classifier) . runs.py (checkpoints).
"""
