"""A node under attack, for tests/test_faults.py and benchmarks/faults.py: planted memories, a planted
folder outside ``memory_dir`` to hash, reliable label publishing, counters read from /diagnostics, and a
search of every file under ``memory_dir`` (npz members decompressed) for a forgotten person."""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import time
import zipfile
from array import array
from pathlib import Path

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from clifer.msg import ExpressionLabel
from clifer.srv import ListPeople
from clifer_ros.harness import NodeProcess, Probe

NODE = "/clifer"
IMAGE_TOPIC = "/faults/image/compressed"
LABELS_TOPIC = "/faults/labels"
LABEL_COUNTERS = ("labels used", "labels unmatched", "labels rejected", "labels dropped", "labels waiting")
FRAME_COUNTERS = ("frames processed", "frames dropped", "frames rejected", "frames failed")
ATTACKS = ("../../victim", "../../../outer_victim", "../identity", "../people/alice", "a b", "x" * 300,
           "alice/../../victim", "", "é", "1abc")
"""Person ids a careless or hostile caller sends; the first four name real files if used as paths."""
FORGOTTEN = "bobby_tables"
"""A planted person to forget: an id long enough never to occur by chance in the bytes searched for it."""


def plant(root: Path) -> tuple[Path, list[Path]]:
    """``root/a/memory`` with alice and bob (memories, population, gallery, a set-aside copy of bob, leftovers of
    writes killed mid-way), and the files outside it that path tricks would reach; returns (memory_dir, outside)."""
    from clifer_core.faces.identity import IdentityGallery
    from clifer_core.learner import CliferLearner

    memory = root / "a" / "memory"
    rng = np.random.default_rng(11)
    learner = CliferLearner(features="fer", imagination="none", feature_model=object())
    for person_id in ("alice", FORGOTTEN):
        learner.learn_features(person_id, rng.normal(size=(21, 128)).astype(np.float32), np.repeat(np.arange(7), 3))
    learner.save(memory)
    gallery = IdentityGallery()
    for person_id in ("alice", FORGOTTEN):
        embeddings = rng.normal(size=(3, 128)).astype(np.float32)
        gallery.enrol(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), person_id)
    gallery.save(memory / "identity.npz")
    (memory / "people" / f"{FORGOTTEN}.npz.corrupt").write_bytes((memory / "people" / f"{FORGOTTEN}.npz").read_bytes()[:300])
    (memory / ".identity.npz.k9x1y2z3.tmp").write_bytes(b"half an identity gallery")
    (memory / "people" / ".alice.npz.k9a8b7c6.tmp").write_bytes(b"half a memory")
    outside = [root / "a" / "victim.npz", root / "outer_victim.npz", root / "outside" / "victim.npz",
               root / "outside" / "identity.npz", root / "outside" / "people" / "alice.npz"]
    for index, path in enumerate(outside):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(256) + bytes([index]))
    return memory, outside


def fingerprint(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of each planted file outside memory_dir (``missing`` once deleted)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "missing" for p in paths}


def start_node(probe: Probe, memory: Path, *ros_args: str) -> NodeProcess:
    node = NodeProcess.start(
        "-r", f"image/compressed:={IMAGE_TOPIC}", "-r", f"labels:={LABELS_TOPIC}",
        "-p", "image_transport:=compressed", "-p", "deterministic_ids:=true", "-p", "imagination:=none", "-p", "features:=fer",
        "-p", f"memory_dir:={memory}", "-p", "autosave_period_s:=1.0", "-p", "diagnostics_period_s:=0.5",
        *ros_args)
    return node.bring_up(probe, NODE, Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE, timeout=120)


def jpeg_message(frame_rgb: np.ndarray, stamp_ns: int) -> CompressedImage:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="jpeg", data=array("B", encoded.tobytes()))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "camera"
    return msg


