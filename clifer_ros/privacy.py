"""The node's privacy declaration: one ``hri_privacy_msgs/PersonalDataProcessor`` per store of personal data.

Published on ``/data_management`` as ROS4HRI's ``hri_face_identification``
does: reliable and transient-local, with a history exactly as deep as the
number of messages, so a subscriber that joins at any time (with a
transient-local subscription at least that deep) receives the whole current
declaration and nothing older. What is declared comes from
:func:`clifer_core.privacy.stores`. The declaration outlives cleanup (the
files stay on disk) and goes with the node.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from clifer_core.privacy import stores

try:
    from hri_privacy_msgs.msg import PersonalDataProcessor
except ImportError:
    PersonalDataProcessor = None

TOPIC = "/data_management"
SOURCE_NAME = "CLIFER expression learning (clifer_node)"


def declaration_qos(depth: int) -> QoSProfile:
    """Reliable, transient-local, keeping the last ``depth`` messages (publisher: one per store)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def declarations(node_name: str, memory_dir, retention_days: int, identity: bool, population: bool) -> list:
    """The messages declaring what ``node_name`` keeps (see :func:`clifer_core.privacy.stores`)."""
    return [PersonalDataProcessor(data_source_node=node_name, user_friendly_source_name=SOURCE_NAME,
                                  data_purpose=store.purpose, path=store.path)
            for store in stores(memory_dir, retention_days, identity=identity, population=population)]


class DataManagement:
    """The ``/data_management`` publisher of one node: :meth:`declare` replaces the whole declaration."""

    def __init__(self, node):
        self.node = node
        self.publisher = None
        self.depth = 0

    def declare(self, memory_dir, retention_days: int, identity: bool, population: bool) -> list:
        """Publish the current declaration; returns its messages (none without hri_privacy_msgs, with a warning)."""
        if PersonalDataProcessor is None:
            self.node.get_logger().warning("hri_privacy_msgs is not installed: personal data is not declared on "
                                           f"{TOPIC}", once=True)
            return []
        messages = declarations(self.node.get_fully_qualified_name(), memory_dir, retention_days, identity, population)
        if self.publisher is None or self.depth != len(messages):
            self.close()
            self.depth = len(messages)
            self.publisher = self.node.create_publisher(PersonalDataProcessor, TOPIC, declaration_qos(self.depth))
        for message in messages:
            self.publisher.publish(message)
        return messages

    def close(self) -> None:
        if self.publisher is not None:
            self.node.destroy_publisher(self.publisher)
        self.publisher, self.depth = None, 0
