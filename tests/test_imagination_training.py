"""Imagination training: the tf.data pipeline, the subject split, checkpoints, and learning on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.data.datasets import default_data_dir
from clifer_core.imagination.data import FaceSet, held_out_subjects, make_pipeline, split_by_subject
from clifer_core.imagination.networks import ImaginationConfig
from clifer_core.persistence import StateFileError

SMALL = ImaginationConfig(image_size=32, width=8, latent_dim=20)


def synthetic_faces(count: int = 10, size: int = 32) -> FaceSet:
    """Each "person" has one flat colour, so a partner's identity is visible in its pixels."""
    subjects = np.array([f"p{i % 3}" for i in range(count)])
    colours = {"p0": 40, "p1": 120, "p2": 220}
    faces = np.stack([np.full((size, size, 3), colours[s], np.uint8) for s in subjects])
    return FaceSet(faces, np.arange(count, dtype=np.int32) % 7, subjects)


def test_pipeline_keeps_the_last_partial_batch_and_pairs_same_person():
    face_set = synthetic_faces(10)
    batches = list(make_pipeline(face_set, batch_size=4, augment=False, shuffle=False))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    faces = np.concatenate([b[0] for b in batches])
    partners = np.concatenate([b[2] for b in batches])
    assert faces.min() >= -1 and faces.max() <= 1
    assert np.array_equal(faces[:, 0, 0, 0], partners[:, 0, 0, 0])
    labels = np.concatenate([b[1] for b in batches])
    assert np.array_equal(labels, face_set.labels)


def test_augmentation_moves_a_face_and_its_partner_together():
    face_set = synthetic_faces(6)
    face_set.faces[:, :, :16] = 0
    for faces, _, partners, _ in make_pipeline(face_set, batch_size=6, augment=True, seed=3):
        assert np.array_equal(np.asarray(faces) < -0.5, np.asarray(partners) < -0.5)


def test_split_holds_out_fixed_people_of_every_dataset():
    subjects = np.array([f"taiwanese:tw{i:02d}" for i in range(1, 13)] + ["ckplus:ck001"] * 3 + ["ckplus:ck002", "ckplus:ck003"])
    face_set = FaceSet(np.zeros((len(subjects), 32, 32, 3), np.uint8), np.zeros(len(subjects), np.int32), subjects)
    train, held = split_by_subject(face_set)
    assert sorted(set(held.subjects)) == ["ckplus:ck003", "taiwanese:tw03", "taiwanese:tw09"]
    assert not set(train.subjects) & set(held.subjects) and len(train) + len(held) == len(face_set)
    assert held_out_subjects(["b", "a", "c"]) == ["c"]
    folds = [set(split_by_subject(face_set, fold)[1].subjects) for fold in range(6)]
    assert set().union(*folds) == set(subjects) and sum(map(len, folds)) == len(set(subjects)), \
        "the six folds hold every person out exactly once"
    assert folds[2] == set(held.subjects), "the default is fold 2"
    with pytest.raises(ValueError, match="fold"):
        held_out_subjects(["a"], 6)


def test_checkpoint_restores_networks_optimisers_and_epoch(tmp_path):
    from clifer_core.imagination.training import Trainer

    trainer = Trainer(SMALL, learning_rate=1e-3)
    batch = next(iter(make_pipeline(synthetic_faces(8), batch_size=8)))
    trainer.train_step(batch)
    trainer.epoch = 3
    path = trainer.save_checkpoint(tmp_path / "checkpoint.npz")
    resumed = Trainer(SMALL, learning_rate=1e-3)
    resumed.load_checkpoint(path)
    assert resumed.epoch == 3
    for name, model in trainer.networks.by_name().items():
        for a, b in zip(model.get_weights(), resumed.networks.by_name()[name].get_weights()):
            assert np.array_equal(a, b)
        for a, b in zip(trainer.optimizers[name].variables, resumed.optimizers[name].variables):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    other = Trainer(ImaginationConfig(image_size=32, width=8, latent_dim=10))
    with pytest.raises(StateFileError, match="config"):
        other.load_checkpoint(path)


