"""Runtime API of the imagination model: encode faces, decode latents, imagine expressions.

Used by the learner (latent-space imagination: decode memory prototypes to
each expression and re-encode them, docs/design.md §4.2) and by the node. Everything is
batched and runs as compiled TensorFlow graphs; faces are RGB uint8 crops of
any size, resized here to the model's side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clifer_core.imagination.networks import ImaginationConfig, Networks, named_weights, set_named_weights
from clifer_core.labels import EXPRESSIONS, canonical
from clifer_core.persistence import load_state, save_state

MODEL_KIND = "clifer.imagination"
MODEL_VERSION = 3
"""2: weights stored by ``network/layer/variable`` name (1 stored them by position, which a reordered layer broke);
3: the config names its architecture (a version-2 file is a ``"caae"`` model and still loads)."""
READABLE_VERSIONS = (2, 3)
RUNTIME_NETWORKS = ("encoder", "generator", "classifier")
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "default" / "imagination.npz"
MIN_FACE_SIDE = 16
BATCH_SIZE = 256
PRECISIONS = ("float32", "float16")


def faces_to_model_input(faces, image_size: int) -> np.ndarray:
    """RGB uint8 crops ``(N, H, W, 3)`` (or a sequence of ``(H, W, 3)``) -> ``(N, S, S, 3)`` float32 in [-1, 1].

    Raises ``ValueError`` naming the problem: wrong rank, channel count,
    dtype, or a side under ``MIN_FACE_SIDE`` pixels.
    """
    import cv2

    if isinstance(faces, np.ndarray):
        crops = [faces[i] for i in range(len(faces))] if faces.ndim == 4 else None
        if crops is None:
            raise ValueError(f"expected a batch of RGB face crops (N, H, W, 3), got an array of shape {faces.shape}")
    else:
        crops = [np.asarray(face) for face in faces]
    batch = np.empty((len(crops), image_size, image_size, 3), np.float32)
    for i, crop in enumerate(crops):
        if crop.ndim != 3 or crop.shape[-1] != 3:
            raise ValueError(f"face {i}: expected an RGB crop (H, W, 3), got shape {crop.shape}; "
                             "convert grey or RGBA images to RGB first")
        if crop.dtype != np.uint8:
            raise ValueError(f"face {i}: expected uint8 pixels in 0..255, got dtype {crop.dtype}")
        if min(crop.shape[:2]) < MIN_FACE_SIDE:
            raise ValueError(f"face {i}: crop of {crop.shape[1]}x{crop.shape[0]} pixels is too small "
                             f"(each side must be at least {MIN_FACE_SIDE})")
        if crop.shape[:2] != (image_size, image_size):
            shrinking = min(crop.shape[:2]) > image_size
            crop = cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        batch[i] = crop
    return batch / 127.5 - 1.0


def model_output_to_faces(images) -> np.ndarray:
    """Generator output in [-1, 1] -> RGB uint8."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def expression_indices(expressions, count: int | None = None) -> np.ndarray:
    """Names (any accepted spelling) or indices -> int array; one value is broadcast to ``count``.

    Raises ``ValueError`` for an unknown name, an index outside 0..6 or a
    length that does not match ``count``.
    """
    values = [expressions] if isinstance(expressions, (str, int, np.integer)) else list(expressions)
    indices = []
    for value in values:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= int(value) < len(EXPRESSIONS):
                raise ValueError(f"expression index {value} out of range 0..{len(EXPRESSIONS) - 1}")
            indices.append(int(value))
        else:
            indices.append(EXPRESSIONS.index(canonical(value)))
    indices = np.asarray(indices, np.int32)
    if count is not None and len(indices) == 1:
        return np.repeat(indices, count)
    if count is not None and len(indices) != count:
        raise ValueError(f"got {len(indices)} expressions for {count} inputs; give one, or one per input")
    return indices


