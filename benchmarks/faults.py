"""The node attacked over real DDS, counted: does any request crash it, reach outside memory_dir, lose an
input, leave a forgotten person on disk, or (under kill -9) leave a corrupt file?

One node (compressed transport, imagination off, autosave every second) gets every attack of
tests/test_faults.py: forget/teach with path-like, over-long and malformed person ids, 200 bad labels
around a valid one, a PNG that decodes to 12000x12000, six damaged learner.json files and a corrupt
identity gallery on ~/load, a folder that refuses writes, and the erasure of a planted person whose
every stored byte (npz members decompressed) is then searched for. Then ``--kill9-trials`` times: start
the node on the same folder, teach it for a random 1-4 s while it autosaves, ask for a full save and
``kill -9`` it 0-50 ms later (so some kills land mid-write), and load every file it left, last_seen.json included (the next start also has to remove its temporary files). The kill -9 trials run in
a child process over UDP (a killed process leaves no shared-memory segments behind), each with a fresh
probe on a domain of its own: here the surviving probe never discovered a node restarted on the domain of
one it saw killed.

    .venv/bin/python benchmarks/faults.py [--kill9-trials 20]

Ends with one JSON line: cases (attacks made), node_exits (the node died), files_touched_outside (planted
files beside memory_dir whose SHA-256 changed), inputs_unaccounted (labels sent minus those in a label
counter, plus frames received minus those in a frame counter), kill9_trials, kill9_trials_corrupt (trials
after which a state file fails to load), kill9_killed_mid_write (trials that left a temporary file, i.e. hit
a write), kill9_temporaries_left (temporary files still there after the next start), forgotten_bytes_left
(bytes of the forgotten person's id, memory prototypes and identity embeddings found in any file under
memory_dir, npz members decompressed), population_rebuilt_exactly (population.npz equals the population
rebuilt from the remaining people's files), seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
if "FASTDDS_BUILTIN_TRANSPORTS" not in os.environ:
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="clifer-faults-log-"))
sys.path.insert(0, str(ROOT / "tests"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from clifer.srv import ForgetPerson, Teach  # noqa: E402
from clifer_ros.harness import Probe  # noqa: E402
from faults_helpers import (ATTACKS, FORGOTTEN, IMAGE_TOPIC, NODE, Attacker, fingerprint, jpeg_message,  # noqa: E402
                            person_rows, plant, population_depends_only_on_the_remaining_people, start_node,
                            stored_bytes)
from frames import face_frame  # noqa: E402


class Campaign:
    """One node, many attacks; counts what went wrong."""

    def __init__(self, probe: Probe, memory: Path, outside: list[Path]):
        self.probe, self.memory, self.outside = probe, memory, outside
        self.hashes = fingerprint(outside)
        self.attacker = Attacker(probe)
        self.cases = 0
        self.node_exits = 0
        self.stamp = 1_000_000_000_000
        self.node = start_node(probe, memory)

    def case(self) -> None:
        """After an attack: count it, and a node that died (restarting it so the campaign goes on)."""
        self.cases += 1
        if self.node.process.poll() is not None:
            self.node_exits += 1
            self.node = start_node(self.probe, self.memory)

    def faces(self, count: int) -> int:
        for _ in range(count):
            self.stamp += 100_000_000
            self.probe.publish_message(IMAGE_TOPIC, jpeg_message(face_frame(), self.stamp))
            self.attacker.frames_sent += 1
            time.sleep(0.1)
        return self.stamp

    def call(self, service_type, name: str, request):
        return self.probe.call(service_type, f"{NODE}/{name}", request)

    def run(self) -> None:
        for person_id in (*ATTACKS, str(self.memory.parent.parent / "outside" / "victim")):
            self.call(ForgetPerson, "forget_person", ForgetPerson.Request(person_id=person_id))
            self.case()
            self.call(Teach, "teach", Teach.Request(person_id=person_id, expression="happy"))
            self.case()
        stamp = self.faces(6)
        for index in range(200):
            self.attacker.label(ATTACKS[index % len(ATTACKS)] or "a b", "happy", stamp)
            if index == 100:
                self.attacker.label("carol", "happy", stamp)
        self.faces(2)
        self.case()
        ok, bomb = cv2.imencode(".png", np.zeros((12000, 12000), np.uint8))
        self.stamp += 100_000_000
        msg = CompressedImage(format="png", data=array("B", bomb.tobytes()))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp, 1_000_000_000)
        self.attacker.raw_frame(msg)
        time.sleep(1.0)
        self.case()
        self.bad_manifests()
        self.failing_disk()

    def bad_manifests(self) -> None:
        index = self.memory / "learner.json"
        good = json.loads(index.read_text())
        for payload in ({**good, "kind": 99}, {**good, "schema_version": 99}, {**good, "classes": ["happy", "sad"]},
                        {**good, "people": {"alice": 1.5}}, [good]):
            index.write_text(json.dumps(payload))
            self.call(Trigger, "load", Trigger.Request())
            self.case()
        index.write_bytes(b"\x00\xff garbage")
        self.call(Trigger, "load", Trigger.Request())
        self.case()
        (self.memory / "identity.npz").write_bytes(b"PK\x03\x04 not a gallery")
        self.call(Trigger, "load", Trigger.Request())
        self.case()
        self.call(Trigger, "save", Trigger.Request())

    def failing_disk(self) -> None:
        people, away = self.memory / "people", self.memory / "people_away"
        people.rename(away)
        people.write_bytes(b"not a folder")
        stamp = self.faces(3)
        self.attacker.label("dora", "sad", stamp)
        self.faces(2)
        time.sleep(3.0)
        self.call(Trigger, "save", Trigger.Request())
        self.case()
        people.unlink()
        away.rename(people)
        self.probe.wait_for(lambda: self.attacker.fresh_values().get("last save error") == "none", 90,
                            "a save after the disk recovered")

    def forget_planted(self) -> tuple[int, bool]:
        """Erase the planted person; returns (bytes of their id and prototypes still stored, population exact)."""
        rows = person_rows(self.memory, FORGOTTEN)
        (self.memory / "learner.json").write_bytes(b"\x00garbage naming " + FORGOTTEN.encode())
        self.call(ForgetPerson, "forget_person", ForgetPerson.Request(person_id=FORGOTTEN))
        self.probe.wait_for(lambda: FORGOTTEN not in self.attacker.people(), 30, "the erasure")
        time.sleep(1.0)
        self.case()
        needles = [FORGOTTEN.encode()] + [row.tobytes() for row in rows]
        left = sum(content.count(needle) * len(needle) for content in stored_bytes(self.memory).values()
                   for needle in needles)
        return left, population_depends_only_on_the_remaining_people(self.memory)

    def unaccounted(self) -> int:
        return self.attacker.labels_unaccounted() + self.attacker.frames_unaccounted()


def kill9_trials(memory: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    """Teach, autosave, ``kill -9`` at a random moment; returns (trials leaving a corrupt file, trials killed
    mid-write (a temporary file left), temporaries still there after the next start). Each trial gets a fresh probe on a domain of its own (201..232): DDS peers of a
    killed participant do not discover its successor on the same domain."""
    from clifer_core.faces.identity import IdentityGallery
    from clifer_core.learner import CliferLearner
    from clifer_core.memory import GrowingDualMemory
    from clifer_core.persistence import StateFileError
    from clifer_core.privacy import LAST_SEEN_FILE, read_last_seen

    corrupt = killed_mid_write = temporaries_left = 0
    stamp = 5_000_000_000_000
    for trial in range(trials):
        os.environ["ROS_DOMAIN_ID"] = str(201 + trial % 32)
        probe = Probe(f"clifer_faults_kill9_{trial}")
        try:
            attacker = Attacker(probe)
            node = start_node(probe, memory)
            temporaries_left += len(list(memory.rglob("*.tmp")))
            deadline = time.monotonic() + rng.uniform(1.0, 4.0)
            while time.monotonic() < deadline:
                stamp += 100_000_000
                probe.publish_message(IMAGE_TOPIC, jpeg_message(face_frame(), stamp))
                attacker.label(f"k{trial % 5}", rng.choice(["happy", "sad", "surprised"]), stamp)
                time.sleep(0.05)
            save = probe.node.create_client(Trigger, f"{NODE}/save")
            save.wait_for_service(timeout_sec=10)
            save.call_async(Trigger.Request())
            time.sleep(rng.uniform(0.0, 0.05))
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()
            killed_mid_write += bool(list(memory.rglob("*.tmp")))
        finally:
            probe.close()
        broken = False
        for path in sorted(memory.rglob("*.npz")):
            try:
                (IdentityGallery.load if path.name == "identity.npz" else GrowingDualMemory.load)(path)
            except StateFileError:
                broken = True
        try:
            CliferLearner(features="fer", imagination="none", feature_model=object()).read_index(memory)
            if (memory / LAST_SEEN_FILE).is_file():
                read_last_seen(memory / LAST_SEEN_FILE)
        except StateFileError:
            broken = True
        corrupt += broken
    return corrupt, killed_mid_write, temporaries_left


def kill9_in_child(memory: Path, trials: int, seed: int) -> tuple[int, int, int]:
    """:func:`kill9_trials` in a child process whose DDS uses UDP only."""
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    env.update(FASTDDS_BUILTIN_TRANSPORTS="UDPv4")
    child = subprocess.run([sys.executable, __file__, "--kill9-only", str(memory), "--kill9-trials", str(trials),
                            "--seed", str(seed)], env=env, capture_output=True, text=True, timeout=60 * trials)
    if child.returncode != 0:
        raise RuntimeError(f"kill -9 trials failed:\n{child.stdout[-2000:]}\n{child.stderr[-2000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return result["corrupt"], result["killed_mid_write"], result["temporaries_left"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kill9-trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kill9-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kill9_only:
        corrupt, mid_write, temporaries = kill9_trials(args.kill9_only, args.kill9_trials, random.Random(args.seed))
        print(json.dumps({"corrupt": corrupt, "killed_mid_write": mid_write, "temporaries_left": temporaries}))
        return
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="clifer-faults-") as folder:
        memory, outside = plant(Path(folder))
        probe = Probe("clifer_faults_benchmark")
        try:
            campaign = Campaign(probe, memory, outside)
            campaign.run()
            forgotten_left, population_exact = campaign.forget_planted()
            unaccounted = campaign.unaccounted()
            campaign.node.stop()
            corrupt, mid_write, temporaries = kill9_in_child(memory, args.kill9_trials, args.seed)
            touched = sum(before != after for before, after in zip(campaign.hashes.values(),
                                                                    fingerprint(outside).values()))
        finally:
            probe.close()
    print(json.dumps({
        "cases": campaign.cases, "node_exits": campaign.node_exits, "files_touched_outside": touched,
        "inputs_unaccounted": unaccounted, "kill9_trials": args.kill9_trials, "kill9_trials_corrupt": corrupt,
        "kill9_killed_mid_write": mid_write, "kill9_temporaries_left": temporaries, "forgotten_bytes_left": forgotten_left,
        "population_rebuilt_exactly": population_exact, "seconds": round(time.monotonic() - start, 1),
    }))


if __name__ == "__main__":
    main()
