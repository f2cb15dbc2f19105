"""The population model's own appearance network: fine-tuning learns, storage is faithful, the learner uses it.

Fine-tuning runs in a child process: it needs TensorFlow imported with oneDNN
off (clifer_core/appearance_training.py says why), and this test process may
already have imported it with oneDNN on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from clifer_core.labels import EXPRESSIONS
from clifer_core.population import PopulationModel

SAD = EXPRESSIONS.index("sad")

FINE_TUNE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from clifer_core.appearance_training import fine_tune
    from clifer_core.features import Fer2013Model
    from clifer_core.labels import EXPRESSIONS

    def bars(count, rng):
        # a bright band across the top of the face says "angry", across the bottom "happy": no face, no expression
        labels = rng.integers(0, 2, count)
        faces = rng.integers(0, 60, (count, 64, 64)).astype(np.uint8)
        for face, label in zip(faces, labels):
            rows = slice(6, 26) if label == 0 else slice(38, 58)
            face[rows] = 220
        return faces, np.where(labels == 0, EXPRESSIONS.index("angry"), EXPRESSIONS.index("happy"))

    train_faces, train_labels = bars(512, np.random.default_rng(0))
    test_faces, test_labels = bars(200, np.random.default_rng(1))
    columns = [EXPRESSIONS.index("angry"), EXPRESSIONS.index("happy")]

    def accuracy(model):
        probabilities = model.predict_proba(test_faces)[:, columns]
        return float(np.mean(np.asarray(columns)[np.argmax(probabilities, axis=1)] == test_labels))

    before = accuracy(Fer2013Model())
    weights = fine_tune(train_faces, train_labels, np.ones(len(train_labels)), epochs=4, learning_rate=1e-3)
    print(json.dumps({"before": before, "after": accuracy(Fer2013Model(weights=weights))}))
    """
)


def _child(script: str, **env) -> subprocess.CompletedProcess:
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fine_tuning_teaches_the_network_what_the_faces_show():
    result = _child(FINE_TUNE_SCRIPT, TF_ENABLE_ONEDNN_OPTS="0")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["after"] >= 0.9 and scores["after"] > scores["before"] + 0.2, scores


