"""Laterality and view vocabularies: every spelling a source uses, mapped to one code.

Sides become ``L`` / ``R`` (``B`` = both, only where a source uses it for findings, e.g. EMBED).
Views become upper-case ACR codes (CC, MLO, ML, LM, LMO, XCCL, XCCM, AT, FB, SIO, CV). Unknown strings
raise :class:`VocabError` naming the value, so a typo never silently turns into a view.
"""
from __future__ import annotations

import re


class VocabError(ValueError):
    """A laterality or view string we do not know."""


_SIDES = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R", "B": "B", "BOTH": "B", "BILATERAL": "B"}

# Keys are the spelling with case, spaces, hyphens and underscores removed.
_VIEWS = {
    "CC": "CC", "CRANIOCAUDAL": "CC", "CRANIALCAUDAL": "CC",
    "MLO": "MLO", "MEDIOLATERALOBLIQUE": "MLO", "OBLIQUE": "MLO",
    "ML": "ML", "MEDIOLATERAL": "ML",
    "LM": "LM", "LATEROMEDIAL": "LM", "LATERALMEDIAL": "LM",
    "LMO": "LMO", "LATEROMEDIALOBLIQUE": "LMO",
    "XCCL": "XCCL", "XCC": "XCCL", "EXAGGERATEDCRANIOCAUDAL": "XCCL", "EXAGGERATEDCRANIOCAUDALLATERAL": "XCCL",
    "XCCM": "XCCM", "EXAGGERATEDCRANIOCAUDALMEDIAL": "XCCM",
    "AT": "AT", "AXILLARYTAIL": "AT",
    "FB": "FB", "CAUDOCRANIAL": "FB", "FROMBELOW": "FB",
    "SIO": "SIO", "SUPEROLATERALTOINFEROMEDIALOBLIQUE": "SIO",
    "CV": "CV", "CLEAVAGE": "CV",
}

# SNOMED-RT codes of the two views we use (DICOM CID 4014), for ViewCodeSequence without a CodeMeaning.
VIEW_CODE_VALUES = {"R-10242": "CC", "R-10226": "MLO", "R-10224": "ML"}

# Which view codes may fill each slot of a breast, best first. Everything else (LM, LMO, AT, spot
# views...) is reported and not used: the models are trained on CC and MLO only.
SLOT_VIEWS = {"cc": ("CC", "XCCL"), "mlo": ("MLO", "ML")}


def _key(value) -> str:
    return re.sub(r"[\s_\-]+", "", str(value)).upper()


def normalise_side(value, allow_both: bool = False) -> str:
    """'LEFT', 'l', 'R' ... -> 'L' / 'R' ('B' only with ``allow_both``); unknown -> VocabError."""
    side = _SIDES.get(_key(value))
    if side is None or (side == "B" and not allow_both):
        allowed = "L, R, LEFT, RIGHT" + (", B, BOTH" if allow_both else "")
        raise VocabError(f"unknown laterality {value!r} (expected one of {allowed})")
    return side


def normalise_view(value) -> str:
    """'cranio-caudal', 'cc', 'MLO' ... -> 'CC' / 'MLO' / ...; unknown -> VocabError."""
    view = _VIEWS.get(_key(value))
    if view is None:
        raise VocabError(f"unknown view {value!r} (known codes: {', '.join(sorted(set(_VIEWS.values())))})")
    return view


def is_view_string(value) -> bool:
    return _key(value) in _VIEWS


def slot_of(view: str) -> tuple[str, int] | None:
    """('cc'|'mlo', preference rank) for a normalised view code, None if the view fills no slot."""
    for slot, codes in SLOT_VIEWS.items():
        if view in codes:
            return slot, codes.index(view)
    return None
