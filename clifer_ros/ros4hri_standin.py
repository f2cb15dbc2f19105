"""STAND-IN for ROS4HRI's ``hri_face_detect`` (that package cannot be installed here): faces in, REP-155 topics out.

Not ``hri_face_detect``. It publishes only what CLIFER's ``input: ros4hri``
mode consumes, the way ``hri_face_detect`` 2.x does: ``/humans/faces/tracked``
(``hri_msgs/IdsList``, stamped like the image) and, per tracked face,
``/humans/faces/<id>/aligned`` (``sensor_msgs/Image`` bgr8, 128x128, the eyes
levelled and the face box fitted in, same header as the image), with reliable
depth-1 publishers created when a face appears and destroyed when it leaves.
Faces are found by this project's own detector and tracker (BlazeFace; ids
``f00000``... with ``deterministic_ids``), not by YuNet/mediapipe, so ids,
boxes and crops differ from the real node's. No ``/roi``, ``/cropped``,
``/landmarks``, tf frames or lifecycle.

Tests drive it on a probe's node (:meth:`FaceDetectStandIn.publish_frame`, or
:meth:`FaceDetectStandIn.publish_faces` with crops of their choice). For a
demo without a ROS4HRI install, run it on a camera next to the node in
``input: ros4hri`` mode::

    python -m clifer_ros.ros4hri_standin --ros-args -r image:=/camera/color/image_raw
"""

from __future__ import annotations

import sys

import numpy as np
from hri_msgs.msg import IdsList
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from clifer_core.faces import FaceTracker, align_rep155, make_detector
from clifer_ros.conversions import image_to_rgb, rgb_to_image
from clifer_ros.ros4hri import CROP_QOS, TRACKED_FACES, aligned_topic

PUBLISHER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
"""What hri_face_detect uses (``create_publisher(..., 1)``)."""


class FaceDetectStandIn:
    """Publishes the REP-155 face topics of ``hri_face_detect`` from ``node`` (any rclpy node)."""

    def __init__(self, node, deterministic_ids: bool = True, detector=None, min_hits: int = 2):
        self.node = node
        self._detector = detector
        self._tracker = FaceTracker(min_hits=min_hits, deterministic_ids=deterministic_ids)
        self._tracked = node.create_publisher(IdsList, TRACKED_FACES, PUBLISHER_QOS)
        self._aligned: dict[str, object] = {}

    def publish_frame(self, frame_rgb: np.ndarray, header) -> dict[str, np.ndarray]:
        """Detect and track the faces of an RGB frame, publish them with ``header``; returns face id -> crop."""
        if self._detector is None:
            self._detector = make_detector("blazeface")
        tracks = [track for track in self._tracker.update(self._detector.detect(frame_rgb)) if track.confirmed]
        crops = {track.face_id: align_rep155(frame_rgb, track.detection) for track in tracks}
        self.publish_faces(crops, header)
        return crops

    def publish_faces(self, crops: dict[str, np.ndarray], header) -> None:
        """Publish exactly these faces (face id -> RGB aligned crop) as the tracked ones, all with ``header``.

        Faces missing from ``crops`` have left: their publishers are destroyed,
        as ``hri_face_detect`` does when it loses a face.
        """
        for face_id in [face_id for face_id in self._aligned if face_id not in crops]:
            self.node.destroy_publisher(self._aligned.pop(face_id))
        for face_id in crops:
            if face_id not in self._aligned:
                self._aligned[face_id] = self.node.create_publisher(Image, aligned_topic(face_id), PUBLISHER_QOS)
        self._tracked.publish(IdsList(header=header, ids=list(crops)))
        for face_id, crop in crops.items():
            self._aligned[face_id].publish(rgb_to_image(crop, "bgr8", header))

    def close(self) -> None:
        """Say that no face is tracked any more, and destroy the publishers."""
        self.publish_faces({}, IdsList().header)
        self.node.destroy_publisher(self._tracked)


def main(argv: list[str] | None = None) -> int:
    """``python -m clifer_ros.ros4hri_standin --ros-args -r image:=<camera topic>``: the stand-in on a camera."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=sys.argv if argv is None else argv)
    node = rclpy.create_node("hri_face_detect_standin")
    standin = FaceDetectStandIn(node, deterministic_ids=False)
    node.create_subscription(Image, "image", lambda msg: standin.publish_frame(image_to_rgb(msg), msg.header),
                             CROP_QOS)
    node.get_logger().info("STAND-IN for hri_face_detect: publishing /humans/faces/tracked and /aligned crops")
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
