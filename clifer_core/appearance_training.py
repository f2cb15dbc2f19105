"""Fine-tune the packaged FER2013 mini-Xception into the population model's appearance network.

The FER2013 model reads web faces; on posed faces of people it never saw it
confuses anger, disgust and fear (macro-F1 0.49 on Taiwanese, 0.55 on CK+48,
docs/features.md). A few epochs on FER2013's 34,050 faces and the posed
datasets' faces, every dataset and class weighted equally (so disgust, 1.4 %
of FER2013, counts as much as happiness), with flips and small shifts, keep
its architecture and input (64x64 grey in [-1, 1]) and move its decision
towards posed faces. The weights are plain arrays in the population model's
file (:mod:`clifer_core.population`); training uses ``GradientTape`` with one
optimiser.

TensorFlow 2.21's oneDNN kernels corrupt memory in the separable
convolutions' weight gradients on this CPU (a segfault or "munmap_chunk():
invalid pointer" on the first step), so training needs
``TF_ENABLE_ONEDNN_OPTS=0`` before TensorFlow is imported:
:func:`require_trainable_tensorflow` sets it, or refuses when it is too late.
Inference is unaffected.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from clifer_core.features import FER_INPUT_SIZE

DEFAULT_EPOCHS = 1
DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_BATCH_SIZE = 128
MAX_SHIFT = 4
"""Largest random shift in pixels (of 64) applied to a training face in each direction."""


def require_trainable_tensorflow() -> None:
    """Turn oneDNN off for this process, or raise when TensorFlow is already imported with it on."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return
    if "tensorflow" in sys.modules:
        raise RuntimeError("fine-tuning the expression network needs TF_ENABLE_ONEDNN_OPTS=0 before TensorFlow is "
                           "imported (TensorFlow 2.21's oneDNN kernels crash in its separable convolutions' "
                           "gradients); run it in its own process, e.g. `clifer train-population --appearance-epochs N`")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


def grey_faces(crops: np.ndarray) -> np.ndarray:
    """RGB or grey uint8 crops ``(N, H, W[, 3])`` -> ``(N, 64, 64)`` uint8 grey network faces."""
    from clifer_core.features import to_fer_input

    return np.round((to_fer_input(crops)[..., 0] / 2.0 + 0.5) * 255.0).astype(np.uint8)


def _network_input(grey: np.ndarray) -> np.ndarray:
    return ((grey.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]


def augmented(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A batch with half its faces mirrored and all shifted by one random offset of up to :data:`MAX_SHIFT` pixels."""
    batch = grey.copy()
    mirrored = rng.random(len(batch)) < 0.5
    batch[mirrored] = batch[mirrored][:, :, ::-1]
    dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, 2)
    return np.ascontiguousarray(np.roll(batch, (int(dy), int(dx)), axis=(1, 2)))


def fine_tune(faces: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray, epochs: int = DEFAULT_EPOCHS,
              learning_rate: float = DEFAULT_LEARNING_RATE, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
              progress=None) -> list[np.ndarray]:
    """The FER2013 network's weights after ``epochs`` of weighted cross-entropy on ``faces``.

    ``faces``: ``(N, 64, 64)`` uint8 grey (:func:`grey_faces`); ``labels``:
    indices into :data:`~clifer_core.labels.EXPRESSIONS`; ``sample_weight``:
    one weight per face (normalised here). ``progress`` gets one update per batch.
    """
    faces = np.asarray(faces)
    labels = np.asarray(labels, np.int64)
    weight = np.asarray(sample_weight, np.float64)
    if faces.ndim != 3 or faces.shape[1:] != (FER_INPUT_SIZE, FER_INPUT_SIZE) or faces.dtype != np.uint8:
        raise ValueError(f"expected (N, {FER_INPUT_SIZE}, {FER_INPUT_SIZE}) uint8 grey faces, got {faces.shape} "
                         f"{faces.dtype}")
    if not (len(faces) == len(labels) == len(weight)) or len(faces) < batch_size:
        raise ValueError(f"need at least one batch ({batch_size}) of faces with one label and weight each, got "
                         f"{len(faces)} faces, {len(labels)} labels, {len(weight)} weights")
    if epochs < 1 or not np.all(np.isfinite(weight)) or np.any(weight < 0) or weight.sum() <= 0:
        raise ValueError("epochs must be >= 1 and sample weights finite, non-negative and not all zero")
    require_trainable_tensorflow()
    import keras
    import tensorflow as tf

    from clifer_core.features import fer_model_path

    keras.utils.set_random_seed(seed)
    network = keras.models.load_model(fer_model_path(), compile=False)
    optimiser = keras.optimizers.Adam(learning_rate)
    weight = (weight / weight.mean()).astype(np.float32)

    @tf.function
    def step(x, y, w):
        with tf.GradientTape() as tape:
            probabilities = network(x, training=True)
            loss = tf.reduce_mean(w * keras.losses.sparse_categorical_crossentropy(y, probabilities))
        gradients = tape.gradient(loss, network.trainable_variables)
        optimiser.apply_gradients(zip(gradients, network.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(faces))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            step(tf.constant(_network_input(augmented(faces[index], rng))), tf.constant(labels[index]),
                 tf.constant(weight[index]))
            if progress is not None:
                progress.update()
    return [np.asarray(w) for w in network.get_weights()]


def batches_per_run(faces: int, epochs: int, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """How many progress updates :func:`fine_tune` makes."""
    return epochs * (faces // batch_size)
