"""The embedded synthetic two-view (CC + MLO) cohort: the default dataset and the benchmark of every method.

    from mvmammo.data.synthetic import generate_cohort, load_oracle, PRESETS
    summary = generate_cohort("data/synth", preset="paper", breasts=600, size_cc=(128, 96), size_mlo=(128, 96))
    summary["oracle"]["auc_cc"], load_oracle("data/synth")["auc_both"]

Modules, one job each: presets (knobs), anatomy (outline, tissue, muscle, skin), lesions (3-D placement,
projection, morphology, cue), heatmaps (imitation patch classifier), breast (one breast, both views),
cohort (patients, splits, workers, files, cache), oracle (best achievable AUCs), preview (montage).
Orientation: every image has the chest wall at column 0 and the nipple to the right (L and R alike).
"""
from .cohort import FULL_SIZE_CC, FULL_SIZE_MLO, GENERATOR_VERSION, generate_cohort
from .oracle import auc, compute_oracle, load_oracle
from .presets import PRESETS, CueKnobs, Preset, ViewKnobs, get_preset

__all__ = ["generate_cohort", "load_oracle", "compute_oracle", "auc", "PRESETS", "Preset", "ViewKnobs",
           "CueKnobs", "get_preset", "FULL_SIZE_CC", "FULL_SIZE_MLO", "GENERATOR_VERSION"]
