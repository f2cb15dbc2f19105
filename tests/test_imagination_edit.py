"""The edit architecture: the imagined face is an edit of the input; old CAAE files still load; ``clifer imagine``."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.imagination.imaginer import MODEL_KIND, Imaginer
from clifer_core.imagination.networks import ImaginationConfig, Networks, compose_mask, compose_residual
from clifer_core.labels import EXPRESSIONS

SMALL_EDIT = ImaginationConfig(image_size=32, width=8, latent_dim=20, architecture="mask")
SMALL_RESIDUAL = ImaginationConfig(image_size=32, width=8, latent_dim=20, architecture="residual")


@pytest.fixture(scope="module")
def edit_imaginer():
    import keras

    keras.utils.set_random_seed(11)
    return Imaginer(Networks.build(SMALL_EDIT))


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)


def test_compose_mask_keeps_the_source_where_the_mask_is_zero_and_keeps_grey_grey():
    rng = np.random.default_rng(0)
    colour = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    drawn = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    grey = np.repeat(rng.uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32), 3, axis=-1)
    zero, one = np.zeros((2, 8, 8, 1), np.float32), np.ones((2, 8, 8, 1), np.float32)
    assert np.array_equal(np.asarray(compose_mask(colour, drawn, zero)), colour)
    assert np.allclose(np.asarray(compose_mask(colour, drawn, one)), drawn)
    half = np.asarray(compose_mask(grey, drawn, 0.5 * one))
    assert np.allclose(half[..., 0], half[..., 1]) and np.allclose(half[..., 1], half[..., 2])
    assert not np.allclose(half, grey), "the grey face is still edited, in grey"


def test_compose_residual_adds_the_change_clipped_and_grey_on_grey():
    rng = np.random.default_rng(1)
    source = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    own, target = (rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32) for _ in range(2))
    assert np.array_equal(np.asarray(compose_residual(source, own, own)), source)
    assert np.allclose(np.asarray(compose_residual(source, target, own)), np.clip(source + (target - own), -1, 1), atol=1e-6)
    grey = np.repeat(source[..., :1], 3, axis=-1)
    edited = np.asarray(compose_residual(grey, target, own))
    assert np.allclose(edited[..., 0], edited[..., 2]) and not np.allclose(edited, grey)


def test_a_residual_model_returns_the_input_for_its_own_expression(faces):
    import keras

    keras.utils.set_random_seed(13)
    imaginer = Imaginer(Networks.build(SMALL_RESIDUAL))
    imagined, _ = imaginer.imagine(faces, own_expressions="sad")
    assert np.array_equal(imagined[:, EXPRESSIONS.index("sad")], faces)
    read = imaginer.classify_latents(imaginer.encode(faces)).argmax(axis=1)
    by_reading, _ = imaginer.imagine(faces)
    assert all(np.array_equal(by_reading[i, read[i]], faces[i]) for i in range(len(faces)))
    with pytest.raises(ValueError, match="2 expressions for 4 inputs"):
        imaginer.imagine(faces, own_expressions=["sad", "happy"])


def test_an_edit_model_with_its_mask_shut_returns_the_input_for_every_expression(faces):
    import keras

    keras.utils.set_random_seed(12)
    networks = Networks.build(SMALL_EDIT)
    mask = networks.generator.get_layer("mask")
    mask.kernel.assign(np.zeros(mask.kernel.shape, np.float32))
    mask.bias.assign(np.full(mask.bias.shape, -60.0, np.float32))
    imagined, latents = Imaginer(networks).imagine(faces)
    assert imagined.shape == (4, 7, 32, 32, 3) and latents.shape == (4, 7, 20)
    assert np.array_equal(imagined, np.repeat(faces[:, None], 7, axis=1))


def test_edit_imagination_differs_from_decoding_and_stays_near_the_input(edit_imaginer, faces):
    imagined, _ = edit_imaginer.imagine(faces)
    drawn = edit_imaginer.decode(edit_imaginer.encode(faces), "happy")
    happy = imagined[:, EXPRESSIONS.index("happy")].astype(float)
    # A fresh edit model redraws about 12 % of each pixel: far closer to the input than its drawn face is.
    assert np.mean(np.abs(happy - faces)) < 0.3 * np.mean(np.abs(drawn.astype(float) - faces))


def test_edit_model_round_trips_and_a_version_2_caae_file_still_loads(edit_imaginer, faces, tmp_path):
    from clifer_core.persistence import load_state, save_state

    path = edit_imaginer.save(tmp_path / "edit.npz")
    loaded = Imaginer.load(path)
    assert loaded.config.architecture == "mask"
    assert np.array_equal(loaded.imagine(faces)[0], edit_imaginer.imagine(faces)[0])
    caae = Imaginer(Networks.build(ImaginationConfig(image_size=32, width=8, latent_dim=20)))
    manifest, arrays = load_state(caae.save(tmp_path / "caae.npz"), MODEL_KIND, (3,))
    manifest = {k: v for k, v in manifest.items() if k not in ("kind", "schema_version")}
    manifest["config"].pop("architecture")
    save_state(tmp_path / "version2.npz", MODEL_KIND, 2, manifest, arrays)
    old = Imaginer.load(tmp_path / "version2.npz")
    assert old.config.architecture == "caae"
    assert np.array_equal(old.imagine(faces)[0], caae.imagine(faces)[0])


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="architecture"):
        ImaginationConfig(architecture="stylegan")


@pytest.mark.parametrize("config", [SMALL_EDIT, SMALL_RESIDUAL], ids=["mask", "residual"])
def test_edit_training_steps_update_every_network_and_checkpoint_the_classifier(config, tmp_path):
    from clifer_core.imagination.data import FaceSet, make_pipeline
    from clifer_core.imagination.training import Trainer

    rng = np.random.default_rng(4)
    face_set = FaceSet(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.arange(8, dtype=np.int32) % 7,
                       np.array([f"p{i % 2}" for i in range(8)]))
    trainer = Trainer(config)
    assert trainer.perceptual is None, "the edit model trains without FER2013's activations"
    before = {name: [v.numpy() for v in model.trainable_variables] for name, model in trainer.networks.by_name().items()}
    batch = next(iter(make_pipeline(face_set, 8, augment=False)))
    losses = trainer.train_step(batch)
    assert all(np.isfinite(v) for v in losses.values())
    assert 0 < losses["mask_mean"] < 1 if config.architecture == "mask" else losses["reconstruction"] == 0
    for name, model in trainer.networks.by_name().items():
        assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before[name], model.trainable_variables)), name
    trainer.epoch = 1
    path = trainer.save_checkpoint(tmp_path / "checkpoint.npz")
    again = Trainer(config)
    again.load_checkpoint(path)
    assert np.array_equal(again.networks.image_classifier.trainable_variables[0].numpy(),
                          trainer.networks.image_classifier.trainable_variables[0].numpy())


def test_clifer_imagine_writes_a_grid_for_a_photo_and_refuses_a_photo_without_a_face(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    from clifer_core.cli import main

    photo, blank = tmp_path / "astronaut.png", tmp_path / "blank.png"
    Image.fromarray(data.astronaut()).save(photo)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    assert main(["imagine", "--image", str(photo), "--out", str(tmp_path / "grid.png")]) == 0
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.width > 4 * grid.height, "one row: the source and seven imagined faces"
    assert main(["imagine", "--image", str(blank), "--out", str(tmp_path / "none.png")]) == 2
    assert "no face" in capsys.readouterr().err and not (tmp_path / "none.png").exists()


def test_residual_edit_strength_scales_the_change_and_is_saved_with_the_model(faces, tmp_path):
    import keras

    keras.utils.set_random_seed(14)
    networks = Networks.build(SMALL_RESIDUAL)
    for layer in networks.generator.layers:  # a fresh G's output hardly moves with the label: make it move
        if hasattr(layer, "kernel"):
            layer.kernel.assign(layer.kernel * 4.0)
    full, half = Imaginer(networks), Imaginer(networks, edit_strength=0.5)
    change_full = np.abs(full.imagine(faces, own_expressions="neutral")[0].astype(float) - faces[:, None]).mean()
    halved, _ = half.imagine(faces, own_expressions="neutral")
    change_half = np.abs(halved.astype(float) - faces[:, None]).mean()
    assert 0 < change_half < 0.75 * change_full
    reloaded = Imaginer.load(half.save(tmp_path / "half.npz"))
    assert reloaded.edit_strength == 0.5
    assert np.array_equal(reloaded.imagine(faces, own_expressions="neutral")[0], halved)
    with pytest.raises(ValueError, match="edit_strength"):
        Imaginer(networks, edit_strength=0.0)


def test_the_packaged_model_returns_the_input_for_its_own_expression():
    """Measured tolerance: the shipped residual model changes no pixel of a face asked for its own expression."""
    from clifer_core.evaluation.imagination import public_domain_face
    from clifer_core.imagination.imaginer import faces_to_model_input, model_output_to_faces

    default = Imaginer.load()
    assert default.config.architecture == "residual"
    face = public_domain_face(96)
    imagined, _ = default.imagine(face[None], own_expressions="neutral")
    source = model_output_to_faces(faces_to_model_input(face[None], default.image_size))[0]
    assert np.array_equal(imagined[0, EXPRESSIONS.index("neutral")], source)
    changed = np.abs(imagined[0].astype(float) - source).mean(axis=(1, 2, 3))
    assert np.count_nonzero(changed > 1.0) == 6, "every other expression is an actual edit"


def test_imagined_faces_of_unseen_people_stay_closest_to_their_source(data_dir):
    """Gallery: one crop of each held-out Taiwanese person; each imagined face is nearest (dlib) to its own source."""
    from clifer_core.evaluation.imagination import DlibIdentity
    from clifer_core.imagination.data import load_face_set, split_by_subject
    from clifer_core.imagination.imaginer import faces_to_model_input, model_output_to_faces

    default = Imaginer.load()
    _, held_out = split_by_subject(load_face_set("taiwanese", default.image_size))
    people = sorted(set(held_out.subjects.tolist()))
    assert set(people) <= set(default.metadata["held_out_subjects"]), "the packaged model never saw these people"
    first = [int(np.flatnonzero(held_out.subjects == p)[0]) for p in people]
    sources = held_out.faces[first]
    imagined, _ = default.imagine(sources, own_expressions=held_out.labels[first])
    identity = DlibIdentity()
    gallery = identity.embed(model_output_to_faces(faces_to_model_input(sources, default.image_size)))
    embedded = identity.embed(imagined.reshape(-1, *imagined.shape[2:])).reshape(len(people), 7, -1)
    distances = np.linalg.norm(embedded[:, :, None] - gallery[None, None], axis=-1)
    nearest = distances.argmin(axis=-1)
    assert np.mean(nearest == np.arange(len(people))[:, None]) >= 0.95
