"""Canonical expression label set shared by every model, memory and message.

The order is the CAAE conditioning order of the original code (docs/design.md §2.1), which
is also the output order of the packaged FER2013 model, so indices agree
everywhere. Names are the lower-case REP-155 ``hri_msgs/Expression`` strings.
"""

from __future__ import annotations

EXPRESSIONS: tuple[str, ...] = ("angry", "disgusted", "scared", "happy", "sad", "surprised", "neutral")
"""The 7 expressions in CAAE / FER2013 order."""

GDM_EXPRESSIONS: tuple[str, ...] = ("angry", "scared", "happy", "sad", "surprised", "neutral")
"""The 6 classes the paper's memories learn (disgust skipped, docs/design.md §2.1)."""

_ALIASES = {
    "anger": "angry", "angry": "angry", "an": "angry",
    "disgust": "disgusted", "disgusted": "disgusted", "di": "disgusted",
    "fear": "scared", "scared": "scared", "afraid": "scared", "fearful": "scared", "fe": "scared",
    "happy": "happy", "happiness": "happy", "joy": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprised", "surprised": "surprised", "su": "surprised",
    "neutral": "neutral", "normal": "neutral", "calm": "neutral", "ne": "neutral",
}

# Valence/arousal of the prototypical basic emotions (Russell's circumplex,
# approximate positions), used to fill hri_msgs/Expression's dimensional fields
# from a categorical distribution.
_VALENCE_AROUSAL = {
    "angry": (-0.51, 0.59), "disgusted": (-0.60, 0.35), "scared": (-0.64, 0.60),
    "happy": (0.81, 0.51), "sad": (-0.63, -0.27), "surprised": (0.40, 0.67), "neutral": (0.0, 0.0),
}


def canonical(name: str) -> str:
    """Map a dataset's label spelling (``Anger``, ``fear``, ``happiness``...) to ours.

    Raises ``ValueError`` for a label that is not one of the 7 expressions.
    """
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown expression label {name!r}; known: {', '.join(EXPRESSIONS)}")
    return _ALIASES[key]


def index_of(name: str) -> int:
    """Index of an expression (any accepted spelling) in :data:`EXPRESSIONS`."""
    return EXPRESSIONS.index(canonical(name))


def valence_arousal(labels, probabilities) -> tuple[float, float]:
    """Expected valence and arousal of a categorical distribution over ``labels``."""
    valence = arousal = 0.0
    for label, p in zip(labels, probabilities):
        v, a = _VALENCE_AROUSAL[canonical(label)]
        valence += float(p) * v
        arousal += float(p) * a
    return valence, arousal