class Imaginer:
    """Encoder, generator and latent expression classifier of a trained model.

    ``imagine`` returns the 7 expressions in :data:`clifer_core.labels.EXPRESSIONS`
    order (angry, disgusted, scared, happy, sad, surprised, neutral) unless
    told otherwise. With an edit model (``"mask"`` or ``"residual"``),
    imagining from faces edits each face (:mod:`~clifer_core.imagination.networks`);
    a residual edit starts from the face's own expression, given or read by
    the latent classifier C, and adds ``edit_strength`` times G's change
    (chosen after training, saved with the model). Decoding a latent code (no face to edit) returns
    G's drawn face, as the CAAE does.
    """

    expressions = EXPRESSIONS

    def __init__(self, networks: Networks, metadata: dict | None = None, edit_strength: float = 1.0):
        import tensorflow as tf

        from clifer_core.imagination.networks import compose_mask, compose_residual

        self.networks = networks
        self.config = networks.config
        self.metadata = dict(metadata or {})
        if not 0.0 < edit_strength <= 10.0:
            raise ValueError(f"edit_strength must be in (0, 10], got {edit_strength}")
        self.edit_strength = float(edit_strength)
        strength = self.edit_strength
        encoder, generator, classifier = networks.encoder, networks.generator, networks.classifier
        count = len(EXPRESSIONS)
        masked = self.config.architecture == "mask"

        def drawn(z, e):
            output = generator([z, tf.one_hot(e, count)], training=False)
            return output[0] if masked else output

        def edit(x, z, e, own):
            if masked:
                face, mask = generator([z, tf.one_hot(e, count)], training=False)
                return compose_mask(x, face, mask)
            return compose_residual(x, drawn(z, e), drawn(z, own), strength)

        self._encode = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
        self._decode = tf.function(drawn, reduce_retracing=True)
        self._edit = tf.function(edit, reduce_retracing=True)
        self._reencode = tf.function(lambda z, e: encoder(drawn(z, e), training=False), reduce_retracing=True)
        self._classify = tf.function(lambda z: tf.nn.softmax(classifier(z, training=False)), reduce_retracing=True)

    def with_strength(self, edit_strength: float) -> "Imaginer":
        """The same networks with another ``edit_strength`` (residual edits)."""
        return Imaginer(self.networks, self.metadata, edit_strength)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "Imaginer":
        """Load a saved model; ``None`` loads the default shipped inside the package."""
        path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        manifest, arrays = load_state(path, MODEL_KIND, READABLE_VERSIONS)
        try:
            config = ImaginationConfig(**manifest["config"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path}: model manifest has no valid config ({error})") from error
        networks = Networks.build(config)
        for name in RUNTIME_NETWORKS:
            prefix = f"{name}/"
            set_named_weights(getattr(networks, name),
                              {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)},
                              source=str(path))
        return cls(networks, manifest.get("metadata"), manifest.get("edit_strength", 1.0))

    def save(self, path: str | os.PathLike, precision: str = "float32") -> Path:
        """Atomically save the runtime networks (format version 3); ``float16`` halves the file (loads back as float32)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        arrays = {}
        for name in RUNTIME_NETWORKS:
            for key, weight in named_weights(getattr(self.networks, name)).items():
                arrays[f"{name}/{key}"] = weight.astype(precision)
        manifest = {"config": self.config.to_dict(), "expressions": list(EXPRESSIONS),
                    "precision": precision, "metadata": self.metadata, "edit_strength": self.edit_strength}
        return save_state(path, MODEL_KIND, MODEL_VERSION, manifest, arrays)

    def _batched(self, function, *arrays) -> np.ndarray:
        outputs = [np.asarray(function(*(a[start:start + BATCH_SIZE] for a in arrays)))
                   for start in range(0, len(arrays[0]), BATCH_SIZE)]
        return np.concatenate(outputs) if outputs else None

    def _check_latents(self, z) -> np.ndarray:
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latent codes of shape (N, {self.latent_dim}), got {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ValueError("latent codes contain NaN or infinite values")
        return z

    def encode(self, faces) -> np.ndarray:
        """RGB uint8 crops ``(N, H, W, 3)`` -> latent codes ``(N, d_z)`` in (-1, 1)."""
        batch = faces_to_model_input(faces, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, self.latent_dim), np.float32)
        return self._batched(self._encode, batch)

    def decode(self, z, expressions) -> np.ndarray:
        """Latent codes ``(N, d_z)`` and one expression (or one per code) -> faces ``(N, S, S, 3)`` uint8 RGB."""
        z = self._check_latents(z)
        indices = expression_indices(expressions, len(z))
        if len(z) == 0:
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        return model_output_to_faces(self._batched(self._decode, z, indices))

    def reencode(self, z, expressions) -> np.ndarray:
        """E(G(z, expression)) without leaving the graph: the latent of each imagined face ``(N, d_z)``."""
        z = self._check_latents(z)
        indices = expression_indices(expressions, len(z))
        if len(z) == 0:
            return np.zeros((0, self.latent_dim), np.float32)
        return self._batched(self._reencode, z, indices)

    def classify_latents(self, z) -> np.ndarray:
        """Expression probabilities ``(N, 7)`` read from latent codes by the auxiliary classifier C."""
        z = self._check_latents(z)
        if len(z) == 0:
            return np.zeros((0, len(EXPRESSIONS)), np.float32)
        return self._batched(self._classify, z)

    def imagine(self, faces_or_z, expressions: Sequence | None = None,
                own_expressions=None) -> tuple[np.ndarray, np.ndarray]:
        """Imagine each input (faces or latent codes) showing each expression.

        Returns ``faces (N, K, S, S, 3)`` uint8 and ``z (N, K, d_z)``, the
        re-encoded latent of each imagined face, with K expressions in the
        order given (default: all 7, in ``EXPRESSIONS`` order). A float
        ndarray of shape ``(N, d_z)`` is taken as latent codes.
        ``own_expressions`` (one, or one per face) is what each face shows, the
        start of a residual edit; by default the latent classifier's reading.
        """
        is_latent = isinstance(faces_or_z, np.ndarray) and faces_or_z.dtype.kind == "f" and faces_or_z.ndim == 2
        targets = expression_indices(EXPRESSIONS if expressions is None else expressions)
        kinds = len(targets)
        if is_latent:
            faces_or_z = self._check_latents(faces_or_z)
        sources = None if is_latent else faces_to_model_input(faces_or_z, self.image_size)
        count = len(faces_or_z) if is_latent else len(sources)
        if count == 0:
            return (np.zeros((0, kinds, self.image_size, self.image_size, 3), np.uint8),
                    np.zeros((0, kinds, self.latent_dim), np.float32))
        z = faces_or_z if is_latent else self._batched(self._encode, sources)
        tiled_z, tiled_targets = np.repeat(z, kinds, axis=0), np.tile(targets, count)
        if is_latent or self.config.architecture == "caae":
            images = self._batched(self._decode, tiled_z, tiled_targets)
        else:
            own = (self._batched(self._classify, z).argmax(axis=1).astype(np.int32) if own_expressions is None
                   else expression_indices(own_expressions, count))
            images = self._batched(self._edit, np.repeat(sources, kinds, axis=0), tiled_z, tiled_targets,
                                   np.repeat(own, kinds))
        latents = self._batched(self._encode, images)
        faces = model_output_to_faces(images).reshape(count, kinds, self.image_size, self.image_size, 3)
        return faces, latents.reshape(count, kinds, self.latent_dim)


def load_imagination(path: str | os.PathLike | None = None):
    """The imagination saved at ``path`` (None: the packaged one), whichever kind the file holds: a trained model
    (:class:`Imaginer`) or a landmark warp (:class:`~clifer_core.imagination.landmark_warp.LandmarkWarpImaginer`)."""
    from clifer_core.imagination import is_landmark_warp
    from clifer_core.imagination.landmark_warp import LandmarkWarpImaginer

    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if is_landmark_warp(path):
        return LandmarkWarpImaginer.load(path)
    return Imaginer.load(path)
