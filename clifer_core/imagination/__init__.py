"""Imagination: a conditional adversarial autoencoder that imagines a face's other expressions.

``networks`` builds E, G, D_img, D_z and C; ``training`` trains them
(``clifer train-imagination``); ``imaginer`` is the runtime API
(:class:`Imaginer`: encode, decode, reencode, imagine); ``evaluation``
measures a model on held-out people (``clifer evaluate-imagination``).
``Imaginer`` is imported on first use, so importing the package stays cheap.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "Imaginer":
        from clifer_core.imagination.imaginer import Imaginer

        return Imaginer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Imaginer"]
