"""Replay a bag into live ROS topics at its recorded timing, and record live topics into a bag.

Both move raw CDR bytes only (rclpy publishes and receives serialised
messages as they are), so nothing is decoded on the way and any type rclpy
can import works. Replay schedules every message against one start time
(``start + (t - t0) / rate``), so a late message never shifts the ones after it.
"""

from __future__ import annotations

import importlib
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from clifer_core.progress import Progress
from clifer_ros.bags.io import BagError, BagReader, bag_directory, bag_writer, knows_type, typestore


def message_class(msgtype: str):
    """The rclpy class for ``pkg/msg/Name``, or None when this Python cannot import it."""
    package, _, name = msgtype.rpartition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError, ValueError):
        return None


def publisher_qos(offered: list[Qos]) -> QoSProfile:
    """Offer what the recording publisher offered: best-effort if any profile was, else reliable."""
    best_effort = any(q.reliability == QosReliability.BEST_EFFORT for q in offered)
    transient = bool(offered) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    depth = max([q.depth for q in offered if q.history == QosHistory.KEEP_LAST] + [1 if best_effort else 10])
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


def rosbags_qos(profile: QoSProfile) -> Qos:
    """An rclpy publisher's QoS as the bag's ``offered_qos_profiles`` entry."""
    no_time = QosTime(0, 0)
    return Qos(
        QosHistory.KEEP_ALL if profile.history == HistoryPolicy.KEEP_ALL else QosHistory.KEEP_LAST,
        int(profile.depth),
        QosReliability.BEST_EFFORT if profile.reliability == ReliabilityPolicy.BEST_EFFORT else QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL else QosDurability.VOLATILE,
        no_time, no_time, QosLiveliness.AUTOMATIC, no_time, False,
    )


