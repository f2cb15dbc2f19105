"""``clifer imagine``: one photo in, a PNG grid of the face's seven imagined expressions out.

The face is found and eye-level aligned by the node's own helper
(:func:`clifer_core.faces.crop_largest_face`), then imagined by a model file
(default: the packaged one). A photo without a face is a clear error and
writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CROP_SIDE = 96
"""The node's crop size; the model resizes the crop to its own side."""


def imagine_grid(image_rgb: np.ndarray, out: str | Path, model: str | Path | None = None, imaginer=None,
                 own_expression: str | None = None) -> Path:
    """Detect and align the largest face of ``image_rgb``, imagine its 7 expressions, write the grid PNG to ``out``.

    ``own_expression`` is what the face shows (the start of an edit or a warp); by default a trained model reads
    it, and for a landmark warp (which cannot) the packaged FER2013 model does.
    Raises ``ValueError`` when no face is found or the expression is unknown.
    """
    from clifer_core.faces import crop_largest_face
    from clifer_core.imagination.imaginer import Imaginer, load_imagination
    from clifer_core.imagination.training import save_grid
    from clifer_core.labels import EXPRESSIONS

    crop = crop_largest_face(np.asarray(image_rgb), size=CROP_SIDE)
    if crop is None:
        raise ValueError("no face found in the image")
    imaginer = imaginer or load_imagination(model)
    if isinstance(imaginer, Imaginer):
        kind = imaginer.config.architecture
    else:
        kind = imaginer.metadata.get("architecture", "landmark_warp")
        if own_expression is None:
            from clifer_core.features import Fer2013Model

            own_expression = EXPRESSIONS[int(np.argmax(Fer2013Model().predict_proba(crop[None])[0]))]
    return save_grid(imaginer, crop[None], out, title=f"imagined ({kind} model)",
                     own_expressions=None if own_expression is None else [own_expression])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True, help="a photo with a face (any format OpenCV/PIL reads)")
    parser.add_argument("--out", type=Path, required=True, help="grid PNG to write")
    parser.add_argument("--model", type=Path, default=None, help="imagination model file (default: the packaged one)")
    parser.add_argument("--own", default=None, help="the expression the photo shows (default: the model's reading)")


def run(args: argparse.Namespace) -> int:
    from clifer_core.data.datasets import load_rgb

    if not args.image.is_file():
        print(f"clifer imagine: {args.image}: no such file", file=sys.stderr)
        return 2
    try:
        path = imagine_grid(load_rgb(args.image), args.out, args.model, own_expression=args.own)
    except ValueError as error:
        print(f"clifer imagine: {args.image}: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
