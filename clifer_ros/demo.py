"""`make demo` / `clifer_demo`: the real node, fed by a built-in camera, printing its estimates.

The built-in camera shows the astronaut photograph shipped with scikit-image
(Eileen Collins, NASA, public domain) on a 640x480 canvas, drifting slowly as a
face in front of a robot would. Everything runs in one process over real DDS:
camera node -> CliferNode (configured and activated through its lifecycle) ->
a listener that prints each ExpressionEstimateArray.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time

import cv2
import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from clifer.msg import ExpressionEstimateArray
from clifer_ros.conversions import rgb_to_image
from clifer_ros.node import CliferNode

CAMERA_TOPIC = "/demo_camera/image_raw"


def astronaut_frame(t: float, width: int = 640, height: int = 480) -> np.ndarray:
    """The public-domain astronaut portrait on a grey canvas, drifting with time ``t`` (seconds)."""
    from skimage.data import astronaut

    portrait = astronaut()[0:300, 60:360]
    scale = 0.8 * min(height / portrait.shape[0], width / portrait.shape[1])
    resized = cv2.resize(portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 90, np.uint8)
    x = (width - resized.shape[1]) // 2 + int(30 * math.sin(t))
    y = (height - resized.shape[0]) // 2 + int(10 * math.cos(t))
    frame[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return frame


def format_estimates(msg: ExpressionEstimateArray, origin: float) -> str:
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - origin
    if not msg.estimates:
        return f"t={stamp:7.2f}s  no face"
    parts = []
    for e in msg.estimates:
        top = sorted(zip(e.labels, e.probabilities), key=lambda lp: -lp[1])[:3]
        ranked = ", ".join(f"{label} {p:.2f}" for label, p in top)
        parts.append(f"{e.face_id} [{e.memory}] {e.expression:<9} ({ranked})  "
                     f"valence {e.valence:+.2f} arousal {e.arousal:+.2f}  roi {e.roi.width}x{e.roi.height}"
                     f"@({e.roi.x_offset},{e.roi.y_offset})")
    return f"t={stamp:7.2f}s  " + " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clifer_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="how long the built-in camera runs")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frame rate (Hz)")
    args = parser.parse_args(argv)

    rclpy.init()
    node = CliferNode(cli_args=["--ros-args", "-r", f"image:={CAMERA_TOPIC}", "-p", "deterministic_ids:=true"])
    camera = rclpy.create_node("demo_camera")
    listener = rclpy.create_node("demo_listener")
    printed = []
    origin = time.time()

    def show(msg: ExpressionEstimateArray) -> None:
        printed.append(msg)
        print(format_estimates(msg, origin), flush=True)

    listener.create_subscription(ExpressionEstimateArray, "/clifer/expressions", show, 10)
    publisher = camera.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
    executor = MultiThreadedExecutor(num_threads=4)
    for each in (node, camera, listener):
        executor.add_node(each)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        print("loading models and configuring the node...", flush=True)
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print("configure failed: see the log above", file=sys.stderr)
            return 1
        node.trigger_activate()
        deadline = time.monotonic() + 10.0
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        frames = 0
        while (now := time.monotonic() - start) < args.seconds:
            msg = rgb_to_image(astronaut_frame(now), "bgr8")
            msg.header.stamp = camera.get_clock().now().to_msg()
            msg.header.frame_id = "demo_camera"
            publisher.publish(msg)
            frames += 1
            time.sleep(max(0.0, frames / args.rate - (time.monotonic() - start)))
        time.sleep(1.0)
        faces = sum(1 for msg in printed if msg.estimates)
        print(f"\n{frames} frames sent, {len(printed)} estimate arrays received, {faces} with a face; "
              f"median processing {node.stats.median_processing_ms():.1f} ms per frame")
        return 0 if faces else 1
    finally:
        node.trigger_shutdown()
        executor.shutdown()
        for each in (listener, camera, node):
            each.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