class BagPlayer:
    """Publishes a bag's messages on ``node`` (topics optionally filtered), preserving their spacing."""

    def __init__(self, node, reader: BagReader, topics: list[str] | None = None, publish_clock: bool = False):
        self.node = node
        self.reader = reader
        self.publishers = {}
        for topic in topics if topics is not None else sorted(reader.topics):
            if topic not in reader.topics:
                raise BagError(f"{reader.path}: no topic {topic}; it has {', '.join(sorted(reader.topics))}")
            cls = message_class(reader.topics[topic])
            if cls is None:
                warnings.warn(f"skipping {topic}: message type {reader.topics[topic]} is not importable here", stacklevel=2)
                continue
            self.publishers[topic] = node.create_publisher(cls, topic, publisher_qos(reader.offered_qos(topic)))
        self.clock = None
        if publish_clock:
            from rosgraph_msgs.msg import Clock

            self.clock = node.create_publisher(Clock, "/clock", 10)

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait until every topic has a subscriber (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return True
            time.sleep(0.05)
        return False

    def play(self, rate: float = 1.0, loop: bool = False, progress: bool = False, stop: threading.Event | None = None,
             keep=None) -> int:
        """Publish until the bag ends (or, with ``loop``, until ``stop`` is set); returns messages published.

        ``keep(message)``, when given, picks which :class:`BagMessage` s are
        published; the others keep their time slot but stay silent.
        """
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        stop = stop or threading.Event()
        topics = list(self.publishers)
        if not topics:
            raise BagError(f"{self.reader.path}: none of the chosen topics can be published here")
        published = 0
        while not stop.is_set():
            bar = Progress("bag play", sum(self.reader.counts[t] for t in topics), enabled=progress)
            origin, first_ns = None, None
            for message in self.reader.messages(topics, decodable_only=False):
                if first_ns is None:
                    origin, first_ns = time.monotonic(), message.timestamp_ns
                delay = origin + (message.timestamp_ns - first_ns) / 1e9 / rate - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                bar.update()
                if keep is not None and not keep(message):
                    continue
                if self.clock is not None:
                    self._publish_clock(message.timestamp_ns)
                self.publishers[message.topic].publish(message.raw)
                published += 1
            bar.close()
            if not loop:
                break
        return published

    def _publish_clock(self, timestamp_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
        self.clock.publish(Clock(clock=Time(sec=seconds, nanosec=nanoseconds)))


LINGER_S = 0.3
"""Time the player stays up after its last message: destroying a publisher at once can lose what is still in flight."""


class _RosSession:
    """An rclpy context and node of their own, so the bag tools coexist with other nodes in one process."""

    def __init__(self, name: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)

    def close(self) -> None:
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


def play(
    bag: str | Path, rate: float = 1.0, loop: bool = False, topics: list[str] | None = None,
    publish_clock: bool = False, wait_s: float = 2.0, progress: bool = False, stop: threading.Event | None = None,
) -> int:
    """``clifer bag play``: replay ``bag`` into live topics; returns messages published."""
    session = _RosSession("clifer_bag_player")
    try:
        with BagReader(bag) as reader:
            player = BagPlayer(session.node, reader, topics, publish_clock)
            player.wait_for_subscribers(wait_s)
            published = player.play(rate, loop, progress, stop)
            time.sleep(LINGER_S)
            return published
    finally:
        session.close()


@dataclass(frozen=True)
class RecordSummary:
    path: Path
    counts: dict[str, int]


def _discover(node, topics: list[str], timeout: float) -> dict[str, str]:
    """``{topic: msgtype}`` for each requested topic that appears within ``timeout`` with a type we can store."""
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline and len(found) < len(topics):
        found = {name: kinds[0] for name, kinds in node.get_topic_names_and_types() if name in topics and kinds}
        time.sleep(0.05)
    for topic in topics:
        if topic not in found:
            warnings.warn(f"not recording {topic}: no publisher appeared within {timeout:.0f} s", stacklevel=3)
    usable = {}
    for topic, msgtype in found.items():
        if knows_type(msgtype) and message_class(msgtype) is not None:
            usable[topic] = msgtype
        else:
            warnings.warn(f"not recording {topic}: unknown message type {msgtype}", stacklevel=3)
    return usable


def record(
    out: str | Path, topics: list[str], seconds: float | None = None, storage: str | None = None,
    force: bool = False, discovery_timeout: float = 10.0, stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> RecordSummary:
    """``clifer bag record``: subscribe to ``topics`` and write what arrives.

    The log time is the middleware's receive time (as ``ros2 bag record``
    uses), not when the callback ran, so executor delays do not distort spacing.

    Stops after ``seconds``, when ``stop`` is set, or on Ctrl-C; the bag is
    complete in every case. ``ready`` is set once every subscription exists.
    """
    stop = stop or threading.Event()
    session = _RosSession("clifer_bag_recorder")
    counts: dict[str, int] = {}
    try:
        types = _discover(session.node, list(topics), discovery_timeout)
        if not types:
            raise BagError(f"none of {', '.join(topics)} can be recorded (no publisher, or unknown types)")
        with bag_writer(out, storage, force) as writer:
            for topic, msgtype in types.items():
                offered = [info.qos_profile for info in session.node.get_publishers_info_by_topic(topic)]
                best_effort = any(q.reliability == ReliabilityPolicy.BEST_EFFORT for q in offered)
                connection = writer.add_connection(
                    topic, msgtype, typestore=typestore(), offered_qos_profiles=[rosbags_qos(q) for q in offered[:1]]
                )
                counts[topic] = 0

                def write(raw: bytes, info, connection=connection, topic=topic) -> None:
                    writer.write(connection, info["received_timestamp"] or time.time_ns(), raw)
                    counts[topic] += 1

                subscription_qos = QoSProfile(
                    history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                )
                session.node.create_subscription(message_class(msgtype), topic, write, subscription_qos, raw=True)
            executor = SingleThreadedExecutor(context=session.context)
            executor.add_node(session.node)
            if ready is not None:
                ready.set()
            deadline = None if seconds is None else time.monotonic() + seconds
            try:
                while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    executor.spin_once(timeout_sec=0.05)
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            executor.shutdown()
    finally:
        session.close()
    return RecordSummary(bag_directory(out), counts)
