"""Imagination: a conditional adversarial autoencoder that imagines a face's other expressions.

``networks`` builds E, G, D_img, D_z and C (and D_cls for the edit
architectures, whose imagined face is an edit of the input); ``training``
trains them (``clifer train-imagination``); ``imaginer`` is the runtime API
(:class:`Imaginer`: encode, decode, reencode, imagine); ``grid`` draws a
photo's imagined expressions (``clifer imagine``); ``clifer_core.evaluation.imagination``
measures models on held-out people (``clifer evaluate-imagination``).
``mean_change`` and ``landmark_warp`` imagine without a network (the training
people's mean grey or landmark change applied to the face); a fitted warp is
saved like a model (``clifer train-imagination --architecture landmark_warp``)
and ``imaginer.load_imagination`` reads either kind of file.
``Imaginer`` is imported on first use, so importing the package stays cheap.
"""

from __future__ import annotations

LANDMARK_WARP_KIND = "clifer.landmark_warp"
"""The state-file kind of a saved landmark warp (here, so telling files apart needs no TensorFlow)."""


def is_landmark_warp(path) -> bool:
    """Whether the imagination file at ``path`` holds a landmark warp (which imagines from each face's own
    expression and has no latent code); :class:`~clifer_core.persistence.StateFileError` for a bad file."""
    from clifer_core.persistence import state_manifest

    return state_manifest(path).get("kind") == LANDMARK_WARP_KIND


def __getattr__(name: str):
    if name == "Imaginer":
        from clifer_core.imagination.imaginer import Imaginer

        return Imaginer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Imaginer"]