@pytest.mark.skipif(default_data_dir() is None, reason="needs ../shared/data")
def test_a_few_steps_on_real_faces_lower_the_reconstruction_loss():
    import keras

    from clifer_core.imagination.data import load_face_set
    from clifer_core.imagination.training import Trainer

    keras.utils.set_random_seed(11)
    people = load_face_set("taiwanese", 64)
    people = people.subset(np.isin(people.subjects, ["taiwanese:tw01", "taiwanese:tw02"]))
    resized = np.stack([face[::2, ::2] for face in people.faces])
    people = FaceSet(resized, people.labels, people.subjects)
    trainer = Trainer(SMALL, learning_rate=2e-3)
    imaginer = trainer.imaginer()

    def reconstruction_error() -> float:
        rebuilt = imaginer.decode(imaginer.encode(people.faces), people.labels)
        return float(np.mean(np.abs(rebuilt.astype(float) - people.faces)))

    before = reconstruction_error()
    for _ in range(4):
        for batch in make_pipeline(people, batch_size=16, augment=False):
            trainer.train_step(batch)
    assert reconstruction_error() < 0.9 * before


@pytest.mark.slow
def generic_face_folder(root):
    """A <subject>/<expression>/*.png folder of three "people" built from a public-domain photo."""
    from PIL import Image
    from skimage import data

    photo = data.astronaut()
    for s, subject in enumerate(("ann", "bob", "cid")):
        for e, expression in enumerate(("happy", "neutral")):
            folder = root / subject / expression
            folder.mkdir(parents=True)
            variant = np.clip(photo.astype(int) + 20 * s - 15 * e, 0, 255).astype(np.uint8)
            Image.fromarray(variant).save(folder / "1.png")
            Image.fromarray(variant[:, ::-1]).save(folder / "2.png")
    return root


def test_command_line_trains_checkpoints_resumes_and_exports(tmp_path, monkeypatch):
    """End to end on a generic <subject>/<expression>/*.png folder built from a public-domain photo."""
    from clifer_core.cli import main
    from clifer_core.imagination.imaginer import Imaginer

    monkeypatch.setenv("CLIFER_CACHE_DIR", str(tmp_path / "cache"))
    generic_face_folder(tmp_path / "faces")
    out, model = tmp_path / "run", tmp_path / "model.npz"
    common = ["train-imagination", "--data", str(tmp_path / "faces"), "--out", str(out),
              "--image-size", "32", "--width", "8", "--batch-size", "4"]
    assert main(common + ["--epochs", "1"]) == 0
    assert (out / "previews" / "epoch_001.png").is_file() and any((out / "tensorboard").iterdir())
    assert main(common + ["--epochs", "2", "--export", str(model)]) == 0
    assert (out / "previews" / "epoch_002.png").is_file() and not (out / "previews" / "epoch_003.png").exists()
    exported = Imaginer.load(model)
    assert exported.image_size == 32
    assert exported.metadata["held_out_subjects"] == ["generic:cid"]
    assert exported.metadata["train_images"] == 8


def test_command_line_edit_loss_weights_reach_training_and_the_model(tmp_path, monkeypatch):
    """``--expression-weight``, ``--translation-weight`` and ``--cycle-weight`` replace the residual defaults."""
    from clifer_core.cli import main
    from clifer_core.imagination.imaginer import Imaginer
    from clifer_core.imagination.training import RESIDUAL_LOSS_WEIGHTS

    monkeypatch.setenv("CLIFER_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train-imagination", "--architecture", "residual", "--data", str(generic_face_folder(tmp_path / "faces")),
                 "--out", str(out), "--image-size", "32", "--width", "8", "--batch-size", "4", "--epochs", "1",
                 "--expression-weight", "1.5", "--translation-weight", "3", "--cycle-weight", "0.25"]) == 0
    weights = Imaginer.load(out / "imagination.npz").metadata["loss_weights"]
    assert (weights["image_classification"], weights["translation"], weights["cycle"]) == (1.5, 3.0, 0.25)
    assert weights["drawn_reconstruction"] == RESIDUAL_LOSS_WEIGHTS.drawn_reconstruction
