"""Imagination model: network shapes, the runtime API's contract, persistence. No dataset needed."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.imagination.imaginer import DEFAULT_MODEL_PATH, Imaginer
from clifer_core.imagination.networks import ImaginationConfig, Networks
from clifer_core.labels import EXPRESSIONS
from clifer_core.persistence import StateFileError

SMALL = ImaginationConfig(image_size=32, width=8, latent_dim=20)


@pytest.fixture(scope="module")
def imaginer():
    import keras

    keras.utils.set_random_seed(7)
    return Imaginer(Networks.build(SMALL))


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)


def test_spec_sized_networks_have_the_spec_shapes():
    import keras

    spec = Networks.build(ImaginationConfig(image_size=96, width=64, latent_dim=50))
    x = np.random.default_rng(1).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    z = np.asarray(spec.encoder(x))
    assert z.shape == (2, 50) and np.all(np.abs(z) < 1)
    one_hot = np.eye(7, dtype=np.float32)[[3, 6]]
    image = np.asarray(spec.generator([z, one_hot]))
    assert image.shape == (2, 96, 96, 3) and np.all(np.abs(image) <= 1)
    assert [spec.encoder.get_layer(f"conv{i}").filters for i in (1, 2, 3, 4)] == [64, 128, 256, 512]
    probe = keras.Model(spec.image_discriminator.inputs,
                        [spec.image_discriminator.get_layer(f"condition{i}").output for i in (1, 2, 3)])
    assert [m.shape[-1] for m in probe([x, one_hot])] == [60, 127, 254]
    assert spec.image_discriminator([x, one_hot]).shape == (2, 1)
    assert spec.classifier(z).shape == (2, 7) and spec.latent_discriminator(z).shape == (2, 1)


def test_config_rejects_sizes_the_networks_cannot_mirror():
    with pytest.raises(ValueError, match="multiple of 16"):
        ImaginationConfig(image_size=50)
    with pytest.raises(ValueError, match="width"):
        ImaginationConfig(width=3)


def test_encode_and_decode_shapes_and_ranges(imaginer, faces):
    z = imaginer.encode(faces)
    assert z.shape == (5, 20) and z.dtype == np.float32 and np.all(np.abs(z) < 1)
    decoded = imaginer.decode(z, "happy")
    assert decoded.shape == (5, 32, 32, 3) and decoded.dtype == np.uint8
    per_face = imaginer.decode(z, ["angry", "fear", 3, "Sadness", "neutral"])
    assert np.array_equal(per_face[2], decoded[2])
    assert imaginer.encode(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 20)


def test_faces_of_any_size_are_resized(imaginer):
    rng = np.random.default_rng(2)
    mixed = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((20, 20), (64, 48), (32, 32))]
    z = imaginer.encode(mixed)
    assert z.shape == (3, 20)
    assert np.allclose(z[2], imaginer.encode(mixed[2][None])[0], atol=1e-6)


def test_imagine_returns_all_seven_expressions_in_label_order(imaginer, faces):
    imagined, latents = imaginer.imagine(faces)
    assert imagined.shape == (5, 7, 32, 32, 3) and imagined.dtype == np.uint8
    assert latents.shape == (5, 7, 20)
    z = imaginer.encode(faces)
    for k, name in enumerate(EXPRESSIONS):
        assert np.array_equal(imagined[:, k], imaginer.decode(z, name))
        assert np.allclose(latents[:, k], imaginer.reencode(z, name), atol=1e-5)
    from_latents, _ = imaginer.imagine(z, ["surprised", "happy"])
    assert np.array_equal(from_latents[:, 0], imagined[:, 5]) and np.array_equal(from_latents[:, 1], imagined[:, 3])


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 32, 32, 4), np.uint8), "RGB"),
    (np.zeros((2, 32, 32), np.uint8), r"\(N, H, W, 3\)"),
    (np.zeros((2, 8, 8, 3), np.uint8), "too small"),
    (np.zeros((2, 32, 32, 3), np.float32), "uint8"),
])
def test_bad_faces_raise_clear_errors(imaginer, bad, message):
    with pytest.raises(ValueError, match=message):
        imaginer.encode(bad)


def test_bad_expressions_and_latents_raise_clear_errors(imaginer):
    z = np.zeros((3, 20), np.float32)
    with pytest.raises(ValueError, match="unknown expression"):
        imaginer.decode(z, "bored")
    with pytest.raises(ValueError, match="out of range"):
        imaginer.decode(z, 7)
    with pytest.raises(ValueError, match="3 inputs"):
        imaginer.decode(z, ["happy", "sad"])
    with pytest.raises(ValueError, match=r"\(N, 20\)"):
        imaginer.decode(np.zeros((3, 50), np.float32), "happy")
    with pytest.raises(ValueError, match="unknown expression"):
        imaginer.imagine(z, ["happy", "contempt"])


def test_save_load_round_trip_is_exact(imaginer, faces, tmp_path):
    path = imaginer.save(tmp_path / "model.npz")
    loaded = Imaginer.load(path)
    assert loaded.config == imaginer.config
    assert np.array_equal(loaded.encode(faces), imaginer.encode(faces))
    assert np.array_equal(loaded.imagine(faces)[0], imaginer.imagine(faces)[0])


def test_float16_file_reloads_to_the_same_model_every_time(imaginer, faces, tmp_path):
    half = Imaginer.load(imaginer.save(tmp_path / "half.npz", precision="float16"))
    again = Imaginer.load(half.save(tmp_path / "again.npz", precision="float16"))
    assert np.array_equal(half.encode(faces), again.encode(faces))
    assert np.allclose(half.encode(faces), imaginer.encode(faces), atol=2e-2)
    with pytest.raises(ValueError, match="precision"):
        imaginer.save(tmp_path / "x.npz", precision="int8")


def test_weights_load_by_layer_name_so_a_reordered_layer_gets_its_own_weights():
    import keras

    from clifer_core.imagination.networks import named_weights, set_named_weights

    def two_layers(order):
        inputs = keras.Input((4,))
        x = inputs
        for name in order:
            x = keras.layers.Dense(4, name=name)(x)
        return keras.Model(inputs, x, name="pair")

    saved = two_layers(["first", "second"])
    reordered = two_layers(["second", "first"])
    set_named_weights(reordered, named_weights(saved))
    for name in ("first", "second"):
        for mine, theirs in zip(reordered.get_layer(name).get_weights(), saved.get_layer(name).get_weights()):
            assert np.array_equal(mine, theirs)
    renamed = two_layers(["first", "third"])
    before = [w.copy() for w in renamed.get_weights()]
    with pytest.raises(ValueError, match=r"missing \['third/bias', 'third/kernel'\], unexpected \['second/bias'"):
        set_named_weights(renamed, named_weights(saved))
    assert all(np.array_equal(a, b) for a, b in zip(before, renamed.get_weights())), "a failed load changes nothing"


def test_a_model_file_missing_a_layer_fails_loudly(imaginer, tmp_path):
    from clifer_core.imagination.imaginer import MODEL_KIND, MODEL_VERSION
    from clifer_core.persistence import load_state, save_state

    manifest, arrays = load_state(imaginer.save(tmp_path / "model.npz"), MODEL_KIND, (MODEL_VERSION,))
    manifest = {k: v for k, v in manifest.items() if k not in ("kind", "schema_version")}
    del arrays["generator/deconv2/kernel"]
    save_state(tmp_path / "broken.npz", MODEL_KIND, MODEL_VERSION, manifest, arrays)
    with pytest.raises(ValueError, match="generator.*missing \\['deconv2/kernel'\\]"):
        Imaginer.load(tmp_path / "broken.npz")


def test_broken_model_files_raise_state_errors(tmp_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(StateFileError):
        Imaginer.load(truncated)
    with pytest.raises(StateFileError, match="no such"):
        Imaginer.load(tmp_path / "missing.npz")


def test_packaged_default_imagines_a_real_face():
    from clifer_core.evaluation.imagination import public_domain_face

    default = Imaginer.load()
    assert DEFAULT_MODEL_PATH.stat().st_size <= 15 * 2**20
    face = public_domain_face(default.image_size)
    imagined, latents = default.imagine(face[None])
    assert imagined.shape == (1, 7, default.image_size, default.image_size, 3)
    # A trained model reconstructs a face clearly better than a constant grey image would.
    reconstruction = default.decode(default.encode(face[None]), "neutral")[0].astype(float)
    assert np.mean(np.abs(reconstruction - face)) < 0.85 * np.mean(np.abs(127.5 - face.astype(float)))
    # Imagined expressions differ, and the latent classifier reads the clearest ones back from E(G(z, c)).
    assert np.mean(np.abs(imagined[0, 3].astype(float) - imagined[0, 6])) > 2.0
    predicted = default.classify_latents(latents[0]).argmax(1)
    assert predicted[EXPRESSIONS.index("happy")] == EXPRESSIONS.index("happy")
    assert predicted[EXPRESSIONS.index("surprised")] == EXPRESSIONS.index("surprised")
