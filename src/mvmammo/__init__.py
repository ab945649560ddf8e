"""mvmammo: two-view (CC + MLO) deep networks for breast cancer screening."""

__version__ = "0.1.0"

VIEWS = ("cc", "mlo")
LABELS = ("benign", "malignant")
