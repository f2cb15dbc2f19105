"""~/split_person over real DDS: a merge saved by an earlier run is undone, saved, and refused when there is none."""

from __future__ import annotations

import numpy as np
import pytest

from clifer.srv import ListPeople, SplitPerson
from clifer_core.faces.identity import EMBEDDING_SIZE, IdentityGallery, TrackDecider, TrackRule
from clifer_ros.harness import Probe
from test_identity_tracks import GOOD, at_distance, unit
from test_node import NODE
from test_node_learning import run_node


@pytest.fixture
def probe():
    probe = Probe()
    yield probe
    probe.close()


def test_split_person_undoes_a_merge_saved_before_a_restart(probe, tmp_path):
    rng = np.random.default_rng(1)
    alice = (0.3 * unit(rng)).astype(np.float32)
    gallery = IdentityGallery(threshold=0.435, margin=0.06)
    gallery.enrol(alice, person_id="alice")
    decider = TrackDecider(gallery, TrackRule(merge_threshold=0.40, margin=0.08, min_evidence=3))
    impostor = at_distance(alice, 0.3, rng)
    for _ in range(3):
        decider.observe("f00007", at_distance(impostor, 0.05, rng), GOOD)
    assert decider.person_of("f00007") == "alice"
    gallery.save(tmp_path / "identity.npz")

    node = run_node(probe, tmp_path)
    try:
        reply = probe.call(SplitPerson, f"{NODE}/split_person", SplitPerson.Request(person_id="alice"))
        assert reply.success, reply.message
        new_person_id = reply.new_person_id
        assert new_person_id and new_person_id != "alice" and "f00007" in reply.message
        listed = probe.call(ListPeople, f"{NODE}/list_people", ListPeople.Request())
        assert {"alice", new_person_id} <= set(listed.person_ids)
        again = probe.call(SplitPerson, f"{NODE}/split_person", SplitPerson.Request(person_id="alice"))
        assert not again.success and "no merge into alice" in again.message and again.new_person_id == ""
        bad = probe.call(SplitPerson, f"{NODE}/split_person", SplitPerson.Request(person_id="../alice"))
        assert not bad.success and bad.message.startswith("refused")
        probe.wait_for(lambda: new_person_id in IdentityGallery.load(tmp_path / "identity.npz").people(), 20,
                       "the learning worker to save the split gallery")
    finally:
        assert node.stop() == 0, node.output()
    saved = IdentityGallery.load(tmp_path / "identity.npz")
    assert sorted(saved.people()) == sorted(["alice", new_person_id]) and saved.merges() == []
    assert saved.identify(np.stack([at_distance(impostor, 0.02, rng) for _ in range(3)])) == new_person_id
    assert saved.samples("alice").shape == (1, EMBEDDING_SIZE)