class Attacker:
    """The probe's side: frames, reliable labels (none lost in transport, so every one must show in a
    counter), services, and the node's latest /diagnostics."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
        self.labels_sent = 0
        self.frames_sent = 0
        self._labels = probe.node.create_publisher(
            ExpressionLabel, LABELS_TOPIC,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE))

    def frame(self, frame_rgb: np.ndarray, stamp_ns: int) -> None:
        self.probe.publish_message(IMAGE_TOPIC, jpeg_message(frame_rgb, stamp_ns))
        self.frames_sent += 1

    def raw_frame(self, msg: CompressedImage) -> None:
        self.probe.publish_message(IMAGE_TOPIC, msg)
        self.frames_sent += 1

    def label(self, person_id: str, expression: str, stamp_ns: int = 0) -> None:
        self.probe.wait_for(lambda: self._labels.get_subscription_count() > 0, 20, "the node's labels subscription")
        msg = ExpressionLabel(person_id=person_id, expression=expression)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self._labels.publish(msg)
        self.labels_sent += 1
        time.sleep(0.005)

    def values(self) -> dict[str, str]:
        """The node's latest /diagnostics key/values, with its ``level`` (0 OK, 1 WARN, 2 ERROR) and ``message``."""
        for array_msg in reversed(self.diagnostics):
            for status in array_msg.status:
                if status.name.startswith(NODE):
                    level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
                    return {**{kv.key: kv.value for kv in status.values}, "level": level, "message": status.message}
        return {}

    def fresh_values(self, timeout: float = 10.0) -> dict[str, str]:
        """Diagnostics published after this call."""
        count = len(self.diagnostics)
        self.probe.wait_for(lambda: len(self.diagnostics) > count, timeout, "a new /diagnostics message")
        return self.values()

    def labels_unaccounted(self) -> int:
        """Labels sent (reliably) that no counter shows."""
        values = self.fresh_values()
        return self.labels_sent - sum(int(values[key]) for key in LABEL_COUNTERS)

    def frames_unaccounted(self) -> int:
        """Frames the node received that no counter shows (best-effort frames may be lost before it)."""
        values = self.fresh_values()
        return int(values["frames received"]) - sum(int(values[key]) for key in FRAME_COUNTERS)

    def people(self) -> dict[str, int]:
        reply = self.probe.call(ListPeople, f"{NODE}/list_people", ListPeople.Request())
        return dict(zip(reply.person_ids, reply.samples))


def stored_bytes(memory: Path) -> dict[str, bytes]:
    """Every file under ``memory``, each npz member decompressed on its own.

    A running node may delete or replace a file between listing and reading it: such a file is read as it
    is then, or skipped when it is gone (the next scan sees the folder as it is by then).
    """
    contents = {}
    for path in sorted(p for p in memory.rglob("*") if p.is_file()):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        contents[str(path)] = raw
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                for name in archive.namelist():
                    contents[f"{path}:{name}"] = archive.read(name)
        except (zipfile.BadZipFile, OSError, EOFError):
            pass
    return contents


def traces_of(memory: Path, person_id: str, rows: np.ndarray) -> list[str]:
    """Where the person's id or any of their float32 ``rows`` (prototypes, embeddings) is still stored."""
    needles = [person_id.encode()] + [np.ascontiguousarray(row, np.float32).tobytes() for row in rows]
    return [name for name, content in stored_bytes(memory).items() if any(n in content for n in needles)]


def person_rows(memory: Path, person_id: str) -> np.ndarray:
    """The float32 rows stored for a person before forgetting: their memory's prototypes and identity embeddings,
    except rows another person holds too (a face taught under two ids gives both the same rows)."""
    from clifer_core.faces.identity import IdentityGallery

    others = {row.tobytes() for path in (memory / "people").glob("*.npz") if path.stem != person_id
              for row in memory_rows(path)}
    gallery = IdentityGallery.load(memory / "identity.npz")
    others |= {row.tobytes() for other in gallery.people() if other != person_id for row in gallery.samples(other)}
    embeddings = list(gallery.samples(person_id)) if person_id in gallery.people() else []
    own = [*memory_rows(memory / "people" / f"{person_id}.npz"), *embeddings]
    return np.asarray([row for row in own if row.tobytes() not in others], np.float32)


def memory_rows(path: Path) -> np.ndarray:
    from clifer_core.memory import GrowingDualMemory

    loaded = GrowingDualMemory.load(path)
    return np.concatenate([loaded.episodic_.weights_, loaded.semantic_.weights_]).astype(np.float32)


def population_depends_only_on_the_remaining_people(memory: Path) -> bool:
    """Whether ``population.npz`` is exactly what the remaining people's stored memories rebuild (so it holds
    nothing of anyone else)."""
    from clifer_core.learner import CliferLearner

    learner = CliferLearner(features="fer", imagination="none", feature_model=object())
    with tempfile.TemporaryDirectory() as copy:
        shutil.copytree(memory / "people", Path(copy) / "people")
        learner.load(copy)
    rebuilt = learner.population_from(learner.memories)
    return np.array_equal(memory_rows(memory / "population.npz"),
                          np.concatenate([rebuilt.episodic_.weights_, rebuilt.semantic_.weights_]))


def wait_until_gone(attacker: Attacker, person_id: str, timeout: float = 30.0) -> None:
    attacker.probe.wait_for(lambda: person_id not in attacker.people(), timeout, f"{person_id} to be forgotten")
