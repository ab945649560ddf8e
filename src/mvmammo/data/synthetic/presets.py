"""The knobs of the synthetic cohort and its named presets.

Every knob is a field of a frozen dataclass, so a preset is a value that can be hashed, compared and written
into ``cohort.json``. Sizes are fractions of the view's image height (so a lesion covers the same share of
the image at 64 px and at full resolution); contrasts are in 12-bit detector units (DN, 0..4095).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class CueKnobs:
    """A view-specific spurious cue: a small bright ring marker drawn just inside the skin line.

    It carries no information about the lesion; its only link to the label is the probability of drawing it,
    which differs between the train split and the val/test splits (a shortcut that does not transfer).
    """

    p_train_malignant: float = 0.0  # P(cue | malignant breast, train split)
    p_train_other: float = 0.0  # P(cue | not malignant, train split)
    p_eval_malignant: float = 0.0  # P(cue | malignant, val or test split)
    p_eval_other: float = 0.0  # P(cue | not malignant, val or test split)

    def prob(self, split: str, malignant: bool) -> float:
        if split == "train":
            return self.p_train_malignant if malignant else self.p_train_other
        return self.p_eval_malignant if malignant else self.p_eval_other


@dataclass(frozen=True)
class ViewKnobs:
    """What one view (CC or MLO) shows of the lesions of a breast."""

    obscure: float = 0.15  # P(a lesion is not drawn in this view): hidden by overlapping tissue / out of field
    contrast: float = 1.0  # multiplies every lesion's contrast (DN) in this view
    size: float = 1.0  # multiplies every lesion's size in this view
    cue: CueKnobs = field(default_factory=CueKnobs)
    # The imitation patch classifier (heatmaps) of this view.
    heatmap_miss: float = 0.15  # P(a visible lesion gives no blob)
    heatmap_fp: float = 0.5  # mean number of false-positive blobs per heatmap channel (Poisson)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    p_malignant: float = 0.2  # P(breast carries >= 1 malignant lesion); independent of benign
    p_benign: float = 0.2  # P(breast carries >= 1 benign lesion)
    p_second_lesion: float = 0.15  # P(a positive breast carries a second lesion of the same class)
    # How the two views' obscuration of one lesion is coupled: "independent" draws them separately;
    # "exclusive" draws them antithetically (one uniform u: CC visible if u < 1-obscure_cc, MLO visible if
    # u > obscure_mlo), which makes the overlap of "visible in CC" and "visible in MLO" as small as the
    # marginals allow: each view alone misses what the other sees.
    coupling: str = "independent"
    # Density categories A..D (BI-RADS style), drawn with these probabilities.
    density_probs: tuple[float, float, float, float] = (0.1, 0.4, 0.4, 0.1)
    p_mass_malignant: float = 0.65  # else a fine clustered calcification
    p_mass_benign: float = 0.6  # else coarse calcifications
    cc: ViewKnobs = field(default_factory=ViewKnobs)
    mlo: ViewKnobs = field(default_factory=ViewKnobs)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, val, test; by patient

    def view(self, name: str) -> ViewKnobs:
        return self.cc if name == "cc" else self.mlo


_BALANCED = Preset(
    name="balanced",
    description="Both views equally informative: each sees a lesion with prob 0.85, independently; no cue.",
    cc=ViewKnobs(obscure=0.15),
    mlo=ViewKnobs(obscure=0.15),
)

PRESETS: dict[str, Preset] = {
    "balanced": _BALANCED,
    # A sanity preset for smoke tests and first runs on a new machine: every lesion visible in both views,
    # large and bright, and a clean imitation patch classifier (no misses, no false positives). A small
    # network must reach a high AUC on it within a few epochs; if it does not, the pipeline is broken.
    "easy": replace(
        _BALANCED, name="easy",
        description="Sanity check: lesions always visible, large and bright in both views; clean heatmaps.",
        cc=ViewKnobs(obscure=0.0, contrast=1.6, size=1.4, heatmap_miss=0.0, heatmap_fp=0.0),
        mlo=ViewKnobs(obscure=0.0, contrast=1.6, size=1.4, heatmap_miss=0.0, heatmap_fp=0.0)),
    "cc-only": replace(
        _BALANCED, name="cc-only",
        description="Lesions are drawn in CC only (never obscured there) and never in MLO: MLO carries no label "
                    "information.",
        cc=ViewKnobs(obscure=0.0), mlo=ViewKnobs(obscure=1.0)),
    "mlo-only": replace(
        _BALANCED, name="mlo-only",
        description="Lesions are drawn in MLO only (never obscured there) and never in CC: CC carries no label "
                    "information.",
        cc=ViewKnobs(obscure=1.0), mlo=ViewKnobs(obscure=0.0)),
    "complementary": replace(
        _BALANCED, name="complementary",
        description="Each view alone sees a lesion with prob 0.55, and the two views' visibility is coupled "
                    "antithetically: together they see (almost) every lesion, each alone about half.",
        coupling="exclusive", cc=ViewKnobs(obscure=0.45), mlo=ViewKnobs(obscure=0.45)),
    # A constructed benchmark for the paper's observation (MLO learned faster, overfits earlier, generalises
    # worse than CC). It is NOT a claim about breast anatomy: MLO lesions are made large and bright (easy,
    # learned in few steps) but are hidden in 45% of breasts, and MLO carries a ring marker that flags most
    # malignant breasts in train only (a shortcut that stops working on val/test). CC lesions are smaller and
    # fainter (contrast x0.9, size x1.0 against MLO's x1.4, x1.35) but visible 85% of the time, so the CC
    # ceiling (oracle AUC) is the higher one. Checked once with a small 5-layer CNN on 3,000 breasts at 128x96
    # (image + heatmaps, GPU, 2 seeds): uni-view MLO test AUC ~0.77, its validation AUC flat from epoch ~3
    # (best epochs 1-2 in a first run with MLO contrast x1.5); uni-view CC ~0.86, best at epochs 14-23. Image only, that CNN learns MLO first (test ~0.67 at
    # epoch 20-33) while CC only starts rising at epoch ~35: the CC advantage needs longer training there.
    "paper": replace(
        _BALANCED, name="paper",
        description="Constructed to show the paper's pattern: MLO lesions larger and brighter but obscured 45% "
                    "of the time, plus an MLO ring marker tied to malignancy in train only; CC lesions subtler "
                    "but visible 85% of the time.",
        cc=ViewKnobs(obscure=0.15, contrast=0.9, size=1.0),
        mlo=ViewKnobs(obscure=0.45, contrast=1.4, size=1.35,
                      cue=CueKnobs(p_train_malignant=0.8, p_train_other=0.08,
                                   p_eval_malignant=0.1, p_eval_other=0.1))),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