def test_fine_tuning_after_tensorflow_started_with_onednn_is_refused_clearly():
    script = ("import tensorflow\nfrom clifer_core.appearance_training import require_trainable_tensorflow\n"
              "require_trainable_tensorflow()\n")
    environment = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(environment, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode != 0 and "TF_ENABLE_ONEDNN_OPTS=0" in result.stderr


DETERMINISTIC_SCRIPT = textwrap.dedent(
    """
    import hashlib
    from clifer_core.tensorflow_startup import deterministic_tensorflow
    deterministic_tensorflow()
    import numpy as np
    from clifer_core.appearance_training import fine_tune

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (1024, 64, 64)).astype(np.uint8)
    weights = fine_tune(faces, rng.integers(0, 7, 1024), np.ones(1024), learning_rate=1e-3)
    print(hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in weights)).hexdigest())
    """
)


def test_deterministic_fine_tuning_gives_the_same_weights_twice():
    digests = []
    for _ in range(2):
        result = _child(DETERMINISTIC_SCRIPT, TF_ENABLE_ONEDNN_OPTS="0")
        assert result.returncode == 0, result.stderr[-3000:]
        digests.append(result.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]


def test_determinism_asked_for_after_tensorflow_started_is_refused_clearly():
    script = ("import tensorflow\ntensorflow.constant(1.0) + 1.0\n"
              "from clifer_core.tensorflow_startup import deterministic_tensorflow\ndeterministic_tensorflow()\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TF_DETERMINISTIC", "TF_NUM_"))}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(environment, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode != 0 and "before TensorFlow runs its first op" in result.stderr


@pytest.mark.parametrize("shape", [(10, 64, 64, 1), (10, 48, 48)])
def test_fine_tuning_rejects_faces_that_are_not_64px_grey(shape):
    from clifer_core.appearance_training import fine_tune

    with pytest.raises(ValueError, match="uint8 grey faces"):
        fine_tune(np.zeros(shape, np.uint8), np.zeros(10), np.ones(10))


@pytest.fixture(scope="module")
def shifted_network():
    """The packaged FER2013 weights with the output bias pushed towards sad (the astronaut smiles): a stand-in for a fine-tuned copy."""
    from clifer_core.features import Fer2013Model

    weights = [np.array(w) for w in Fer2013Model().keras_model.get_weights()]
    bias = weights[-1]
    assert bias.shape == (len(EXPRESSIONS),)
    bias[SAD] += 100.0
    return weights


@pytest.fixture(scope="module")
def crops():
    from skimage.data import astronaut

    from clifer_core.faces import crop_largest_face

    face = crop_largest_face(astronaut(), size=96)
    return np.stack([face, face[:, ::-1]])


def test_a_population_model_with_its_own_network_saves_loads_and_uses_it(tmp_path, shifted_network, crops):
    from clifer_core.features import Fer2013Model

    shipped = PopulationModel.load()
    packaged = PopulationModel(shipped.classifier, shipped.population_mean, shipped.prior_weight, shipped.shape_weight)
    own = PopulationModel(shipped.classifier, shipped.population_mean, shipped.prior_weight, shipped.shape_weight,
                          prior=Fer2013Model(), appearance_weights=shifted_network)
    assert own.has_own_appearance and not packaged.has_own_appearance
    uniform = np.full((len(crops), len(EXPRESSIONS)), 1.0 / len(EXPRESSIONS), np.float32)
    np.testing.assert_array_equal(packaged.appearance_proba(crops, uniform), uniform)
    np.testing.assert_allclose(own.appearance_proba(crops, uniform), own.prior.predict_proba(crops), atol=1e-6)
    np.testing.assert_allclose(own.prior.predict_proba(crops), Fer2013Model(weights=shifted_network).predict_proba(crops),
                               atol=1e-6)
    loaded = PopulationModel.load(own.save(tmp_path / "population.npz"))
    assert loaded.has_own_appearance
    np.testing.assert_allclose(loaded.predict_proba(crops), own.predict_proba(crops), atol=1e-5)
    assert np.all(np.argmax(loaded.prior.predict_proba(crops), axis=1) == SAD)
    assert not np.any(np.argmax(packaged.prior.predict_proba(crops), axis=1) == SAD)
    assert np.all(loaded.predict_proba(crops)[:, SAD] > 100 * packaged.predict_proba(crops)[:, SAD])


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path, shifted_network):
    from clifer_core.features import Fer2013Model
    from clifer_core.persistence import StateFileError

    with pytest.raises(ValueError, match="do not fit"):
        Fer2013Model(weights=shifted_network[:-1])
    shipped = PopulationModel.load()
    misfit = PopulationModel(shipped.classifier, shipped.population_mean, shipped.prior_weight, shipped.shape_weight,
                             appearance_weights=shifted_network[:-1])
    with pytest.raises(StateFileError, match="do not fit"):
        PopulationModel.load(misfit.save(tmp_path / "misfit.npz"))


def test_the_learner_reads_strangers_with_the_population_models_own_network(shifted_network, crops):
    from clifer_core.learner import CliferLearner

    shipped = PopulationModel.load()
    own = PopulationModel(shipped.classifier, shipped.population_mean, shipped.prior_weight, shipped.shape_weight,
                          appearance_weights=shifted_network)
    learner = CliferLearner(population_model="shape", shape_population=own, adaptation=False)
    uniform = np.full((len(crops), len(EXPRESSIONS)), 1.0 / len(EXPRESSIONS), np.float32)
    evidence = learner.population_evidence(None, crops, prior=uniform)
    np.testing.assert_allclose(evidence, own.predict_proba(crops), atol=1e-5)
