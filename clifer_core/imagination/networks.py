"""The five networks of the conditional adversarial autoencoder (docs/design.md §2.1–2.2).

E maps a face to a latent code z in (-1, 1)^d_z; G maps (z, expression) back
to a face; D_img judges (face, expression) pairs; D_z judges latent codes
against the uniform prior; C reads the expression from z, which is what makes
z useful to the memories downstream. All are functional Keras models built
from one :class:`ImaginationConfig`, every layer named (weights are saved and
loaded by ``layer/variable`` name, never by position, see :func:`named_weights`), so image size and widths are settings:
the original model is ``ImaginationConfig(image_size=96, width=64)``; the
default is 64×64 with half the channels (about 5× cheaper on a CPU).

Three architectures (``ImaginationConfig.architecture``, docs/imagination.md):
``"caae"`` decodes every pixel from z (the paper's model). The two edit
architectures make the imagined face an edit of the input, so what the
expression does not move stays the person's own pixels: ``"mask"`` gives G a
second head, an edit mask M in [0, 1], and imagines ``(1 − M)·x + M·G(z, y)``
(GANimation's attention, Pumarola et al. 2018, with A = 1 − M);
``"residual"`` adds G's expression change to the input,
``x + G(z, y) − G(z, own)``. G's face head is the same in all three, so
latent-space imagination (decode/re-encode a code without an input face)
works with any of them.

Expressions enter as signed one-hot vectors (2·onehot − 1, docs/design.md §2.2), tiled
⌊C/7⌋ times: next to z for G, and as constant feature maps after D_img's
first three blocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import layers

from clifer_core.labels import EXPRESSIONS

NUM_EXPRESSIONS = len(EXPRESSIONS)
DOWNSAMPLINGS = 4
KERNEL = 5
ARCHITECTURES = ("caae", "mask", "residual")
EDIT_ARCHITECTURES = ("mask", "residual")
MASK_BIAS = -2.0
"""Initial edit-mask logit: a fresh mask model redraws about 12 % of each pixel, close to returning the input."""


@dataclass(frozen=True)
class ImaginationConfig:
    """Shape of the model: image side, base channel width and latent size.

    ``width`` is E's first conv width; E doubles it three times (the original's
    64-128-256-512 is ``width=64``), G mirrors E, D_img uses half of E's
    widths and the dense layers use ``16·width`` units (1024 at ``width=64``).
    ``architecture`` is ``"caae"`` (G draws the face), ``"mask"`` (G also
    draws an edit mask, :func:`compose_mask`) or ``"residual"`` (G's change
    between two expressions is added to the input, :func:`compose_residual`).
    """

    image_size: int = 64
    width: int = 32
    latent_dim: int = 50
    architecture: str = "caae"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        step = 2**DOWNSAMPLINGS
        if self.image_size < step or self.image_size % step:
            raise ValueError(f"image_size must be a positive multiple of {step}, got {self.image_size}")
        if self.width < 2 or self.width % 2:
            raise ValueError(f"width must be an even number >= 2, got {self.width}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_init():
    return keras.initializers.RandomNormal(stddev=0.025)


def signed_condition(expression_one_hot, repeats: int):
    """Tile a signed (±1) one-hot expression ``repeats`` times along the last axis."""
    signed = 2.0 * expression_one_hot - 1.0
    return keras.ops.tile(signed, [1, repeats])


class SpatialCondition(layers.Layer):
    """Append ⌊C/7⌋ tiled ±1 expression maps to a feature map with C channels (docs/design.md §2.2)."""

    def call(self, feature_map, expression_one_hot):
        channels = feature_map.shape[-1]
        repeats = max(1, channels // NUM_EXPRESSIONS)
        tiled = signed_condition(expression_one_hot, repeats)[:, None, None, :]
        shape = keras.ops.shape(feature_map)
        maps = keras.ops.broadcast_to(tiled, (shape[0], shape[1], shape[2], tiled.shape[-1]))
        return keras.ops.concatenate([feature_map, maps], axis=-1)


class LatentCondition(layers.Layer):
    """Concatenate z with the expression tiled ⌊d_z/7⌋ times (docs/design.md §2.2)."""

    def call(self, latent, expression_one_hot):
        repeats = max(1, latent.shape[-1] // NUM_EXPRESSIONS)
        return keras.ops.concatenate([latent, signed_condition(expression_one_hot, repeats)], axis=-1)


def build_encoder(config: ImaginationConfig) -> keras.Model:
    """E: face in [-1, 1] -> z in (-1, 1)^d_z (four 5×5 stride-2 convs, ReLU, no BN)."""
    image = keras.Input((config.image_size, config.image_size, 3), name="face")
    x = image
    for level in range(DOWNSAMPLINGS):
        x = layers.Conv2D(config.width * 2**level, KERNEL, strides=2, padding="same", activation="relu",
                          kernel_initializer=_conv_init(), name=f"conv{level + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(16 * config.width, activation="relu", kernel_initializer="glorot_normal", name="dense")(x)
    z = layers.Dense(config.latent_dim, activation="tanh", name="z")(x)
    return keras.Model(image, z, name="encoder")


def build_generator(config: ImaginationConfig) -> keras.Model:
    """G: (z, one-hot expression) -> face in [-1, 1] (dense, then four 5×5 stride-2 transposed convs).

    With ``architecture="mask"`` G returns ``[face, mask]``: the mask in [0, 1]
    (one channel, sigmoid) says how much of each input pixel the face replaces.
    """
    latent = keras.Input((config.latent_dim,), name="z")
    expression = keras.Input((NUM_EXPRESSIONS,), name="expression")
    side = config.image_size // 2**DOWNSAMPLINGS
    top = config.width * 2 ** (DOWNSAMPLINGS - 1)
    x = LatentCondition(name="condition")(latent, expression)
    x = layers.Dense(side * side * top, activation="relu", kernel_initializer=_conv_init(), name="dense")(x)
    x = layers.Reshape((side, side, top), name="reshape")(x)
    for level in range(DOWNSAMPLINGS):
        channels = max(1, top // 2 ** (level + 1))
        x = layers.Conv2DTranspose(channels, KERNEL, strides=2, padding="same", activation="relu",
                                   kernel_initializer=_conv_init(), name=f"deconv{level + 1}")(x)
    face = layers.Conv2DTranspose(3, KERNEL, strides=1, padding="same", activation="tanh",
                                  kernel_initializer=_conv_init(), name="face")(x)
    if config.architecture != "mask":
        return keras.Model([latent, expression], face, name="generator")
    mask = layers.Conv2DTranspose(1, KERNEL, strides=1, padding="same", activation="sigmoid",
                                  kernel_initializer=_conv_init(),
                                  bias_initializer=keras.initializers.Constant(MASK_BIAS), name="mask")(x)
    return keras.Model([latent, expression], [face, mask], name="generator")


def _grey_where_source_is_grey(source, image):
    """``image`` with its luminance in every channel for each sample whose ``source`` has three equal channels."""
    luminance = keras.ops.sum(image * keras.ops.convert_to_tensor([0.299, 0.587, 0.114], image.dtype), axis=-1,
                              keepdims=True)
    spread = keras.ops.max(keras.ops.max(source, axis=-1) - keras.ops.min(source, axis=-1), axis=(1, 2))
    grey = keras.ops.cast(spread < 1e-3, image.dtype)[:, None, None, None]
    return grey * keras.ops.broadcast_to(luminance, keras.ops.shape(image)) + (1.0 - grey) * image


def compose_mask(source, drawn, mask):
    """The edit ``(1 − mask)·source + mask·drawn``; a grey source keeps a grey result.

    ``source`` and ``drawn`` are faces in [-1, 1] ``(N, S, S, 3)``, ``mask``
    ``(N, S, S, 1)`` in [0, 1]. A source whose three channels are equal (CK+,
    Yale, FER2013) gets the drawn face's luminance, so no colour is invented
    on a grey photo. A zero mask returns the source exactly.
    """
    return (1.0 - mask) * source + mask * _grey_where_source_is_grey(source, drawn)


def compose_residual(source, target_face, own_face, strength: float = 1.0):
    """The edit ``source + strength·(target_face − own_face)``, clipped to [-1, 1]; a grey source gets a grey change.

    G's two drawings of one code differ only by the expression, so their
    difference is the expression's change without the identity G cannot
    draw; asked for the face's own expression it returns the source exactly.
    ``strength`` scales the change at run time (trained with 1).
    """
    change = _grey_where_source_is_grey(source, target_face - own_face)
    return keras.ops.clip(source + strength * change, -1.0, 1.0)


def build_image_discriminator(config: ImaginationConfig) -> keras.Model:
    """D_img: (face, one-hot expression) -> logit of "a real face showing this expression"."""
    image = keras.Input((config.image_size, config.image_size, 3), name="face")
    expression = keras.Input((NUM_EXPRESSIONS,), name="expression")
    x = image
    for level in range(DOWNSAMPLINGS):
        x = layers.Conv2D(config.width // 2 * 2**level, KERNEL, strides=2, padding="same",
                          kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.025), name=f"conv{level + 1}")(x)
        x = layers.BatchNormalization(scale=False, name=f"bn{level + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"leaky{level + 1}")(x)
        if level < DOWNSAMPLINGS - 1:
            x = SpatialCondition(name=f"condition{level + 1}")(x, expression)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(16 * config.width, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02), name="dense")(x)
    x = layers.LeakyReLU(0.2, name="leaky_dense")(x)
    logit = layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.025), name="logit")(x)
    return keras.Model([image, expression], logit, name="image_discriminator")


def build_latent_discriminator(config: ImaginationConfig) -> keras.Model:
    """D_z: z -> logit of "drawn from the uniform prior" (64-32-16, ReLU then BN)."""
    latent = keras.Input((config.latent_dim,), name="z")
    x = latent
    for units in (64, 32, 16):
        x = layers.Dense(units, activation="relu", name=f"dense{units}")(x)
        x = layers.BatchNormalization(scale=False, name=f"bn{units}")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(latent, logit, name="latent_discriminator")


def build_classifier(config: ImaginationConfig) -> keras.Model:
    """C: z -> expression logits (64-BN-32-BN-16, docs/design.md §2.1)."""
    latent = keras.Input((config.latent_dim,), name="z")
    x = layers.Dense(64, activation="relu", name="dense64")(latent)
    x = layers.BatchNormalization(name="bn64")(x)
    x = layers.Dense(32, activation="relu", name="dense32")(x)
    x = layers.BatchNormalization(name="bn32")(x)
    x = layers.Dense(16, activation="relu", name="dense16")(x)
    logits = layers.Dense(NUM_EXPRESSIONS, name="logits")(x)
    return keras.Model(latent, logits, name="classifier")


def build_image_classifier(config: ImaginationConfig) -> keras.Model:
    """D_cls (edit architectures only): face -> expression logits, as StarGAN's auxiliary classifier.

    Trained on real faces; the generator is asked to make it read the target
    expression in the edited face. It sees no label input, so unlike D_img it
    cannot take the expression from the condition. Same convs as D_img.
    """
    image = keras.Input((config.image_size, config.image_size, 3), name="face")
    x = image
    for level in range(DOWNSAMPLINGS):
        x = layers.Conv2D(config.width // 2 * 2**level, KERNEL, strides=2, padding="same",
                          kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.025), name=f"conv{level + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"leaky{level + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    logits = layers.Dense(NUM_EXPRESSIONS, name="logits")(x)
    return keras.Model(image, logits, name="image_classifier")


@dataclass
class Networks:
    """The networks of one model, built together from one config: five, and D_cls for an edit architecture."""

    config: ImaginationConfig
    encoder: keras.Model
    generator: keras.Model
    image_discriminator: keras.Model
    latent_discriminator: keras.Model
    classifier: keras.Model
    image_classifier: keras.Model | None = None

    @classmethod
    def build(cls, config: ImaginationConfig) -> "Networks":
        return cls(config, build_encoder(config), build_generator(config), build_image_discriminator(config),
                   build_latent_discriminator(config), build_classifier(config),
                   build_image_classifier(config) if config.architecture in EDIT_ARCHITECTURES else None)

    def by_name(self) -> dict[str, keras.Model]:
        models = {"encoder": self.encoder, "generator": self.generator, "image_discriminator": self.image_discriminator,
                  "latent_discriminator": self.latent_discriminator, "classifier": self.classifier}
        if self.image_classifier is not None:
            models["image_classifier"] = self.image_classifier
        return models


def named_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """Every variable of ``model`` as ``{"layer/variable": array}``: the saved form, independent of layer order."""
    return {key: np.asarray(variable) for key, variable in _variables_by_name(model).items()}


def set_named_weights(model: keras.Model, arrays: dict[str, np.ndarray], source: str = "weights") -> None:
    """Load :func:`named_weights` output into ``model``; ValueError (and nothing changed) unless every name and shape fits."""
    variables = _variables_by_name(model)
    missing, unexpected = sorted(set(variables) - set(arrays)), sorted(set(arrays) - set(variables))
    if missing or unexpected:
        raise ValueError(f"{source}: the {model.name}'s weights do not match its layers "
                         f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    wrong = [f"{key} {arrays[key].shape} != {tuple(v.shape)}" for key, v in variables.items()
             if tuple(arrays[key].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"{source}: the {model.name}'s weights have other shapes: {', '.join(wrong[:4])}")
    for key, variable in variables.items():
        variable.assign(np.asarray(arrays[key], dtype=variable.dtype))


def _variables_by_name(model: keras.Model) -> dict:
    variables = {}
    for layer in model.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key in variables:
                raise ValueError(f"the {model.name} has two variables named {key}")
            variables[key] = variable
    return variables
