"""`make demo` / `clifer_demo`: the real node meets a face, is taught, imagines, and reports.

The built-in camera shows the astronaut photograph shipped with scikit-image
(Eileen Collins, NASA, public domain) on a 640x480 canvas, drifting slowly as a
face in front of a robot would. Everything runs in one process over real DDS:
camera node -> CliferNode (configured and activated through its lifecycle) ->
a listener printing the ExpressionEstimateArrays. The demo then teaches the
node what the face shows through ``~/teach``, lets imagination propose the
person's other expressions, and writes ``debug_image.png`` (what
``~/debug_image`` shows) and ``imagination_grid.png`` to the output folder.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from clifer.msg import ExpressionEstimateArray
from clifer.srv import Teach
from clifer_ros.conversions import image_to_rgb, rgb_to_image
from clifer_ros.node import CliferNode

CAMERA_TOPIC = "/demo_camera/image_raw"
TAUGHT_EXPRESSION = "happy"


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
        return f"t={stamp:5.2f}s  no face"
    parts = []
    for e in msg.estimates:
        top = sorted(zip(e.labels, e.probabilities), key=lambda lp: -lp[1])[:3]
        ranked = ", ".join(f"{label} {p:.2f}" for label, p in top)
        novelty = "" if math.isnan(e.novelty) else f"  novelty {e.novelty:.2f}"
        parts.append(f"{e.face_id} {e.person_id or '?':<10} [{e.memory:<8}] {e.expression:<9} ({ranked})  "
                     f"valence {e.valence:+.2f} arousal {e.arousal:+.2f}{novelty}")
    return f"t={stamp:5.2f}s  " + " | ".join(parts)


def imagination_grid(faces: np.ndarray, labels, predictions) -> np.ndarray:
    """One row: the imagined faces with their target expression and what the memory reads in them."""
    tiles = []
    for face, label, predicted in zip(faces, labels, predictions):
        tile = cv2.resize(face, (128, 128), interpolation=cv2.INTER_NEAREST)
        tile = cv2.copyMakeBorder(tile, 0, 36, 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cv2.putText(tile, label, (4, 146), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(tile, f"read: {predicted}", (4, 160), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


class DemoCamera:
    """Publishes the drifting astronaut at a fixed rate from its own thread."""

    def __init__(self, node, rate_hz: float):
        self.publisher = node.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
        self.clock = node.get_clock()
        self.rate_hz = rate_hz
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        deadline = time.monotonic() + 10.0
        while self.publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            msg = rgb_to_image(astronaut_frame(time.monotonic() - start), "bgr8")
            msg.header.stamp = self.clock.now().to_msg()
            msg.header.frame_id = "demo_camera"
            self.publisher.publish(msg)
            self.frames += 1
            self._stop.wait(max(0.0, self.frames / self.rate_hz - (time.monotonic() - start)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clifer_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="camera frame rate (Hz)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the PNGs")
    parser.add_argument("--memory-dir", type=Path, default=None,
                        help="where the node keeps memories (default: a fresh temporary folder)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    memory_dir = args.memory_dir or Path(tempfile.mkdtemp(prefix="clifer-demo-"))

    rclpy.init()
    node = CliferNode(cli_args=["--ros-args", "-r", f"image:={CAMERA_TOPIC}", "-p", "deterministic_ids:=true",
                                "-p", f"memory_dir:={memory_dir}", "-p", "seed_faces:=8"])
    helper = rclpy.create_node("demo_helper")
    received: list[ExpressionEstimateArray] = []
    debug_frames: list[Image] = []
    origin = {"time": time.time()}

    def show(msg: ExpressionEstimateArray) -> None:
        received.append(msg)
        if len(received) % 5 == 0:
            print(format_estimates(msg, origin["time"]), flush=True)

    helper.create_subscription(ExpressionEstimateArray, "/clifer/expressions", show, 10)
    helper.create_subscription(Image, "/clifer/debug_image", debug_frames.append, 2)
    teach = helper.create_client(Teach, "/clifer/teach")
    camera = DemoCamera(helper, args.rate)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(helper)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        print(f"loading models and configuring the node (memories in {memory_dir})...", flush=True)
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print("configure failed: see the log above", file=sys.stderr)
            return 1
        node.trigger_activate()
        origin["time"] = time.time()
        camera.start()

        print("\n== 1. meeting the face: the population model answers (a sure first guess is learned, "
              "but only teaching makes the person's memory answer)")
        time.sleep(3.0)
        faces = [m.estimates[0] for m in received if m.estimates]
        if not faces:
            print("no face was found in the built-in camera", file=sys.stderr)
            return 1
        face = faces[-1]

        print(f"\n== 2. teaching: {face.person_id or face.face_id} shows '{TAUGHT_EXPRESSION}' (~/teach)")
        future = teach.call_async(Teach.Request(face_id=face.face_id, expression=TAUGHT_EXPRESSION))
        deadline = time.monotonic() + 20.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        reply = future.result()
        print(f"   -> {reply.message if reply else 'no reply'}")
        learned_from = len(received)
        while time.monotonic() < deadline and not any(
                m.estimates and m.estimates[0].memory == "fused" for m in received[learned_from:]):
            time.sleep(0.1)
        time.sleep(2.0)

        print("\n== 3. imagination: the person's other expressions, and what their memory reads in them")
        person_id = face.person_id or (reply.person_id if reply else "")
        crop = node.pipeline.recent_crops(face.face_id, 1) if node.pipeline else np.zeros((0,))
        grid_path = args.out / "imagination_grid.png"
        if node.learner.imagination != "none" and len(crop):
            imagined, _ = node.learner.imaginer.imagine(crop, own_expressions=TAUGHT_EXPRESSION)
            prediction = node.learner.predict(person_id, imagined[0])
            cv2.imwrite(str(grid_path), cv2.cvtColor(imagination_grid(imagined[0], node.learner.imaginer.expressions,
                                                                       prediction.best), cv2.COLOR_RGB2BGR))
            for label, read in zip(node.learner.imaginer.expressions, prediction.best):
                print(f"   imagined {label:<9} -> {person_id}'s {prediction.memory} memory reads {read}")
            print(f"   wrote {grid_path}")
        else:
            print("   no imagination model installed: skipped")
        if debug_frames:
            debug_path = args.out / "debug_image.png"
            cv2.imwrite(str(debug_path), cv2.cvtColor(image_to_rgb(debug_frames[-1]), cv2.COLOR_RGB2BGR))
            print(f"   wrote {debug_path} (a frame of ~/debug_image)")

        episodic = sum(1 for m in received[learned_from:] if m.estimates and m.estimates[0].memory == "fused")
        with_face = sum(1 for m in received if m.estimates)
        print(f"\n{camera.frames} frames sent, {len(received)} estimate arrays received, {with_face} with a face, "
              f"{episodic} answered by fusing {person_id}'s memory after teaching; "
              f"median processing {node.stats.median_processing_ms():.1f} ms per frame")
        return 0 if with_face and episodic else 1
    finally:
        camera.stop()
        node.trigger_shutdown()
        executor.shutdown()
        helper.destroy_node()
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
