"""One construction path: identity calibration lookup, the imagination fallback, the identity interface, no leaked threads."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import yaml

from clifer_core import build
from clifer_core.faces.identity import Identity, IdentityResolver
from clifer_core.pipeline import BackgroundIdentity, PipelineConfig


def identity_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "clifer-identity"]


def test_an_explicit_identity_config_wins_and_a_missing_one_is_an_error(tmp_path):
    calibration = tmp_path / "identity.yaml"
    calibration.write_text(yaml.safe_dump({"threshold": 0.37, "margin": 0.02}))

    identity = build.build_identity(calibration)

    assert isinstance(identity, IdentityResolver)
    assert (identity.gallery.threshold, identity.gallery.margin) == (0.37, 0.02)
    assert build.build_identity(calibration, threshold=0.5).gallery.threshold == 0.5
    with pytest.raises(ValueError, match="does not exist"):
        build.identity_config_path(tmp_path / "missing.yaml")


def test_without_a_source_tree_config_the_installed_share_folder_is_used(tmp_path, monkeypatch):
    installed = tmp_path / "prefix" / "share" / "clifer" / "config" / "identity.yaml"
    installed.parent.mkdir(parents=True)
    installed.write_text(yaml.safe_dump({"threshold": 0.41}))
    monkeypatch.setattr(build, "IDENTITY_CONFIG", tmp_path / "no_source_tree" / "identity.yaml")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))

    assert build.identity_config_path() == installed


def test_a_missing_imagination_model_falls_back_to_none_with_a_warning(tmp_path, monkeypatch):
    from clifer_core.imagination import imaginer

    warnings = []
    assert build.available_imagination("image", warnings.append) == "image"
    assert warnings == []
    monkeypatch.setattr(imaginer, "DEFAULT_MODEL_PATH", tmp_path / "absent.npz")

    assert build.available_imagination("latent", warnings.append) == "none"
    assert build.available_imagination("none", warnings.append) == "none"
    assert len(warnings) == 1 and "learning without imagination" in warnings[0]


def test_both_identity_implementations_offer_the_whole_interface_and_close_stops_the_worker(tmp_path):
    resolver = build.build_identity()
    background = BackgroundIdentity(build.build_identity())
    assert isinstance(resolver, Identity) and isinstance(background, Identity)
    assert identity_threads()

    for identity in (resolver, background):
        embeddings = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
        person = identity.gallery.enrol(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
        assert identity.people() == [person]
        identity.save_gallery(tmp_path / "gallery.npz")
        assert identity.forget(person) and identity.people() == []
        identity.restore_gallery(tmp_path / "gallery.npz")
        assert identity.people() == [person]
        identity.set_external_identity("f00000", "alice")
        assert identity.person_of("f00000") == "alice"
        identity.close()

    assert identity_threads() == []
    with pytest.raises(RuntimeError, match="closed"):
        background.update(np.zeros((8, 8, 3), np.uint8), [])


def test_building_and_closing_pipelines_leaves_no_identity_thread():
    shared = build.build_pipeline(PipelineConfig(identity=False), learner=False)
    for _ in range(3):
        pipeline = build.build_pipeline(PipelineConfig(identity_in_background=True), learner=False,
                                        detector=shared.detector, expression_model=shared.expression_model)
        assert isinstance(pipeline.identity, BackgroundIdentity)
        pipeline.close()
    assert identity_threads() == []


def test_node_configure_cleanup_cycles_leak_no_thread(tmp_path):
    import rclpy
    from lifecycle_msgs.msg import State

    from clifer_ros.node import CliferNode

    context = rclpy.Context()
    # A domain of its own: the destroyed in-process node's change_state service otherwise lingers in this process's
    # graph, so the next test's probe sees a server before its node process exists and its request is lost.
    rclpy.init(context=context, domain_id=(int(os.environ["ROS_DOMAIN_ID"]) + 100) % 230)
    node = CliferNode(context=context, cli_args=["--ros-args", "-p", "imagination:=none", "-p", f"memory_dir:={tmp_path}"])
    try:
        for _ in range(2):
            node.trigger_configure()
            assert node._state_machine.current_state[1] == "inactive"
            assert len(identity_threads()) == 1
            node.trigger_cleanup()
            assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
            assert identity_threads() == []
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
